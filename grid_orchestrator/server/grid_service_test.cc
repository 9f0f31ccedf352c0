// GridService over fake replicas: admission before any event, and the
// per-grid outbox that keeps a client which stops reading from holding
// replicas (issue: two unread streams held every in-flight slot).
#include "grid_orchestrator/server/grid_service.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grid_orchestrator/testing/abort_latch.h"
#include "grid_orchestrator/testing/fake_denoiser.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using testing::FakeReplicas;

class GridServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = ReplicaPool::Create(replicas_.PoolOptions(), nullptr);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
    ExecutorOptions options;
    options.cells_per_job = 1;
    executor_ = std::make_unique<GridExecutor>(pool_.get(), &cache_, nullptr, options);
  }
  std::unique_ptr<GridService> Service(OrchestratorLimits limits) {
    return std::make_unique<GridService>(pool_.get(), executor_.get(), nullptr, limits, "");
  }
  static v1::GridRequest Request() {
    v1::GridRequest r;
    r.set_seed(5);
    r.mutable_steps()->set_value(10);
    r.mutable_branches()->set_value(4);
    r.add_branch_steps(0);
    r.add_branch_steps(5);
    return r;
  }
  int Inflight() {
    int n = 0;
    for (const auto& r : pool_->Snapshot()) n += r.inflight;
    return n;
  }

  FakeReplicas replicas_{1};
  PrefixCache cache_{0};
  std::unique_ptr<ReplicaPool> pool_;
  std::unique_ptr<GridExecutor> executor_;
};

// GridService over one fake replica of a text model.
class GridServiceTokenizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    replicas_.script(0).text = true;
    auto pool = ReplicaPool::Create(replicas_.PoolOptions(), nullptr);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
    executor_ = std::make_unique<GridExecutor>(pool_.get(), &cache_, nullptr, ExecutorOptions{});
    service_ = std::make_unique<GridService>(pool_.get(), executor_.get(), nullptr,
                                             OrchestratorLimits{}, "");
  }
  FakeReplicas replicas_{1};
  PrefixCache cache_{0};
  std::unique_ptr<ReplicaPool> pool_;
  std::unique_ptr<GridExecutor> executor_;
  std::unique_ptr<GridService> service_;
};

// A replica's Tokenize failing for its own reasons (a token it refuses, a
// timeout) is the server's fault, not the client's: passed on as it came,
// the denoiser's UNAUTHENTICATED read as the client's token being wrong.
TEST_F(GridServiceTokenizeTest, AReplicasTokenizeFailureIsNotTheClients) {
  FakeReplicas& replicas = replicas_;
  GridService& service = *service_;
  replicas.script(0).tokenize_code = grpc::StatusCode::UNAUTHENTICATED;
  replicas.script(0).tokenize_message = "missing or invalid bearer token";
  v1::GridRequest request;
  request.set_prompt("a cat");
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> refused = service.Admit(Caller{}, request);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_NE(refused.status().message().find("could not tokenize the prompts (UNAUTHENTICATED"),
            std::string::npos)
      << refused.status();
  // The replica's settings: said as such, not to be retried, and no
  // client's mistake (FAILED_PRECONDITION would count it invalid).
  replicas.script(0).tokenize_code = grpc::StatusCode::FAILED_PRECONDITION;
  replicas.script(0).tokenize_message =
      "texts: at most 2 per request (--max_trajectories_per_request)";
  refused = service.Admit(Caller{}, request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInternal) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "at most 2 per request"))
      << refused.status();
  // The prompts' own fault stays the client's, named by its field.
  replicas.script(0).tokenize_code = grpc::StatusCode::INVALID_ARGUMENT;
  replicas.script(0).tokenize_message = "texts[2]: not valid UTF-8";
  refused = service.Admit(Caller{}, request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(), "switch_prompt: not valid UTF-8");
  // A tokenizer that answers: the grid is admitted.
  replicas.script(0).tokenize_code = grpc::StatusCode::OK;
  EXPECT_TRUE(service.Admit(Caller{}, request).ok());
}

