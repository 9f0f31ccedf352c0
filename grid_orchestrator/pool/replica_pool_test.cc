// ReplicaPool against real gRPC servers on loopback that serve the standard
// health service: picking, caps, avoidance, health changes and DNS.
#include "grid_orchestrator/pool/replica_pool.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grid_orchestrator/testing/fake_denoiser.h"
#include "grpc/health/v1/health.grpc.pb.h"
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

// Waits (bounded) until `ready` holds: tests order events by what the pool
// reports, not by sleeping.
bool WaitUntil(const std::function<bool()>& ready, absl::Duration limit = absl::Seconds(10)) {
  const absl::Time end = absl::Now() + limit;
  while (!ready()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// Once `gone` stops serving, a job (avoiding `avoid`) goes to `left`, the
// only replica that serves: a replica a job avoids or penalises is still
// better than none.
void ExpectTheLastServingReplicaServes(ReplicaPool& pool, HealthServer& gone,
                                       const HealthServer& left,
                                       const std::set<std::string>& avoid) {
  gone.SetServing(false);
  pool.CheckHealthNow();
  auto alone = pool.Acquire(1, absl::Now() + absl::Seconds(10), avoid);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_EQ(alone->address(), left.address());
}

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
    ASSERT_TRUE(WaitUntil([&] { return (*pool)->waiting() == 1; }));
    *one = ReplicaPool::Lease();
  });
  auto waited = (*pool)->Acquire(1, absl::Now() + absl::Seconds(5), {});
  release.join();
  EXPECT_TRUE(waited.ok()) << waited.status();
  EXPECT_EQ((*pool)->Snapshot()[0].inflight, 2);
}

