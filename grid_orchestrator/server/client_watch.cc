#include "grid_orchestrator/server/client_watch.h"

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
