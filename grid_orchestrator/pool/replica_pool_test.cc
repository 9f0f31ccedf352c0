// ReplicaPool against real gRPC servers on loopback that serve the standard
// health service: picking, caps, avoidance, health changes and DNS.
#include "grid_orchestrator/pool/replica_pool.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

class HealthServer {
 public:
  HealthServer() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    // A sync server needs one service of its own; the Denoiser base class
    // answers UNIMPLEMENTED, which the pool never calls here.
    builder.RegisterService(&denoiser_);
    server_ = builder.BuildAndStart();
    server_->GetHealthCheckService()->SetServingStatus("", true);
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  int port() const { return port_; }
  void SetServing(bool serving) {
    server_->GetHealthCheckService()->SetServingStatus("", serving);
  }
  void Stop() { server_->Shutdown(std::chrono::system_clock::now()); }

 private:
  int port_ = 0;
  v1::Denoiser::Service denoiser_;
  std::unique_ptr<grpc::Server> server_;
};

ReplicaPool::Options Options(const std::string& targets) {
  ReplicaPool::Options o;
  o.targets = targets;
  o.max_inflight_per_replica = 2;
  o.health_interval = absl::Milliseconds(50);
  o.unavailable_grace = absl::Milliseconds(200);
  return o;
}

const absl::Time kSoon = absl::InfiniteFuture();

TEST(ReplicaPoolTest, PicksTheReplicaWithTheLeastOutstandingWork) {
  HealthServer a, b;
  auto pool = ReplicaPool::Create(Options(a.address() + "," + b.address()), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto first = (*pool)->Acquire(100, kSoon, {});
  ASSERT_TRUE(first.ok());
  auto second = (*pool)->Acquire(10, kSoon, {});
  ASSERT_TRUE(second.ok());
  EXPECT_NE(first->address(), second->address());
  // The replica holding 10 has less work than the one holding 100.
  auto third = (*pool)->Acquire(10, kSoon, {});
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->address(), second->address());
}

TEST(ReplicaPoolTest, CapsInflightAndWaitsForARelease) {
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(a.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  auto one = (*pool)->Acquire(1, kSoon, {});
  auto two = (*pool)->Acquire(1, kSoon, {});
  ASSERT_TRUE(one.ok() && two.ok());
  // At the cap: a short deadline passes.
  auto blocked = (*pool)->Acquire(1, absl::Now() + absl::Milliseconds(100), {});
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kDeadlineExceeded);
  // A release lets the next one in.
  std::thread release([&] {
    absl::SleepFor(absl::Milliseconds(50));
    *one = ReplicaPool::Lease();
  });
  auto waited = (*pool)->Acquire(1, absl::Now() + absl::Seconds(5), {});
  release.join();
  EXPECT_TRUE(waited.ok()) << waited.status();
  EXPECT_EQ((*pool)->Snapshot()[0].inflight, 2);
}

TEST(ReplicaPoolTest, AvoidsAReplicaWhileAnotherIsHealthy) {
  HealthServer a, b;
  auto pool = ReplicaPool::Create(Options(a.address() + "," + b.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  for (int i = 0; i < 3; ++i) {
    auto lease = (*pool)->Acquire(1, kSoon, {a.address()});
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease->address(), b.address());
  }
}

TEST(ReplicaPoolTest, HealthChangesTakeReplicasOutAndBackIn) {
  HealthServer a, b;
  auto pool = ReplicaPool::Create(Options(a.address() + "," + b.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  a.SetServing(false);
  absl::SleepFor(absl::Milliseconds(300));
  for (int i = 0; i < 3; ++i) {
    auto lease = (*pool)->Acquire(1, kSoon, {});
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease->address(), b.address());
  }
  a.SetServing(true);
  absl::SleepFor(absl::Milliseconds(300));
  bool used_a = false;
  std::vector<ReplicaPool::Lease> held;
  for (int i = 0; i < 4; ++i) {
    auto lease = (*pool)->Acquire(1, kSoon, {});
    ASSERT_TRUE(lease.ok());
    used_a |= lease->address() == a.address();
    held.push_back(std::move(*lease));
  }
  EXPECT_TRUE(used_a);
}

TEST(ReplicaPoolTest, NoHealthyReplicaIsUnavailableQuicklyWithTheReason) {
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(a.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  a.Stop();
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  auto lease = (*pool)->Acquire(1, absl::Now() + absl::Seconds(30), {});
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(lease.status().message().find(a.address()), absl::string_view::npos);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(ReplicaPoolTest, CancelStopsAWaitingAcquire) {
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(a.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  auto one = (*pool)->Acquire(1, kSoon, {});
  auto two = (*pool)->Acquire(1, kSoon, {});
  std::atomic<bool> cancelled{false};
  std::thread cancel([&] {
    absl::SleepFor(absl::Milliseconds(50));
    cancelled = true;
  });
  auto lease = (*pool)->Acquire(1, kSoon, {}, &cancelled);
  cancel.join();
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kCancelled);
}

TEST(ReplicaPoolTest, ResolvesDnsTargets) {
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(absl::StrCat("dns:///localhost:", a.port())), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto lease = (*pool)->Acquire(1, absl::Now() + absl::Seconds(5), {});
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->address(), a.address());
}

TEST(ReplicaPoolTest, RejectsEmptyTargets) {
  EXPECT_EQ(ReplicaPool::Create(Options(""), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dgrid
