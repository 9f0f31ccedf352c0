// Watches a client while its grid or curve runs: cancels the work when the
// client goes away, or when one write to it blocks past `max_stall` with no
// byte taken meanwhile (where the transport counts them: Caller::sent), and
// then it also aborts the transport, so that the blocked write returns. Polls every
// 25 ms, because neither sync gRPC handlers nor HTTP handlers get a callback
// for either.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ClientWatch> watch,
//                    ClientWatch::Start(caller, limits.max_write_stall, &cancel));
//   watch->WriteStarts();
//   const bool written = sink(event);
//   watch->WriteEnds();
//   if (watch->stalled()) ...  // the client stopped reading
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_CLIENT_WATCH_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_CLIENT_WATCH_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grid_orchestrator/execute/grid_executor.h"
#include "grid_orchestrator/server/grid_service.h"

namespace dgrid {

class ClientWatch {
 public:
  // `caller` and `cancel` outlive the watch. RESOURCE_EXHAUSTED when its
  // thread cannot start (StartThread).
  static absl::StatusOr<std::unique_ptr<ClientWatch>> Start(const Caller& caller,
                                                            absl::Duration max_stall,
                                                            GridCancel* cancel);
  ~ClientWatch();
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;

  void WriteStarts() { write_started_ns_.store(absl::ToUnixNanos(absl::Now())); }
  void WriteEnds() { write_started_ns_.store(0); }
  // True once a write blocked past max_stall.
  bool stalled() const { return stalled_.load(); }

 private:
  ClientWatch() = default;
  void Watch(const Caller& caller, absl::Duration max_stall, GridCancel* cancel);
  bool WaitDone(absl::Duration timeout);

  std::atomic<int64_t> write_started_ns_{0};
  std::atomic<bool> stalled_{false};
  // std primitives, not absl's: TSan sees them.
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_CLIENT_WATCH_H_