// Planning a text grid asks a replica to tokenize the prompts; a client
// with a short deadline is answered by it, not after the 5 s the call may
// otherwise take.
TEST_F(GridServiceTokenizeTest, TokenizingStopsAtTheCallersDeadline) {
  replicas_.script(0).tokenize_delay = absl::Seconds(3);
  v1::GridRequest request;
  request.set_prompt("a cat");
  Caller caller;
  caller.deadline = absl::Now() + absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> late = service_->Admit(caller, request);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_NE(late.status().message().find("while the prompts were being tokenized"),
            std::string::npos)
      << late.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

// A switch prompt that the tokenizer reads as the prompt changes nothing the
// model sees: its cells are the trunk, at no cost (they ran every row).
TEST_F(GridServiceTokenizeTest, ASwitchThatTokenizesAsThePromptIsThePlainGrid) {
  GridService& service = *service_;
  v1::GridRequest request;
  request.set_prompt("a rocket");
  request.set_switch_prompt("A  ROCKET");
  request.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  request.mutable_branches()->set_value(1);
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> same = service.Admit(Caller{}, request);
  ASSERT_TRUE(same.ok()) << same.status();
  const GridPlanSpec& plan = (*same)->plan();
  EXPECT_EQ(plan.switch_prompt, "A  ROCKET");  // as typed
  EXPECT_EQ(plan.model_evals, plan.steps);
  for (const PlannedRow& row : plan.rows) EXPECT_EQ(row.cells[0], plan.trunk) << row.branch_step;
  // Another prompt switches.
  request.set_switch_prompt("a cat");
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> other = service.Admit(Caller{}, request);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_GT((*other)->plan().model_evals, (*other)->plan().steps);
}

// Planned as the plain grid, an unseen switch is refused as the plain grid
// is: at eta 0 every branch would be its trunk (before, they ran and were
// paid for).
TEST_F(GridServiceTokenizeTest, ASwitchThatTokenizesAsThePromptMakesNoBranchDiffer) {
  v1::GridRequest request;
  request.set_prompt("a rocket");
  request.set_switch_prompt("A  ROCKET");
  request.mutable_eta()->set_value(0);
  const absl::Status refused = service_->Admit(Caller{}, request).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "changes nothing this model reads")) << refused;
  request.set_switch_prompt("a cat");
  EXPECT_TRUE(service_->Admit(Caller{}, request).ok());
}

// A switch to a negative prompt that tokenizes as the empty one is a switch:
// an SDXL-style bundle gives an empty negative prompt zeros, not its tokens.
TEST_F(GridServiceTokenizeTest, ASwitchFromTheEmptyNegativePromptIsASwitch) {
  v1::GridRequest request;
  request.set_prompt("a rocket");
  request.set_switch_prompt("a rocket");
  request.set_switch_negative_prompt("   ");
  request.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  request.mutable_branches()->set_value(1);
  request.mutable_guidance()->set_value(4);  // reads the negative prompt
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> seen = service_->Admit(Caller{}, request);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_GT((*seen)->plan().model_evals, (*seen)->plan().steps);
  // From a non-empty one, the same tokens read alike.
  request.set_negative_prompt("blurry");
  request.set_switch_negative_prompt("BLURRY ");
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> same = service_->Admit(Caller{}, request);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ((*same)->plan().model_evals, (*same)->plan().steps);
}

