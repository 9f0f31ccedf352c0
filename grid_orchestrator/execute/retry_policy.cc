#include "grid_orchestrator/execute/retry_policy.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dgrid {

bool ShouldRetry(const CallOutcome& outcome, int attempt, const RetryLimits& limits) {
  if (outcome.no_replica || outcome.grid_over || attempt >= limits.max_attempts) return false;
  // Another replica can fix these; a permanent error (a bad request, a model
  // that overflows) would fail the same way everywhere.
  if (outcome.stalled || outcome.bad_output) return true;
  switch (outcome.status.code()) {
    case absl::StatusCode::kResourceExhausted:
      // Its queue is full: another replica may have room. gRPC's own message
      // size limit says RESOURCE_EXHAUSTED too, and is the same everywhere.
      return !absl::StrContains(outcome.status.message(), "larger than max");
    case absl::StatusCode::kUnavailable:  // replica gone or shutting down
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:  // by the replica, not by this grid
    // A fault of that replica (its model failed, or produced NaN from a
    // seed), or its refusal of a request this orchestrator made (its
    // INVALID_ARGUMENT, which the executor makes INTERNAL): another replica
    // may be sound.
    case absl::StatusCode::kInternal:
      return true;
    default:
      return false;
  }
}

absl::Status ReplicaStatus(absl::string_view replica, const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument &&
      status.code() != absl::StatusCode::kOutOfRange) {
    return status;
  }
  return absl::InternalError(absl::StrCat("replica ", replica,
                                          " refused a request this orchestrator made (",
                                          absl::StatusCodeToString(status.code()),
                                          "): ", status.message()));
}

absl::Duration RetryBackoff(int attempt, const RetryLimits& limits) {
  absl::Duration wait = limits.backoff;
  for (int i = 1; i < attempt && wait < absl::Seconds(1); ++i) wait *= 2;
  return std::min(wait, absl::Seconds(1));
}

}  // namespace dgrid
