// Runs a grid plan on the replica pool as a wavefront: the trunk streams its
// latent at each branch step, and that row's branch jobs leave the moment the
// capture arrives, so a grid takes about as long as its trunk. Cells stream
// out as they finish. Failed jobs move to another replica: a row re-runs only
// its unfinished cells, and a trunk resumes from its last captured latent.
// Results go through the prefix cache, so repeats and promotions reuse work.
//
// Jobs time out by progress, not by wall time: replicas report how many
// model evaluations a call has run every `progress_interval`, and a call
// that reports nothing new for `stall_timeout` is cancelled and moved. Only
// failures another replica or a later try can fix are retried (with
// backoff); evaluations of failed attempts still count in Grid.model_evals.
// Replica output is checked before it is used: a bad one fails the attempt,
// never the process. See docs/ARCHITECTURE.md ("Retries").
//
//   GridExecutor executor(&pool, &cache, &metrics, {});
//   GridCancel cancel;
//   absl::StatusOr<v1::Grid> grid =
//       executor.Run(plan, deadline, [](const v1::GridEvent& e) { /* stream */ }, &cancel);
#ifndef DGRID_GRID_ORCHESTRATOR_EXECUTE_GRID_EXECUTOR_H_
#define DGRID_GRID_ORCHESTRATOR_EXECUTE_GRID_EXECUTOR_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <set>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "grid_orchestrator/execute/prefix_cache.h"
#include "grid_orchestrator/plan/grid_plan.h"
#include "grid_orchestrator/pool/replica_pool.h"

namespace dgrid {

class OrchestratorMetrics;

// Cancels a running grid: stops new jobs and cancels the in-flight calls, so
// the replicas stop their trajectories too.
class GridCancel {
 public:
  void Cancel();
  bool cancelled() const { return cancelled_.load(); }
  const std::atomic<bool>* flag() const { return &cancelled_; }
  // False when already cancelled (the caller must not start the call).
  bool Register(grpc::ClientContext* context);
  void Unregister(grpc::ClientContext* context);

 private:
  std::atomic<bool> cancelled_{false};
  // std::mutex, not absl::Mutex: Debian's abseil is not built for TSan.
  std::mutex mu_;
  std::set<grpc::ClientContext*> contexts_;  // guarded by mu_
};

struct ExecutorOptions {
  // A call whose replica reports no new progress for this long is cancelled
  // and its unfinished work moves to another replica.
  absl::Duration stall_timeout = absl::Seconds(15);
  // How often replicas are asked to report progress.
  absl::Duration progress_interval = absl::Milliseconds(500);
  int max_attempts = 4;
  // Wait before attempt n+1: retry_backoff * 2^(n-1), at most 1 s.
  absl::Duration retry_backoff = absl::Milliseconds(50);
  // Branch cells per denoiser call: smaller spreads a row over replicas.
  int cells_per_job = 2;
};

class GridExecutor {
 public:
  using EventSink = std::function<void(const v1::GridEvent&)>;

  GridExecutor(ReplicaPool* pool, PrefixCache* cache, OrchestratorMetrics* metrics,
               ExecutorOptions options);

  // Emits the plan, trunk progress and cells through `sink` (never two calls
  // at once), and returns the assembled grid. Calls on the thread that
  // called Run come first, before any job starts (the plan, then what the
  // cache holds), and may block; the rest come from job threads, which hold
  // replica slots, and must not. The caller
  // sends the grid. `callers_deadline`, at or after `deadline`: the caller's
  // own; a job it cuts short counts as cancelled, as its grid does, where
  // one cut short by the orchestrator's own bound fails.
  absl::StatusOr<v1::Grid> Run(const GridPlanSpec& plan, absl::Time deadline,
                               const EventSink& sink, GridCancel* cancel,
                               absl::Time callers_deadline = absl::InfiniteFuture());

 private:
  class GridRun;

  ReplicaPool* const pool_;
  PrefixCache* const cache_;
  OrchestratorMetrics* const metrics_;
  const ExecutorOptions options_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_EXECUTE_GRID_EXECUTOR_H_