// At guidance 0 only the negative prompt is read: a prompt switch is no
// switch, also from the empty prompt. (The plain grid was planned from the
// request with the switch rewritten to the empty prompt, which is no switch
// at all, and so refused: "branch_noise: TRUNK keeps the trunk's noise".)
TEST_F(GridServiceTokenizeTest, APromptSwitchAtGuidanceZeroIsThePlainGridFromAnyPrompt) {
  v1::GridRequest request;
  request.set_switch_prompt("a cat");
  request.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  request.mutable_branches()->set_value(1);
  request.mutable_guidance()->set_value(0);
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> unseen = service_->Admit(Caller{}, request);
  ASSERT_TRUE(unseen.ok()) << unseen.status();
  const GridPlanSpec& plan = (*unseen)->plan();
  EXPECT_EQ(plan.switch_prompt, "a cat");
  EXPECT_EQ(plan.model_evals, plan.steps);
  for (const PlannedRow& row : plan.rows) EXPECT_EQ(row.cells[0], plan.trunk) << row.branch_step;
}

// Replicas that serve different models (a pool split by model, or a
// rolling update that adds a bundle): a model only the second serves is
// listed and runs there. Before, only the first replica's list counted, and
// the request was refused as naming an unknown model.
TEST(GridServiceModelsTest, AModelAnyHealthyReplicaServesIsListedAndRuns) {
  FakeReplicas replicas(2);
  replicas.script(1).model = "other";
  auto pool = ReplicaPool::Create(replicas.PoolOptions(), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  PrefixCache cache(0);
  GridExecutor executor(pool->get(), &cache, nullptr, ExecutorOptions{});
  GridService service(pool->get(), &executor, nullptr, OrchestratorLimits{}, "");

  absl::StatusOr<v1::ListModelsResponse> listed = service.ListModels(Caller{});
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<std::string> names;
  for (const v1::ModelInfo& m : listed->models()) names.push_back(m.name());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"fake", "other"}));

  v1::GridRequest request;
  request.set_model("other");
  request.set_seed(5);
  request.mutable_steps()->set_value(10);
  request.mutable_branches()->set_value(2);
  request.add_branch_steps(5);
  {
    auto admitted = service.Admit(Caller{}, request);
    ASSERT_TRUE(admitted.ok()) << admitted.status();
    EXPECT_EQ((*admitted)->plan().model, "other");
  }
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service.RunGrid(Caller{}, request, [](const v1::GridEvent&) { return true; }, &cancel,
                      /*stream_grid=*/false);
  EXPECT_TRUE(grid.ok()) << grid.status();
  EXPECT_TRUE(replicas.log(0).branches.empty());
  EXPECT_FALSE(replicas.log(1).branches.empty());

  request.set_model("nope");
  const absl::Status unknown = service.Admit(Caller{}, request).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.message(), "fake")) << unknown;
  EXPECT_TRUE(absl::StrContains(unknown.message(), "other")) << unknown;
}

TEST_F(GridServiceTest, AdmissionRefusesBeforeAnyEvent) {
  auto service = Service({});
  v1::GridRequest bad = Request();
  bad.mutable_branches()->set_value(0);
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> admitted = service->Admit(Caller{}, bad);
  ASSERT_FALSE(admitted.ok());
  EXPECT_EQ(admitted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(admitted.status().message().find("branches"), std::string::npos);
}

TEST_F(GridServiceTest, AdmittedGridsHoldTheirPlaceUntilReleased) {
  OrchestratorLimits limits;
  limits.max_grids_per_client = 1;
  auto service = Service(limits);
  auto first = service->Admit(Caller{}, Request());
  ASSERT_TRUE(first.ok());
  auto second = service->Admit(Caller{}, Request());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsThrottled(second.status())) << second.status();  // the client's own limit
  first->reset();
  EXPECT_TRUE(service->Admit(Caller{}, Request()).ok());
}

// The grids admitted and not yet done, as a gauge: the counters told an
// operator how grids ended, not how many were running.
TEST_F(GridServiceTest, GridsInFlightAreAGauge) {
  OrchestratorMetrics metrics;
  GridService service(pool_.get(), executor_.get(), &metrics, OrchestratorLimits{}, "");
  auto in_flight = [&metrics] {
    for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
      if (family.name != "dgrid_orchestrator_grids_in_flight") continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        if (metric.label.at(0).value == "grid") return metric.gauge.value;
      }
    }
    return -1.0;
  };
  EXPECT_EQ(in_flight(), 0);
  auto first = service.Admit(Caller{}, Request());
  auto second = service.Admit(Caller{}, Request());
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(in_flight(), 2);
  first->reset();
  EXPECT_EQ(in_flight(), 1);
  second->reset();
  EXPECT_EQ(in_flight(), 0);
}