// Planning a grid asks a replica to tokenize its prompt: that call must not
// wait behind the very work it plans (issue 24: beside full replicas, small
// grids failed DEADLINE_EXCEEDED while planning).
TEST(ReplicaPoolTest, AControlCallTakesAFullReplicaWithoutWaiting) {
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(a.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  auto one = (*pool)->Acquire(1, kSoon, {});
  auto two = (*pool)->Acquire(1, kSoon, {});
  ASSERT_TRUE(one.ok() && two.ok());
  // A job waits at the cap, ahead in line ...
  std::atomic<bool> give_up{false};
  std::thread waiting([&] {
    ReplicaPool::Want job;
    job.work = 1;
    job.cancelled = &give_up;
    EXPECT_EQ((*pool)->Acquire(job).status().code(), absl::StatusCode::kCancelled);
  });
  // ... and a control call still gets the replica at once (the deadline is
  // already past: it must not wait at all).
  ReplicaPool::Want control;
  control.control = true;
  control.deadline = absl::Now();
  auto lease = (*pool)->Acquire(control);
  EXPECT_TRUE(lease.ok()) << lease.status();
  if (lease.ok()) EXPECT_EQ(lease->address(), a.address());
  // An ordinary job at the cap does not.
  EXPECT_EQ((*pool)->Acquire(1, absl::Now(), {}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  give_up = true;
  waiting.join();
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

// Under load: the other replica is at its cap and the avoided one (a job
// just failed there) has a free slot. The retry waits for the other's slot
// rather than going back to the replica that failed it.
TEST(ReplicaPoolTest, AvoidsAReplicaEvenWhenTheOtherIsAtItsCap) {
  HealthServer a, b;
  ReplicaPool::Options options = Options(a.address() + "," + b.address());
  options.max_inflight_per_replica = 1;
  auto pool = ReplicaPool::Create(options, nullptr);
  ASSERT_TRUE(pool.ok());
  auto first = (*pool)->Acquire(1, kSoon, {a.address()});
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->address(), b.address());
  std::optional<ReplicaPool::Lease> held(std::move(*first));
  std::thread release([&] {
    ASSERT_TRUE(WaitUntil([&] { return (*pool)->waiting() == 1; }));
    absl::SleepFor(absl::Milliseconds(100));
    held.reset();
  });
  auto retry = (*pool)->Acquire(1, absl::Now() + absl::Seconds(10), {a.address()});
  release.join();
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->address(), b.address());
  ExpectTheLastServingReplicaServes(**pool, b, a, {a.address()});
}

// A replica that stalled a job (its health check may still say SERVING)
// gets no new jobs while another serves: with the least outstanding work
// once its calls were cancelled, it used to take the next job of every grid.
TEST(ReplicaPoolTest, AReplicaThatStalledAJobIsLeftAloneForAWhile) {
  HealthServer a, b;
  auto pool = ReplicaPool::Create(Options(a.address() + "," + b.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  {
    auto stalled = (*pool)->Acquire(1, kSoon, {b.address()});
    ASSERT_TRUE(stalled.ok());
    ASSERT_EQ(stalled->address(), a.address());
    stalled->MarkStalled();
  }
  for (int i = 0; i < 3; ++i) {
    auto lease = (*pool)->Acquire(1, kSoon, {});
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease->address(), b.address()) << i;
  }
  ExpectTheLastServingReplicaServes(**pool, b, a, {});
}

// A waiter of a better rank that avoids replica A (its job failed there)
// waits for B; it is not "ahead" of another waiter on A, which A's free slot
// serves at once instead of after B frees one.
TEST(ReplicaPoolTest, AWaiterThatAvoidsAReplicaIsNotAheadOnIt) {
  HealthServer a, b;
  ReplicaPool::Options options = Options(a.address() + "," + b.address());
  options.max_inflight_per_replica = 1;
  auto pool = ReplicaPool::Create(options, nullptr);
  ASSERT_TRUE(pool.ok());
  auto on_b = (*pool)->Acquire(1, kSoon, {a.address()});
  ASSERT_TRUE(on_b.ok());
  ASSERT_EQ(on_b->address(), b.address());
  std::atomic<bool> stop{false};
  std::thread first([&] {
    ReplicaPool::Want want;
    want.work = 1;
    want.avoid = {a.address()};
    want.tenant = 1;
    want.rank = 1;
    want.cancelled = &stop;
    auto lease = (*pool)->Acquire(want);  // waits for B until stopped
    EXPECT_EQ(lease.status().code(), absl::StatusCode::kCancelled);
  });
  ASSERT_TRUE(WaitUntil([&] { return (*pool)->waiting() == 1; }));
  ReplicaPool::Want second;
  second.work = 1;
  second.avoid = {b.address()};
  second.tenant = 2;
  second.rank = 5;
  second.deadline = absl::Now() + absl::Seconds(2);
  auto lease = (*pool)->Acquire(second);
  stop = true;
  first.join();
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->address(), a.address());
}

// A job that has waited at the caps for longer than the grace still rides
// out a replica lost now: the grace runs from the loss, not from the wait's
// start (the executor does not retry the UNAVAILABLE "no replica").
TEST(ReplicaPoolTest, TheGraceRunsFromTheLossNotFromTheWaitsStart) {
  HealthServer a;
  ReplicaPool::Options options = Options(a.address());
  options.max_inflight_per_replica = 1;
  // Long enough for a health round on a loaded machine (TSan included).
  options.unavailable_grace = absl::Seconds(2);
  auto pool = ReplicaPool::Create(options, nullptr);
  ASSERT_TRUE(pool.ok());
  auto first = (*pool)->Acquire(1, kSoon, {});
  ASSERT_TRUE(first.ok());
  std::optional<ReplicaPool::Lease> held(std::move(*first));
  std::thread fail([&] {
    ASSERT_TRUE(WaitUntil([&] { return (*pool)->waiting() == 1; }));
    absl::SleepFor(absl::Milliseconds(2200));  // past the grace
    held->MarkUnhealthy();
    held.reset();
  });
  // The next health round (every 50 ms) finds it serving again.
  auto waiter = (*pool)->Acquire(1, absl::Now() + absl::Seconds(10), {});
  fail.join();
  EXPECT_TRUE(waiter.ok()) << waiter.status();
}

TEST(ReplicaPoolTest, HealthChangesTakeReplicasOutAndBackIn) {
  HealthServer a, b;
  auto pool = ReplicaPool::Create(Options(a.address() + "," + b.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  a.SetServing(false);
  (*pool)->CheckHealthNow();
  for (int i = 0; i < 3; ++i) {
    auto lease = (*pool)->Acquire(1, kSoon, {});
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(lease->address(), b.address());
  }
  a.SetServing(true);
  (*pool)->CheckHealthNow();
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

// A job fails on a replica, which restarts onto version 2 of its model
// before the next health round: the pool must not plan on its old list.
TEST(ReplicaPoolTest, AReplicaMarkedUnhealthyIsAskedForItsModelsAgain) {
  testing::FakeReplicas replicas(1);
  ReplicaPool::Options options = replicas.PoolOptions();
  options.health_interval = absl::Hours(1);  // rounds only when the test asks
  auto pool = ReplicaPool::Create(options, nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->Model("fake", "1").ok());
  {
    auto lease = (*pool)->Acquire(1, kSoon, {});
    ASSERT_TRUE(lease.ok()) << lease.status();
    lease->MarkUnhealthy();
  }
  replicas.ServeVersion(0, "2");
  (*pool)->CheckHealthNow();
  EXPECT_TRUE((*pool)->Model("fake", "2").ok()) << "the pool kept the list from before the failure";
  EXPECT_EQ((*pool)->Model("fake", "1").status().code(), absl::StatusCode::kUnavailable);
}

// A curve's next trunk asks for its version just after a job marked the one
// replica unhealthy: the pool waits for the next health round, as a job
// would, instead of failing the curve at once.
TEST(ReplicaPoolTest, AModelVersionRidesOutAReplicaMarkedAMomentAgo) {
  testing::FakeReplicas replicas(1);
  auto pool = ReplicaPool::Create(replicas.PoolOptions(), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->Model("fake", "1").ok());
  {
    auto lease = (*pool)->Acquire(1, kSoon, {});
    ASSERT_TRUE(lease.ok()) << lease.status();
    lease->MarkUnhealthy();
  }
  absl::StatusOr<v1::ModelInfo> model = (*pool)->Model("fake", "1");
  EXPECT_TRUE(model.ok()) << model.status();
  // A version nobody serves still fails, after the grace.
  EXPECT_EQ((*pool)->Model("fake", "9").status().code(), absl::StatusCode::kUnavailable);
}

// Health checks in flight on the HungServers, and the most at once.
struct InFlight {
  std::atomic<int> now{0};
  std::atomic<int> peak{0};
};

// A replica whose process hangs (stopped, or swapping): connections stand,
// and a health check runs to its deadline.
class HungServer {
 public:
  explicit HungServer(InFlight* checks) : health_(checks) {
    // Its own Health service, not the default one a HealthServer turns on.
    grpc::EnableDefaultHealthCheckService(false);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&health_);
    server_ = builder.BuildAndStart();
  }
  ~HungServer() { server_->Shutdown(std::chrono::system_clock::now()); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  class Health final : public grpc::health::v1::Health::Service {
   public:
    explicit Health(InFlight* checks) : checks_(checks) {}
    grpc::Status Check(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest*,
                       grpc::health::v1::HealthCheckResponse*) override {
      const int now = ++checks_->now;
      int peak = checks_->peak;
      while (now > peak && !checks_->peak.compare_exchange_weak(peak, now)) {
      }
      const absl::Time end = absl::Now() + absl::Seconds(10);
      while (!context->IsCancelled() && absl::Now() < end) absl::SleepFor(absl::Milliseconds(5));
      --checks_->now;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "hung");
    }

   private:
    InFlight* checks_;
  };
  int port_ = 0;
  Health health_;
  std::unique_ptr<grpc::Server> server_;
};

// A round asks every replica at once: hung ones hold it up by one health
// timeout in all, not one each.
TEST(ReplicaPoolTest, HungReplicasAreCheckedAtOnce) {
  HealthServer a;
  InFlight checks;
  std::vector<std::unique_ptr<HungServer>> hung;
  std::string targets = a.address();
  for (int i = 0; i < 4; ++i) {
    hung.push_back(std::make_unique<HungServer>(&checks));
    targets += "," + hung.back()->address();
  }
  ReplicaPool::Options options = Options(targets);
  options.health_interval = absl::Hours(1);  // rounds only when the test asks
  options.health_timeout = absl::Seconds(1);
  auto pool = ReplicaPool::Create(options, nullptr);  // runs one round
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(checks.peak, 4) << "the hung replicas were asked one after another";
  int healthy = 0;
  for (const ReplicaPool::ReplicaStatus& r : (*pool)->Snapshot()) {
    healthy += r.healthy;
    if (r.address != a.address()) EXPECT_FALSE(r.last_error.empty()) << r.address;
  }
  EXPECT_EQ(healthy, 1);
  auto lease = (*pool)->Acquire(1, absl::Now() + absl::Seconds(5), {});
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->address(), a.address());
}

// An operator sees each change once: a replica serving, not serving and
// why, and one that will not give its model list (as with a wrong token;
// this server's Denoiser answers UNIMPLEMENTED).
TEST(ReplicaPoolTest, TellsTheLogEachChangeOnce) {
  HealthServer a;
  std::mutex mu;
  std::vector<std::string> lines;
  ReplicaPool::Options options = Options(a.address());
  options.health_interval = absl::Hours(1);  // rounds only when the test asks
  options.log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    lines.push_back(line);
  };
  auto pool = ReplicaPool::Create(options, nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  (*pool)->CheckHealthNow();
  EXPECT_FALSE((*pool)->Models().ok());
  a.SetServing(false);
  (*pool)->CheckHealthNow();
  (*pool)->CheckHealthNow();
  a.SetServing(true);
  (*pool)->CheckHealthNow();
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(lines.size(), 5u) << absl::StrJoin(lines, "\n");
  const std::string name = "denoiser " + a.address() + ": ";
  EXPECT_EQ(lines[0], name + "serving");
  EXPECT_TRUE(absl::StartsWith(lines[1], name + "no model list: UNIMPLEMENTED")) << lines[1];
  EXPECT_EQ(lines[2], name + "not serving: NOT_SERVING");
  // Back, it is asked for its models again, and the failure told again.
  EXPECT_EQ(lines[3], name + "serving");
  EXPECT_TRUE(absl::StartsWith(lines[4], name + "no model list: UNIMPLEMENTED")) << lines[4];
}

TEST(ReplicaPoolTest, NoHealthyReplicaIsUnavailableQuicklyWithTheReason) {
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(a.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  a.Stop();
  (*pool)->CheckHealthNow();
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
    ASSERT_TRUE(WaitUntil([&] { return (*pool)->waiting() == 1; }));
    cancelled = true;
  });
  auto lease = (*pool)->Acquire(1, kSoon, {}, &cancelled);
  cancel.join();
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kCancelled);
}

TEST(ReplicaPoolTest, AFreedSlotGoesToTheSmallerTenantFirst) {
  // Before: every waiter woke on a release and the first to run won, so a
  // grid with many waiting jobs starved a small grid with one.
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(a.address()), nullptr);
  ASSERT_TRUE(pool.ok());
  ReplicaPool::Want big;
  big.work = 1;
  big.tenant = 1;
  big.rank = 10000;
  // The big tenant holds both slots and has many more jobs waiting.
  auto held1 = (*pool)->Acquire(big);
  auto held2 = (*pool)->Acquire(big);
  ASSERT_TRUE(held1.ok() && held2.ok());
  std::atomic<int> big_granted{0};
  std::vector<std::thread> big_waiters;
  std::vector<ReplicaPool::Lease> big_leases(8);
  for (int i = 0; i < 8; ++i) {
    big_waiters.emplace_back([&, i] {
      ReplicaPool::Want w = big;
      w.deadline = absl::Now() + absl::Seconds(3);
      auto lease = (*pool)->Acquire(w);
      if (lease.ok()) {
        ++big_granted;
        big_leases[i] = std::move(*lease);
      }
    });
  }
  ASSERT_TRUE(WaitUntil([&] { return (*pool)->waiting() == 8; }));  // the big waiters first
  ReplicaPool::Want small;
  small.work = 1;
  small.tenant = 2;
  small.rank = 100;
  small.deadline = absl::Now() + absl::Seconds(3);
  std::atomic<bool> small_granted{false};
  ReplicaPool::Lease small_lease;
  std::thread small_waiter([&] {
    auto lease = (*pool)->Acquire(small);
    small_granted = lease.ok();
    if (lease.ok()) small_lease = std::move(*lease);
  });
  ASSERT_TRUE(WaitUntil([&] { return (*pool)->waiting() == 9; }));
  *held1 = ReplicaPool::Lease();  // one slot frees
  EXPECT_TRUE(WaitUntil([&] { return small_granted.load(); }));
  EXPECT_EQ(big_granted.load(), 0);
  small_waiter.join();
  small_lease = ReplicaPool::Lease();
  *held2 = ReplicaPool::Lease();
  for (auto& t : big_waiters) t.join();
}

