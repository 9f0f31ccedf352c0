// Judges a finished grid: the model's judge labels the trunk's final and
// every cell through the replica pool (Denoiser.Judge), and the grid's rows
// give their divergence. The result is one trunk's observation for a
// decision curve (assemble/decision_curve.h).
//
//   ASSIGN_OR_RETURN(TrunkObservation observed,
//                    JudgeGrid(&pool, &metrics, plan, grid, /*labels_per_head=*/{10},
//                              deadline, &cancel));
//
// Judge calls are short and outside the grid's work, so they take any
// healthy replica of the plan's model version (ReplicaPool::Want.control),
// at most kImagesPerJudgeCall images a call. A call that failed in a way
// another replica can fix is tried elsewhere, up to kJudgeAttempts times.
#ifndef DGRID_GRID_ORCHESTRATOR_EXECUTE_GRID_JUDGE_H_
#define DGRID_GRID_ORCHESTRATOR_EXECUTE_GRID_JUDGE_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "grid_orchestrator/assemble/decision_curve.h"
#include "grid_orchestrator/execute/grid_executor.h"
#include "grid_orchestrator/plan/grid_plan.h"
#include "grid_orchestrator/pool/replica_pool.h"

namespace dgrid {

inline constexpr int kImagesPerJudgeCall = 32;
inline constexpr int kJudgeAttempts = 3;
// How long one Judge call may take. A call reports no progress and may wait
// behind its replica's forward passes and decoding, so the limit is long; a
// replica that health checks find down is given up sooner.
inline constexpr absl::Duration kJudgeCallTimeout = absl::Seconds(60);
// How long health checks must find a Judge call's replica down (stopped, or
// gone from the network) before the call is given up and tried on another:
// past a busy replica's missed check and the round that marks it up again
// (a check of up to 1 s, then its models asked anew), far below a call's own
// limit.
inline constexpr absl::Duration kJudgeUnhealthyGrace = absl::Seconds(5);

// Whether a failed Judge call may succeed on another replica.
bool JudgeCallRetryable(grpc::StatusCode code);

// The grid's labels ([row][column][head], and the trunk's per head) and its
// rows' divergence. `labels_per_head`: how many labels each judge head has;
// with none (a model without a judge) nothing is judged. INTERNAL when a
// replica answers with the wrong count of images or heads, or a label a head
// lacks, or refuses the call as invalid (config skew: the client sent none
// of the call's fields), each tried on another replica first. `deadline` is the
// caller's; each call also ends after `call_timeout`, or once its replica
// has been down for kJudgeUnhealthyGrace, and is tried on another replica
// (one past `call_timeout` is marked stalled, as after a job's stall).
// Each call's attempts count in `metrics` (may be null) as jobs do.
absl::StatusOr<TrunkObservation> JudgeGrid(ReplicaPool* pool, OrchestratorMetrics* metrics,
                                           const GridPlanSpec& plan, const v1::Grid& grid,
                                           const std::vector<int>& labels_per_head,
                                           absl::Time deadline, absl::Duration call_timeout,
                                           GridCancel* cancel);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_EXECUTE_GRID_JUDGE_H_