// A client at its own limit while the service is full is the service's
// overload ("rejected", which the error-ratio alerts count): behind an
// Ingress every browser is one client, whose limit is the service's, and
// an overload was all "throttled".
TEST_F(GridServiceTest, AFullServiceIsRejectedThoughTheClientIsAtItsLimitToo) {
  OrchestratorLimits limits;
  limits.max_grids_per_client = 2;
  limits.max_concurrent_grids = 2;
  auto service = Service(limits);
  auto first = service->Admit(Caller{}, Request());
  auto second = service->Admit(Caller{}, Request());
  ASSERT_TRUE(first.ok() && second.ok());
  auto third = service->Admit(Caller{}, Request());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(IsThrottled(third.status())) << third.status();
  EXPECT_EQ(third.status().message(), "too many grids in flight (limit 2); retry later");
}

// Decision curves may hold all but a quarter of the service's places: their
// waiting trunks take each place back as it comes free, and four clients'
// curves held all 64 and refused every other client's grid.
TEST_F(GridServiceTest, CurvesLeaveAQuarterOfThePlacesToGrids) {
  OrchestratorLimits limits;
  limits.max_concurrent_grids = 8;
  EXPECT_EQ(limits.CurvePlaces(), 6);
  auto service = Service(limits);
  GridService::AdmitOptions trunk;
  trunk.curve_trunk = true;
  auto caller = [](int i) {
    Caller c;
    c.client = absl::StrCat("10.0.0.", i);
    return c;
  };
  std::vector<std::unique_ptr<AdmittedGrid>> held;
  for (int i = 0; i < 6; ++i) {
    auto admitted = service->Admit(caller(i % 3), Request(), trunk);
    ASSERT_TRUE(admitted.ok()) << i << ": " << admitted.status();
    held.push_back(std::move(*admitted));
  }
  auto seventh = service->Admit(caller(4), Request(), trunk);
  EXPECT_EQ(seventh.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(seventh.status().message().find("decision curves hold"), std::string::npos)
      << seventh.status();
  // Grids still get the two places kept for them, and then the service is full.
  auto grid = service->Admit(caller(5), Request());
  ASSERT_TRUE(grid.ok()) << grid.status();
  auto other = service->Admit(caller(6), Request());
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(service->Admit(caller(7), Request()).status().code(),
            absl::StatusCode::kResourceExhausted);
  // A trunk's place, released, goes to the next trunk; a grid's does not
  // count against the curves.
  held.pop_back();
  auto next = service->Admit(caller(4), Request(), trunk);
  ASSERT_TRUE(next.ok()) << next.status();
  grid->reset();
  EXPECT_EQ(service->Admit(caller(4), Request(), trunk).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(service->Admit(caller(5), Request()).ok());
  // One place in all: curves may take it.
  OrchestratorLimits one;
  one.max_concurrent_grids = 1;
  EXPECT_EQ(one.CurvePlaces(), 1);
}

TEST_F(GridServiceTest, AClientWhoseWriteBlocksIsCancelledAndItsReplicasFreed) {
  OrchestratorLimits limits;
  limits.max_write_stall = absl::Milliseconds(300);
  auto service = Service(limits);
  // A client that never reads: its first write blocks until the transport
  // is aborted.
  testing::AbortLatch latch;
  Caller caller;
  caller.abort = latch.Abort();
  auto blocked_sink = [&](const v1::GridEvent&) {
    latch.Wait();
    return false;
  };
  GridCancel cancel;
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::Grid> grid =
      service->RunGrid(caller, Request(), blocked_sink, &cancel, /*stream_grid=*/true);
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(latch.aborted());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(Inflight(), 0);
  // The service still serves everyone else.
  GridCancel other;
  EXPECT_TRUE(service
                  ->RunGrid(Caller{}, Request(), [](const v1::GridEvent&) { return true; },
                            &other, true)
                  .ok());
}

// The orchestrator's own time limit, not the caller's deadline: the
// message names it, since a client would otherwise blame its own timeout.
TEST_F(GridServiceTest, AGridPastTheServersLimitSaysSo) {
  replicas_.script(0).delay = absl::Seconds(2);
  OrchestratorLimits limits;
  limits.default_grid_timeout = absl::Milliseconds(300);
  auto service = Service(limits);
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service->RunGrid(Caller{}, Request(), [](const v1::GridEvent&) { return true; }, &cancel,
                       /*stream_grid=*/false);
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StartsWith(grid.status().message(),
                               "the grid ran past this orchestrator's time limit "
                               "(--grid_timeout_s, 0.3 s): "))
      << grid.status();
  // The caller's own, earlier deadline is left as it was.
  Caller hurried;
  hurried.deadline = absl::Now() + absl::Milliseconds(100);
  limits.default_grid_timeout = absl::Seconds(30);
  GridCancel other;
  grid = Service(limits)->RunGrid(hurried, Request(), [](const v1::GridEvent&) { return true; },
                                  &other, false);
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(absl::StrContains(grid.status().message(), "grid_timeout_s")) << grid.status();
  // Nor a replica that stalled well inside the limit (the fake replica
  // cannot stall: its Read ignores a cancel, so the rule is asked directly).
  const absl::Time start = absl::Now();
  const absl::Status stalled =
      absl::DeadlineExceededError("row 0 (branch step 0): replica r made no progress for 15s");
  EXPECT_EQ(NameTheServersLimit(stalled, start + absl::Seconds(60), start + absl::Seconds(300),
                                absl::InfiniteFuture(), absl::Seconds(300)),
            stalled);
  EXPECT_EQ(NameTheServersLimit(stalled, start + absl::Seconds(300), start + absl::Seconds(300),
                                absl::InfiniteFuture(), absl::Seconds(300))
                .message(),
            "the grid ran past this orchestrator's time limit (--grid_timeout_s, 300 s): row 0 "
            "(branch step 0): replica r made no progress for 15s");
}

// dgrid_orchestrator_grids_total{status}.
double Grids(OrchestratorMetrics& metrics, const std::string& status) {
  for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
    if (family.name != "dgrid_orchestrator_grids_total") continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      if (metric.label.at(0).value == status) return metric.counter.value;
    }
  }
  return 0;
}

