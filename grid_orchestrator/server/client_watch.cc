#include "grid_orchestrator/server/client_watch.h"

#include <algorithm>

#include "common/start_thread.h"
#include "common/status_macros.h"

namespace dgrid {

absl::StatusOr<std::unique_ptr<ClientWatch>> ClientWatch::Start(const Caller& caller,
                                                                absl::Duration max_stall,
                                                                GridCancel* cancel) {
  std::unique_ptr<ClientWatch> watch(new ClientWatch());
  ClientWatch* w = watch.get();
  ASSIGN_OR_RETURN(watch->thread_,
                   StartThread([w, &caller, max_stall, cancel] { w->Watch(caller, max_stall, cancel); },
                               "the client's watch"));
  return watch;
}

void ClientWatch::Watch(const Caller& caller, absl::Duration max_stall, GridCancel* cancel) {
  int64_t sent = caller.sent ? caller.sent() : 0;
  absl::Time moved = absl::InfinitePast();  // when `sent` last grew
  while (!WaitDone(absl::Milliseconds(25))) {
    if (caller.gone()) {
      cancel->Cancel();
      return;
    }
    if (caller.sent) {
      const int64_t now_sent = caller.sent();
      if (now_sent != sent) {
        sent = now_sent;
        moved = absl::Now();
      }
    }
    const int64_t since = write_started_ns_.load();
    // Stalled: no byte out for max_stall since the write began.
    if (since != 0 &&
        absl::Now() - std::max(absl::FromUnixNanos(since), moved) > max_stall) {
      stalled_.store(true);
      cancel->Cancel();
      if (caller.abort) caller.abort();
      return;
    }
  }
}

ClientWatch::~ClientWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  done_cv_.notify_all();
  if (thread_.joinable()) thread_.join();  // not when Start failed
}

bool ClientWatch::WaitDone(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return done_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return done_; });
}

}  // namespace dgrid
