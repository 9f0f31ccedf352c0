#include "common/stall_watchdog.h"

#include <algorithm>
#include <utility>

#include "common/start_thread.h"

namespace dgrid {

StallWatchdog::StallWatchdog(absl::Duration stall_timeout, Clock clock)
    : stall_timeout_(stall_timeout), clock_(std::move(clock)) {}

StallWatchdog::~StallWatchdog() { Stop(); }

absl::Status StallWatchdog::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return absl::OkStatus();
  stop_ = false;
  absl::StatusOr<std::thread> thread = StartThread([this] { Loop(); }, "a stall watchdog");
  if (!thread.ok()) return thread.status();
  thread_ = std::move(*thread);
  return absl::OkStatus();
}

void StallWatchdog::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

StallWatchdog::CallId StallWatchdog::Watch(std::function<void()> cancel) {
  std::lock_guard<std::mutex> lock(mu_);
  const CallId id = next_id_++;
  calls_.emplace(id, WatchedCall{std::move(cancel), clock_()});
  return id;
}

void StallWatchdog::Touch(CallId call) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.at(call).last_progress = clock_();
}

bool StallWatchdog::Unwatch(CallId call) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(call);
  const bool stalled = it->second.stalled;
  calls_.erase(it);
  return stalled;
}

int StallWatchdog::CancelStalled() {
  std::lock_guard<std::mutex> lock(mu_);
  return CancelStalledLocked();
}

int StallWatchdog::CancelStalledLocked() {
  const absl::Time now = clock_();
  int cancelled = 0;
  for (auto& [id, call] : calls_) {
    if (!call.stalled && now - call.last_progress > stall_timeout_) {
      // Under the lock, so a call is never cancelled after Unwatch (when its
      // context may be gone).
      call.stalled = true;
      call.cancel();
      ++cancelled;
    }
  }
  return cancelled;
}

void StallWatchdog::Loop() {
  // Often enough that a stall is caught well within its timeout.
  const absl::Duration tick = std::min(absl::Milliseconds(100), stall_timeout_ / 4);
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, absl::ToChronoNanoseconds(tick), [this] { return stop_; })) {
    CancelStalledLocked();
  }
}

}  // namespace dgrid