// A client that cancels or hangs up mid-stream is "cancelled" whether its
// cancel or a failed write is seen first; "abandoned" is for a client that
// stopped reading.
TEST_F(GridServiceTest, AClientThatHangsUpIsCancelledAndOneCutOffForSlownessAbandoned) {
  OrchestratorMetrics metrics;
  GridService service(pool_.get(), executor_.get(), &metrics, OrchestratorLimits{}, "");
  for (const int last : {1, 3, 6}) {
    int events = 0;
    GridCancel cancel;
    absl::StatusOr<v1::Grid> grid = service.RunGrid(
        Caller{}, Request(), [&](const v1::GridEvent&) { return ++events < last; }, &cancel,
        /*stream_grid=*/true);
    EXPECT_EQ(grid.status().code(), absl::StatusCode::kCancelled) << last;
  }
  EXPECT_EQ(Grids(metrics, "cancelled"), 3);
  EXPECT_EQ(Grids(metrics, "abandoned"), 0);
  EXPECT_EQ(Inflight(), 0);
  // A write the transport gave up on (HTTP's floor for a client reading a
  // trickle) is a client that stopped reading.
  Caller slow;
  slow.cut_off = [] { return true; };
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid = service.RunGrid(
      slow, Request(), [](const v1::GridEvent& e) { return e.has_plan(); }, &cancel,
      /*stream_grid=*/true);
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kCancelled);
  EXPECT_NE(grid.status().message().find("too slowly"), std::string::npos) << grid.status();
  EXPECT_EQ(Grids(metrics, "abandoned"), 1);
}

