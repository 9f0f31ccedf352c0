#include "grid_orchestrator/server/client_watch.h"

namespace dgrid {

ClientWatch::ClientWatch(const Caller& caller, absl::Duration max_stall, GridCancel* cancel)
    : thread_([this, &caller, max_stall, cancel] {
        while (!WaitDone(absl::Milliseconds(25))) {
          if (caller.gone()) {
            cancel->Cancel();
            return;
          }
          const int64_t since = write_started_ns_.load();
          if (since != 0 && absl::Now() - absl::FromUnixNanos(since) > max_stall) {
            stalled_.store(true);
            cancel->Cancel();
            if (caller.abort) caller.abort();
            return;
          }
        }
      }) {}

ClientWatch::~ClientWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  done_cv_.notify_all();
  thread_.join();
}

bool ClientWatch::WaitDone(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return done_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return done_; });
}

}  // namespace dgrid