TEST(ReplicaPoolTest, ResolvesDnsTargets) {
  HealthServer a;
  auto pool = ReplicaPool::Create(Options(absl::StrCat("dns:///localhost:", a.port())), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto lease = (*pool)->Acquire(1, absl::Now() + absl::Seconds(5), {});
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->address(), a.address());
}

// A pod out of a headless Service's endpoints for a while (a failed
// readiness probe) comes back as the same replica: the jobs it still runs
// count against its cap. Before, it came back as a new one with none in
// flight, and took a cap's worth more.
TEST(ReplicaPoolTest, AnAddressThatLeavesTheTargetsAndComesBackKeepsItsLeases) {
  testing::FakeReplicas replicas(2);
  std::mutex mu;
  std::vector<std::string> listed = {replicas.address(0)};
  ReplicaPool::Options options = replicas.PoolOptions();
  options.targets = "dns:///denoisers:50051";
  options.resolve_interval = absl::ZeroDuration();  // at every health round
  options.max_inflight_per_replica = 1;
  options.resolve_dns = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return listed;
  };
  auto pool = ReplicaPool::Create(options, nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto held = (*pool)->Acquire(1, kSoon, {});
  ASSERT_TRUE(held.ok()) << held.status();
  auto serving = [&](const std::string& address) {
    for (const auto& r : (*pool)->Snapshot()) {
      if (r.address == address) return r.healthy;
    }
    return false;
  };
  auto list = [&](std::vector<std::string> addresses) {
    std::lock_guard<std::mutex> lock(mu);
    listed = std::move(addresses);
  };
  list({replicas.address(1)});
  ASSERT_TRUE(WaitUntil([&] { return serving(replicas.address(1)); }));
  list({replicas.address(0)});
  ASSERT_TRUE(WaitUntil([&] {
    return serving(replicas.address(0)) && (*pool)->Snapshot().size() == 1;
  }));
  EXPECT_EQ((*pool)->Snapshot()[0].inflight, 1);
  const auto over = (*pool)->Acquire(1, absl::Now() + absl::Milliseconds(300), {});
  EXPECT_EQ(over.status().code(), absl::StatusCode::kDeadlineExceeded) << over.status();
  *held = ReplicaPool::Lease();
  EXPECT_TRUE((*pool)->Acquire(1, kSoon, {}).ok());
}

TEST(ReplicaPoolTest, RejectsEmptyTargets) {
  EXPECT_EQ(ReplicaPool::Create(Options(""), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dgrid