// A grid admitted and never run (an HTTP client gone before its answer's
// first byte, so the stream never started) ends counted cancelled, as
// every admitted grid ends counted: it was counted nowhere.
TEST_F(GridServiceTest, AGridAdmittedAndNeverRunIsCountedCancelled) {
  OrchestratorMetrics metrics;
  GridService service(pool_.get(), executor_.get(), &metrics, OrchestratorLimits{}, "");
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> admitted = service.Admit(Caller{}, Request());
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  admitted->reset();
  EXPECT_EQ(Grids(metrics, "cancelled"), 1);
  // One that ran is counted once, by its run.
  admitted = service.Admit(Caller{}, Request());
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  GridCancel cancel;
  ASSERT_TRUE(service.Run(**admitted, Caller{}, [](const v1::GridEvent&) { return true; },
                          &cancel, /*stream_grid=*/true)
                  .ok());
  admitted->reset();
  EXPECT_EQ(Grids(metrics, "cancelled"), 1);
  EXPECT_EQ(Grids(metrics, "ok"), 1);
  EXPECT_EQ(Inflight(), 0);
}

// A slow link is not a stalled client: a write that takes past the stall
// bound while the transport keeps handing bytes over goes on (a large final
// event over HTTP), one with no byte taken is cut off.
TEST_F(GridServiceTest, AWriteThatKeepsMovingIsNotAStall) {
  OrchestratorLimits limits;
  // A bound well past a scheduling pause of a loaded 2-core machine.
  limits.max_write_stall = absl::Seconds(1);
  auto service = Service(limits);
  std::atomic<int64_t> sent{0};
  Caller caller;
  caller.sent = [&sent] { return sent.load(); };
  // The first event takes 3 s to write, a few bytes every 50 ms.
  bool first = true;
  auto trickling_sink = [&](const v1::GridEvent&) {
    for (int i = 0; first && i < 60; ++i) {
      absl::SleepFor(absl::Milliseconds(50));
      sent += 10;
    }
    first = false;
    return true;
  };
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service->RunGrid(caller, Request(), trickling_sink, &cancel, /*stream_grid=*/true);
  EXPECT_TRUE(grid.ok()) << grid.status();

  // The same transport with no byte taken: a stall, as without a count.
  testing::AbortLatch latch;
  Caller stuck;
  stuck.sent = [&sent] { return sent.load(); };
  stuck.abort = latch.Abort();
  GridCancel stuck_cancel;
  grid = service->RunGrid(
      stuck, Request(),
      [&](const v1::GridEvent&) {
        latch.Wait();
        return false;
      },
      &stuck_cancel, /*stream_grid=*/true);
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(latch.aborted());
}

TEST_F(GridServiceTest, JobsNeverWaitOnASlowClient) {
  // The client takes 200 ms per event; the grid's jobs finish long before
  // the client has read their cells, so they never held a lease meanwhile.
  auto service = Service({});
  absl::Time jobs_done = absl::InfiniteFuture();
  int events = 0;
  auto slow_sink = [&](const v1::GridEvent& e) {
    if (events++ == 0) {
      // While the client sleeps on the first event, the jobs run.
      absl::SleepFor(absl::Milliseconds(1500));
      if (Inflight() == 0) jobs_done = absl::Now();
    }
    return true;
  };
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service->RunGrid(Caller{}, Request(), slow_sink, &cancel, /*stream_grid=*/true);
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_NE(jobs_done, absl::InfiniteFuture()) << "jobs still held leases while the client slept";
  // plan, trunk progress x2, 9 cells, grid.
  EXPECT_GE(events, 12);
}

