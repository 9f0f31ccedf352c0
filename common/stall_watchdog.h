// Cancels streaming calls that stop making progress. A call is watched from
// its start; each sign of progress (Touch) restarts its clock, and a call
// whose clock passes `stall_timeout` is cancelled, once, and marked stalled.
// The orchestrator's executor then moves the call's work to another replica
// (docs/ARCHITECTURE.md, "Timeouts by progress"); `dgrid curve` gives up on
// an orchestrator that has gone silent. A slow call that keeps reporting is
// never cancelled: calls have no wall-clock limit of their own.
//
// Time comes from an injected clock, and the checks run either on the
// watchdog's own thread (Start) or when called (CancelStalled), so a test
// moves the clock instead of sleeping.
//
//   StallWatchdog watchdog(absl::Seconds(15));
//   RETURN_IF_ERROR(watchdog.Start());
//   StallWatchdog::CallId call = watchdog.Watch([&context] { context.TryCancel(); });
//   while (reader->Read(&event)) watchdog.Touch(call);
//   reader->Finish();
//   const bool stalled = watchdog.Unwatch(call);
//   watchdog.Stop();
#ifndef DGRID_COMMON_STALL_WATCHDOG_H_
#define DGRID_COMMON_STALL_WATCHDOG_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dgrid {

class StallWatchdog {
 public:
  using Clock = std::function<absl::Time()>;
  using CallId = uint64_t;

  explicit StallWatchdog(absl::Duration stall_timeout, Clock clock = absl::Now);
  // Stops the thread.
  ~StallWatchdog();

  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // Checks the calls on a thread of its own every 100 ms, or a quarter of
  // the stall timeout if that is shorter, until Stop. RESOURCE_EXHAUSTED
  // when no thread can start (a pids limit).
  absl::Status Start();
  // Ends the thread (if any) and waits for it. Calling it again is harmless.
  void Stop();

  // Watches a call from now. `cancel` runs at most once, before Unwatch, on
  // whichever thread finds the call stalled and under the watchdog's lock:
  // it must not call back into the watchdog.
  CallId Watch(std::function<void()> cancel);
  // The call made progress: its clock starts again.
  void Touch(CallId call);
  // Stops watching the call; true when it was cancelled for stalling.
  bool Unwatch(CallId call);

  // Cancels every call that has made no progress for longer than the stall
  // timeout, by the clock's time now; returns how many it cancelled.
  int CancelStalled();

 private:
  struct WatchedCall {
    std::function<void()> cancel;
    absl::Time last_progress;
    bool stalled = false;
  };

  int CancelStalledLocked();  // requires mu_
  void Loop();

  const absl::Duration stall_timeout_;
  const Clock clock_;

  // std primitives: TSan sees them (Debian's abseil is not instrumented).
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<CallId, WatchedCall> calls_;  // guarded by mu_
  CallId next_id_ = 0;                   // guarded by mu_
  bool stop_ = false;                    // guarded by mu_
  std::thread thread_;
};

}  // namespace dgrid

#endif  // DGRID_COMMON_STALL_WATCHDOG_H_
