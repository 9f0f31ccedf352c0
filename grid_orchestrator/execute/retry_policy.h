// Which failed denoiser calls a grid retries, and how long it waits first: a
// pure policy, tested against the table in docs/ARCHITECTURE.md ("What is
// retried") without a replica.
//
//   CallOutcome outcome;
//   outcome.status = absl::UnavailableError("replica gone");
//   RetryLimits limits{/*max_attempts=*/4, /*backoff=*/absl::Milliseconds(50)};
//   if (ShouldRetry(outcome, /*attempt=*/1, limits)) {
//     absl::Duration wait = RetryBackoff(1, limits);  // 50 ms, then 100, 200 ... at most 1 s
//   }
#ifndef DGRID_GRID_ORCHESTRATOR_EXECUTE_RETRY_POLICY_H_
#define DGRID_GRID_ORCHESTRATOR_EXECUTE_RETRY_POLICY_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dgrid {

// What one Branch call to one replica came to, as the policy sees it.
struct CallOutcome {
  absl::Status status;
  bool no_replica = false;  // the pool had none to give (it already waited)
  bool stalled = false;     // cancelled for lack of progress
  bool bad_output = false;  // the replica sent something unusable
  bool grid_over = false;   // the grid was cancelled or is past its deadline
};

struct RetryLimits {
  int max_attempts = 4;
  absl::Duration backoff = absl::Milliseconds(50);
};

// Whether attempt number `attempt` (from 1) may be followed by another: only
// what another replica or a later try can fix, up to max_attempts.
bool ShouldRetry(const CallOutcome& outcome, int attempt, const RetryLimits& limits);

// The wait before the attempt after `attempt`: backoff, doubling per
// attempt, at most 1 s.
absl::Duration RetryBackoff(int attempt, const RetryLimits& limits);

// A replica's answer to a call the orchestrator built (a grid's job, a
// curve's Judge call). Its INVALID_ARGUMENT or OUT_OF_RANGE means the replica
// disagrees with the orchestrator (another version, a lower
// --max_trajectories_per_request), no mistake of the client's: INTERNAL,
// naming the replica and its code, which ShouldRetry tries elsewhere. Any
// other status as it came.
absl::Status ReplicaStatus(absl::string_view replica, const absl::Status& status);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_EXECUTE_RETRY_POLICY_H_