TEST_F(GridServiceTest, AnOutboxPastItsBoundCancelsTheGrid) {
  OrchestratorLimits limits;
  limits.max_outbox_bytes = 256;  // less than a few cells
  auto service = Service(limits);
  auto slow_sink = [&](const v1::GridEvent&) {
    absl::SleepFor(absl::Milliseconds(300));
    return true;
  };
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid =
      service->RunGrid(Caller{}, Request(), slow_sink, &cancel, /*stream_grid=*/true);
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kCancelled);
  EXPECT_NE(grid.status().message().find("stopped reading"), std::string::npos) << grid.status();
  EXPECT_EQ(Inflight(), 0);
}

// A grid from the cache emits all its cells at once, from the grid's worker
// thread, which holds no replica slot: they wait for a client that reads,
// however slowly. They overflowed the outbox (an SD grid's cells pass
// 16 MiB), and the grid was taken for abandoned.
TEST_F(GridServiceTest, AGridFromTheCacheWaitsForItsClientToRead) {
  PrefixCache cache(64 << 20);
  ExecutorOptions options;
  options.cells_per_job = 1;
  GridExecutor executor(pool_.get(), &cache, nullptr, options);
  GridService filler(pool_.get(), &executor, nullptr, OrchestratorLimits{}, "");
  GridCancel first;
  absl::StatusOr<v1::Grid> live = filler.RunGrid(
      Caller{}, Request(), [](const v1::GridEvent&) { return true; }, &first, true);
  ASSERT_TRUE(live.ok()) << live.status();

  OrchestratorLimits limits;
  limits.max_outbox_bytes = 1024;  // a few of its events
  GridService service(pool_.get(), &executor, nullptr, limits, "");
  int cells = 0;
  auto slow_sink = [&](const v1::GridEvent& event) {
    absl::SleepFor(absl::Milliseconds(20));
    if (event.has_cell()) ++cells;
    return true;
  };
  GridCancel second;
  absl::StatusOr<v1::Grid> cached =
      service.RunGrid(Caller{}, Request(), slow_sink, &second, /*stream_grid=*/true);
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_EQ(cached->model_evals(), 0) << "not a grid from the cache";
  // 2 rows of 4 cells and the trunk.
  EXPECT_EQ(cells, 9);

  // Its time running out while the client reads is the deadline's doing,
  // not a client that stopped reading. (Its events after the plan are about
  // 1,200 bytes: the worker waits for most of them to be read.)
  limits.max_outbox_bytes = 400;
  GridService tight(pool_.get(), &executor, nullptr, limits, "");
  Caller hurried;
  hurried.deadline = absl::Now() + absl::Milliseconds(150);
  auto slower_sink = [&](const v1::GridEvent&) {
    absl::SleepFor(absl::Milliseconds(60));
    return true;
  };
  GridCancel third;
  absl::StatusOr<v1::Grid> late =
      tight.RunGrid(hurried, Request(), slower_sink, &third, /*stream_grid=*/true);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  EXPECT_NE(late.status().message().find("while its client read"), std::string::npos)
      << late.status();
}

TEST_F(GridServiceTest, TheBearerSchemeIsCaseInsensitive) {
  GridService service(pool_.get(), executor_.get(), nullptr, {}, "s3cret");
  auto with = [](std::string authorization) {
    Caller caller;
    caller.authorization = std::move(authorization);
    return caller;
  };
  for (const char* accepted : {"Bearer s3cret", "bearer s3cret", "BEARER s3cret"}) {
    EXPECT_TRUE(service.Authenticate(with(accepted)).ok()) << accepted;
  }
  for (const char* refused : {"", "s3cret", "Bearer", "Bearer S3CRET", "Basic s3cret",
                              "Bearers3cret", "Bearer s3cret2"}) {
    EXPECT_EQ(service.Authenticate(with(refused)).code(), absl::StatusCode::kUnauthenticated)
        << refused;
  }
}

}  // namespace
}  // namespace dgrid
