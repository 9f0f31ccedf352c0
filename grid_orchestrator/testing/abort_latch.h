// A client transport a test blocks on until the server aborts it: a write to
// a client that stopped reading waits the same way, until the server breaks
// the connection (gRPC: TryCancel).
//
//   AbortLatch latch;
//   Caller caller;
//   caller.abort = latch.Abort();
//   auto sink = [&](const v1::GridEvent&) { latch.Wait(); return false; };
//   ... run with caller and sink ...
//   EXPECT_TRUE(latch.aborted());
#ifndef DGRID_GRID_ORCHESTRATOR_TESTING_ABORT_LATCH_H_
#define DGRID_GRID_ORCHESTRATOR_TESTING_ABORT_LATCH_H_

#include <condition_variable>
#include <functional>
#include <mutex>

namespace dgrid::testing {

class AbortLatch {
 public:
  // For Caller::abort; the latch outlives the run.
  std::function<void()> Abort() {
    return [this] {
      std::lock_guard<std::mutex> lock(mu_);
      aborted_ = true;
      aborted_cv_.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    aborted_cv_.wait(lock, [this] { return aborted_; });
  }
  bool aborted() {
    std::lock_guard<std::mutex> lock(mu_);
    return aborted_;
  }

 private:
  std::mutex mu_;
  std::condition_variable aborted_cv_;
  bool aborted_ = false;  // guarded by mu_
};

}  // namespace dgrid::testing

#endif  // DGRID_GRID_ORCHESTRATOR_TESTING_ABORT_LATCH_H_
