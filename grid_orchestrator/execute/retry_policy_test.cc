// The table "What is retried" in docs/ARCHITECTURE.md, row by row.
#include "grid_orchestrator/execute/retry_policy.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

CallOutcome Failed(absl::Status status) {
  CallOutcome o;
  o.status = std::move(status);
  return o;
}

const RetryLimits kLimits{4, absl::Milliseconds(50)};

TEST(RetryPolicyTest, WhatAnotherReplicaCanFixIsRetried) {
  for (const absl::Status& s :
       {absl::UnavailableError("gone"), absl::ResourceExhaustedError("denoiser queue is full"),
        absl::AbortedError("x"), absl::CancelledError("shutting down"),
        absl::InternalError("model produced non-finite output")}) {
    EXPECT_TRUE(ShouldRetry(Failed(s), 1, kLimits)) << s;
  }
  CallOutcome stalled = Failed(absl::CancelledError("stalled"));
  stalled.stalled = true;
  EXPECT_TRUE(ShouldRetry(stalled, 1, kLimits));
  CallOutcome bad = Failed(absl::InternalError("unknown trajectory index"));
  bad.bad_output = true;
  EXPECT_TRUE(ShouldRetry(bad, 1, kLimits));
}

TEST(RetryPolicyTest, WhatFailsEverywhereFailsTheGridAtOnce) {
  for (const absl::Status& s :
       {absl::InvalidArgumentError("start latent overflows"),
        absl::FailedPreconditionError("x"), absl::UnknownError("x"),
        absl::ResourceExhaustedError("Received message larger than max (5 vs. 4)"),
        absl::DeadlineExceededError("x"), absl::NotFoundError("x")}) {
    EXPECT_FALSE(ShouldRetry(Failed(s), 1, kLimits)) << s;
  }
}

TEST(RetryPolicyTest, NoReplicaAGridThatIsOverOrTheLastAttemptEndIt) {
  CallOutcome none = Failed(absl::UnavailableError("no healthy replica"));
  none.no_replica = true;
  EXPECT_FALSE(ShouldRetry(none, 1, kLimits));
  CallOutcome over = Failed(absl::UnavailableError("gone"));
  over.grid_over = true;
  EXPECT_FALSE(ShouldRetry(over, 1, kLimits));
  EXPECT_TRUE(ShouldRetry(Failed(absl::UnavailableError("gone")), 3, kLimits));
  EXPECT_FALSE(ShouldRetry(Failed(absl::UnavailableError("gone")), 4, kLimits));
}

TEST(RetryPolicyTest, BackoffDoublesUpToOneSecond) {
  EXPECT_EQ(RetryBackoff(1, kLimits), absl::Milliseconds(50));
  EXPECT_EQ(RetryBackoff(2, kLimits), absl::Milliseconds(100));
  EXPECT_EQ(RetryBackoff(3, kLimits), absl::Milliseconds(200));
  EXPECT_EQ(RetryBackoff(10, kLimits), absl::Seconds(1));
  EXPECT_EQ(RetryBackoff(2, {4, absl::Milliseconds(700)}), absl::Seconds(1));
}

}  // namespace
}  // namespace dgrid
