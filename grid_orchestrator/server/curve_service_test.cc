// CurveService over fake replicas, whose judge labels a cell "high" when its
// grey level is 128 or more: the curve must equal a count made
// independently over the same grids.
#include "grid_orchestrator/server/curve_service.h"

#include <prometheus/registry.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "common/png_image.h"
#include "grid_orchestrator/execute/grid_judge.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grid_orchestrator/testing/abort_latch.h"
#include "grid_orchestrator/testing/fake_denoiser.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using testing::FakeReplicas;

class CurveServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pool = ReplicaPool::Create(replicas_.PoolOptions(), nullptr);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
    executor_ = std::make_unique<GridExecutor>(pool_.get(), &cache_, &metrics_, ExecutorOptions{});
  }
  void Start(OrchestratorLimits limits = {}, CurveLimits curve_limits = {}) {
    grids_ = std::make_unique<GridService>(pool_.get(), executor_.get(), &metrics_, limits, "");
    curves_ = std::make_unique<CurveService>(grids_.get(), pool_.get(), &metrics_, curve_limits);
  }
  static v1::CurveRequest Request(int trunks) {
    v1::CurveRequest r;
    r.set_trunks(trunks);
    v1::GridRequest* g = r.mutable_grid();
    g->set_seed(40);
    g->mutable_steps()->set_value(10);
    g->mutable_branches()->set_value(4);
    for (int k : {0, 3, 6}) g->add_branch_steps(k);
    return r;
  }
  static bool High(const std::string& png) {
    return DecodePng({reinterpret_cast<const uint8_t*>(png.data()), png.size()})->pixels[0] >= 128;
  }

  // A 3-trunk curve stands, its 39 images (13 a trunk) all judged by
  // replica 1, whatever replica 0's judge did.
  void ExpectReplicaOneJudgesEveryImage() {
    absl::StatusOr<v1::CurveResult> curve =
        curves_->RunCurve(Caller{}, Request(3), [](const v1::CurveEvent&) { return true; });
    ASSERT_TRUE(curve.ok()) << curve.status();
    EXPECT_EQ(curve->judged_images(), 3 * 13);
    EXPECT_EQ(replicas_.log(1).judged_images, 3 * 13);
  }

  // dgrid_orchestrator_grids_total{status} and dgrid_orchestrator_curves_total{status}.
  double Grids(const std::string& status) {
    return Count("dgrid_orchestrator_grids_total", status);
  }
  double Curves(const std::string& status) {
    return Count("dgrid_orchestrator_curves_total", status);
  }
  double Count(const std::string& name, const std::string& value,
               const std::string& label_name = "status") {
    for (const prometheus::MetricFamily& family : metrics_.registry()->Collect()) {
      if (family.name != name) continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        for (const prometheus::ClientMetric::Label& label : metric.label) {
          if (label.name == label_name && label.value == value) return metric.counter.value;
        }
      }
    }
    return 0;
  }
  // Observations in dgrid_orchestrator_grid_seconds or _curve_seconds.
  uint64_t Timed(const std::string& name) {
    for (const prometheus::MetricFamily& family : metrics_.registry()->Collect()) {
      if (family.name == name) return family.metric.at(0).histogram.sample_count;
    }
    return 0;
  }

  FakeReplicas replicas_{2};
  OrchestratorMetrics metrics_;
  PrefixCache cache_{size_t{16} << 20};
  std::unique_ptr<ReplicaPool> pool_;
  std::unique_ptr<GridExecutor> executor_;
  std::unique_ptr<GridService> grids_;
  std::unique_ptr<CurveService> curves_;
};

TEST_F(CurveServiceTest, TheCurveIsTheCountOverTheTrunksGrids) {
  Start();
  const v1::CurveRequest request = Request(6);
  std::vector<v1::CurveEvent> events;
  absl::StatusOr<v1::CurveResult> curve = curves_->RunCurve(
      Caller{}, request, [&](const v1::CurveEvent& e) { events.push_back(e); return true; });
  ASSERT_TRUE(curve.ok()) << curve.status();
  // Its jobs went out as batch work, whose queueing the replicas report
  // apart; a plain grid's (seed 99, not cached) as interactive.
  size_t curve_calls[2] = {replicas_.log(0).branches.size(), replicas_.log(1).branches.size()};
  EXPECT_GT(curve_calls[0] + curve_calls[1], 0u);
  for (int i = 0; i < 2; ++i) {
    for (const v1::BranchRequest& b : replicas_.log(i).branches) {
      EXPECT_TRUE(b.batch_work()) << "replica " << i;
    }
  }
  {
    v1::GridRequest plain = request.grid();
    plain.set_seed(99);
    GridCancel cancel;
    ASSERT_TRUE(grids_->RunGrid(Caller{}, plain, [](const v1::GridEvent&) { return true; },
                                &cancel, false).ok());
    size_t plain_calls = 0;
    for (int i = 0; i < 2; ++i) {
      const std::vector<v1::BranchRequest> branches = replicas_.log(i).branches;
      for (size_t c = curve_calls[i]; c < branches.size(); ++c, ++plain_calls) {
        EXPECT_FALSE(branches[c].batch_work()) << "replica " << i;
      }
    }
    EXPECT_GT(plain_calls, 0u);
  }

  // Independently: each trunk's grid (seed 40 + t), labelled cell by cell.
  std::vector<std::vector<double>> fractions(3);  // [row][trunk]
  for (int t = 0; t < 6; ++t) {
    v1::GridRequest grid_request = request.grid();
    grid_request.set_seed(40 + t);
    GridCancel cancel;
    absl::StatusOr<v1::Grid> grid = grids_->RunGrid(
        Caller{}, grid_request, [](const v1::GridEvent&) { return true; }, &cancel, false);
    ASSERT_TRUE(grid.ok()) << grid.status();
    const bool trunk = High(grid->trunk().png());
    for (int r = 0; r < 3; ++r) {
      int differ = 0;
      for (const v1::GridCell& cell : grid->rows(r).cells()) differ += High(cell.png()) != trunk;
      fractions[r].push_back(differ / 4.0);
    }
  }
  ASSERT_EQ(curve->heads_size(), 1);
  EXPECT_EQ(curve->heads(0).head(), "level");
  for (int r = 0; r < 3; ++r) {
    double mean = 0;
    for (double f : fractions[r]) mean += f / 6;
    EXPECT_DOUBLE_EQ(curve->heads(0).p_differs(r).mean(), mean) << "row " << r;
  }
  EXPECT_EQ(curve->trunks(), 6);
  EXPECT_EQ(curve->rows_size(), 3);
  EXPECT_EQ(curve->rows(1).branch_step(), 3);
  EXPECT_EQ(curve->judged_images(), 6 * (1 + 3 * 4));
  EXPECT_EQ(curve->png().substr(1, 3), "PNG");
  for (const v1::CurveRow& row : curve->rows()) {
    EXPECT_TRUE(row.has_divergence() && row.has_divergence_to_trunk());
  }

  // The plan, one progress event per trunk, then the curve.
  ASSERT_EQ(events.size(), 8u);
  EXPECT_TRUE(events.front().has_plan());
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(events[i].has_progress());
    EXPECT_EQ(events[i].progress().trunks_done(), i);
    EXPECT_EQ(events[i].progress().trunks(), 6);
  }
  EXPECT_TRUE(events.back().has_curve());
}

// One branch per row has no pair of branches: the pairwise divergence is
// unset, not a 0 ± 0 that reads as "the branches agree".
TEST_F(CurveServiceTest, OneBranchPerRowHasNoPairwiseDivergence) {
  Start();
  v1::CurveRequest request = Request(3);
  request.mutable_grid()->mutable_branches()->set_value(1);
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(Caller{}, request, [](const v1::CurveEvent&) { return true; });
  ASSERT_TRUE(curve.ok()) << curve.status();
  ASSERT_EQ(curve->rows_size(), 3);
  for (const v1::CurveRow& row : curve->rows()) {
    EXPECT_FALSE(row.has_divergence()) << "row after step " << row.branch_step();
    EXPECT_TRUE(row.has_divergence_to_trunk());
  }
}

TEST_F(CurveServiceTest, BadInputIsRefusedNamingTheFieldBeforeAnyEvent) {
  Start();
  const struct {
    v1::CurveRequest request;
    const char* field;
  } cases[] = {
      {Request(1), "trunks"},
      {Request(1001), "trunks"},
      {[] {
         v1::CurveRequest r = Request(4);
         r.mutable_grid()->mutable_branches()->set_value(0);
         return r;
       }(),
       "grid.branches"},
      {[] {
         v1::CurveRequest r = Request(4);
         r.mutable_grid()->mutable_trunk()->set_init_seed(3);
         return r;
       }(),
       "grid.trunk"},
      {[] {
         v1::CurveRequest r = Request(4);
         r.mutable_grid()->set_seed(UINT64_MAX - 2);  // trunk 3 would be seed 0
         return r;
       }(),
       "grid.seed"},
  };
  for (const auto& c : cases) {
    int events = 0;
    absl::Status status =
        curves_->RunCurve(Caller{}, c.request, [&](const v1::CurveEvent&) { return ++events; })
            .status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status;
    EXPECT_EQ(events, 0);
  }
  // The client's mistakes, counted apart from overload ("rejected"), which
  // the error-ratio alert counts.
  EXPECT_EQ(Curves("invalid"), 5);
  EXPECT_EQ(Grids("invalid"), 1);  // the one whose first trunk was planned
  EXPECT_EQ(Curves("rejected"), 0);
  EXPECT_EQ(Grids("rejected"), 0);
}

TEST_F(CurveServiceTest, AClientThatGoesAwayCancelsTheCurve) {
  // Slow replicas that take one call at a time: the client leaves with the
  // other trunks' jobs in flight and waiting for a replica. (A fake call
  // does not see its cancel and ends well; a job waiting for a replica is
  // refused as cancelled.)
  for (int i : {0, 1}) replicas_.script(i).delay = absl::Milliseconds(50);
  ReplicaPool::Options one_call = replicas_.PoolOptions();
  one_call.max_inflight_per_replica = 1;
  executor_.reset();
  auto pool = ReplicaPool::Create(one_call, nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  pool_ = std::move(*pool);
  executor_ = std::make_unique<GridExecutor>(pool_.get(), &cache_, &metrics_, ExecutorOptions{});
  Start();
  int events = 0;
  absl::Status status = curves_->RunCurve(Caller{}, Request(20), [&](const v1::CurveEvent& e) {
    ++events;
    return !e.has_progress();  // the first progress event finds the client gone
  }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(events, 21);
  // A failed write: the client cancelled or hung up, as when its cancel is
  // seen first ("abandoned" is a client that stopped reading).
  EXPECT_EQ(Curves("cancelled"), 1);
  EXPECT_EQ(Curves("abandoned"), 0);
  EXPECT_EQ(Curves("ok"), 0);

  // A client that cancels (gRPC's cancel, seen through Caller::gone).
  std::atomic<bool> gone{false};
  Caller caller;
  caller.gone = [&] { return gone.load(); };
  status = curves_->RunCurve(caller, Request(20), [&](const v1::CurveEvent& e) {
    if (e.has_progress()) gone = true;
    return true;
  }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_EQ(Curves("cancelled"), 2);  // the failed write's, and this one
  EXPECT_EQ(Curves("abandoned"), 0);
  // The jobs the client's leaving stopped are cancelled, not failed, and
  // their evaluations are not failures' waste (the dashboard's "jobs
  // failed" and "wasted share" showed every curve a client left as trouble).
  EXPECT_EQ(Count("dgrid_orchestrator_jobs_total", "failed"), 0);
  EXPECT_EQ(Count("dgrid_orchestrator_model_evals_total", "wasted", "use"), 0);
  // Else nothing was in flight when the client left, and the two above
  // held vacuously.
  EXPECT_GT(Count("dgrid_orchestrator_jobs_total", "cancelled"), 0);
}

// A client gone before the curve's plan went out: trunk 0's grid, admitted,
// is counted cancelled, as a grid stream's is (it was counted nowhere).
TEST_F(CurveServiceTest, AFirstGridNeverRunIsCountedCancelled) {
  Start();
  const absl::Status status =
      curves_->RunCurve(Caller{}, Request(3), [](const v1::CurveEvent&) { return false; }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_EQ(Curves("cancelled"), 1);
  EXPECT_EQ(Grids("cancelled"), 1);
  EXPECT_EQ(replicas_.log(0).branches.size() + replicas_.log(1).branches.size(), 0u);
}

// The plot's words say what was run: the sampler where not DDIM (an Euler
// ancestral curve and a DDIM one carried the same words), the negative
// prompt, and a switch of the negative prompt alone (it read as a switch to
// the same prompt).
TEST(CurveWordsTest, TheTitleAndSubtitleSayWhatRan) {
  GridPlanSpec plan;
  plan.model = "emoji";
  plan.prompt = "rocket";
  plan.negative_prompt = "ghost";
  plan.switch_prompt = "rocket";
  plan.switch_negative_prompt = "red apple";
  plan.trunk_noise = true;
  plan.steps = 10;
  plan.eta = 1;
  plan.guidance = 4;
  plan.sampler = Sampler::kEulerAncestral;
  EXPECT_EQ(CurveTitle(plan, 2),
            "emoji · \"rocket\" → \"rocket\", negative \xE2\x80\x9C"
            "red apple\xE2\x80\x9D · 2 trunks");
  EXPECT_EQ(CurveSubtitle(plan, 5, 2),
            "10 steps · Euler ancestral · eta 1 · guidance 4 · negative \xE2\x80\x9C"
            "ghost\xE2\x80\x9D · "
            "the trunk's noise · seeds 5…6");
  plan.spacing = Spacing::kTrailing;
  EXPECT_EQ(CurveSubtitle(plan, 5, 2).rfind("10 steps (trailing) · Euler ancestral · ", 0), 0u)
      << CurveSubtitle(plan, 5, 2);
  plan.spacing = Spacing::kLeading;
  plan.sampler = Sampler::kDdim;
  plan.negative_prompt.clear();
  plan.switch_prompt.clear();
  plan.switch_negative_prompt.clear();
  plan.trunk_noise = false;
  plan.branches = 4;
  EXPECT_EQ(CurveTitle(plan, 100), "emoji · \"rocket\" · 100 trunks");
  EXPECT_EQ(CurveSubtitle(plan, 1000, 100),
            "10 steps · eta 1 · guidance 4 · 4 branches per row · seeds 1000…1099");
}

// A curve admitted and never run (an HTTP client gone before its answer's
// first byte): the curve and trunk 0's grid are counted cancelled, once
// each; neither was counted.
TEST_F(CurveServiceTest, ACurveAdmittedAndNeverRunIsCountedCancelled) {
  Start();
  absl::StatusOr<std::unique_ptr<AdmittedCurve>> admitted = curves_->Admit(Caller{}, Request(3));
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  admitted->reset();
  EXPECT_EQ(Curves("cancelled"), 1);
  EXPECT_EQ(Grids("cancelled"), 1);
  EXPECT_EQ(replicas_.log(0).branches.size() + replicas_.log(1).branches.size(), 0u);
}

// A judge call the pool refuses because its curve was cancelled is the
// curve's end, counted as a cancelled job: it was counted failed, and the
// client-leaves test above saw it one run in thirty.
TEST_F(CurveServiceTest, AJudgeCallOfACancelledCurveCountsCancelled) {
  GridCancel cancel;
  cancel.Cancel();
  GridPlanSpec plan;
  plan.model = "fake";
  v1::Grid grid;
  grid.mutable_trunk()->set_png("not judged");
  absl::StatusOr<TrunkObservation> judged =
      JudgeGrid(pool_.get(), &metrics_, plan, grid, {2}, absl::Now() + absl::Seconds(30),
                kJudgeCallTimeout, &cancel);
  EXPECT_EQ(judged.status().code(), absl::StatusCode::kCancelled) << judged.status();
  EXPECT_EQ(Count("dgrid_orchestrator_jobs_total", "cancelled"), 1);
  EXPECT_EQ(Count("dgrid_orchestrator_jobs_total", "failed"), 0);
}

// A Judge call on a wedged replica that still answers health checks goes to
// another at its own limit. (One whose replica stops answering them:
// curve_process_test, as a fake call cannot be cancelled.)
TEST_F(CurveServiceTest, AJudgeCallOnAWedgedReplicaMovesOnAtItsLimit) {
  // Both idle, the pool takes the first by address: it answers in 30 s.
  const int slow = replicas_.address(0) < replicas_.address(1) ? 0 : 1;
  replicas_.script(slow).judge_delay = absl::Seconds(30);
  pool_->CheckHealthNow();  // both replicas' models known
  GridPlanSpec plan;
  plan.model = "fake";
  plan.model_version = "1";
  v1::Grid grid;
  absl::StatusOr<std::string> png = EncodePng(std::vector<uint8_t>(4, 200), 2, 2, 1);
  ASSERT_TRUE(png.ok()) << png.status();
  grid.mutable_trunk()->set_png(*png);
  grid.add_rows()->add_cells()->set_png(*png);
  GridCancel cancel;
  const absl::Time start = absl::Now();
  absl::StatusOr<TrunkObservation> judged =
      JudgeGrid(pool_.get(), &metrics_, plan, grid, {2}, absl::Now() + absl::Seconds(60),
                absl::Milliseconds(300), &cancel);
  ASSERT_TRUE(judged.ok()) << judged.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(replicas_.log(slow).judged_images, 2);  // asked first
  EXPECT_EQ(replicas_.log(1 - slow).judged_images, 2);
  EXPECT_EQ(Count("dgrid_orchestrator_jobs_total", "retried"), 1);
  EXPECT_EQ(Count("dgrid_orchestrator_jobs_total", "ok"), 1);
}

// More concurrent grids than the client may have: trunks wait their turn
// instead of failing.
TEST_F(CurveServiceTest, TrunksWaitForTheClientsGridLimit) {
  OrchestratorLimits limits;
  limits.max_grids_per_client = 2;
  Start(limits, CurveLimits{1000, 8});
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(Caller{}, Request(10), [](const v1::CurveEvent&) { return true; });
  ASSERT_TRUE(curve.ok()) << curve.status();
  EXPECT_EQ(curve->trunks(), 10);
  // Waiting for a place is no refusal: "rejected" grids once fired the
  // grid error-ratio alert for curves that all succeeded.
  EXPECT_EQ(Grids("ok"), 10);
  EXPECT_EQ(Curves("ok"), 1);
  // The trunks wait for each other by design: the curve is timed, not they
  // (the grid latency alert fired on ordinary curves).
  EXPECT_EQ(Timed("dgrid_orchestrator_grid_seconds"), 0u);
  EXPECT_EQ(Timed("dgrid_orchestrator_curve_seconds"), 1u);
  EXPECT_EQ(Grids("rejected"), 0);
}

// Another client's grids take the service's only place when this curve lets
// it go: the curve waits for it instead of failing with its finished trunks
// thrown away.
TEST_F(CurveServiceTest, ARunningCurveWaitsForPlacesOtherClientsHold) {
  OrchestratorLimits limits;
  limits.max_concurrent_grids = 1;
  Start(limits, CurveLimits{1000, 1});
  // A slow judge: the curve's worker, its trunks drawn, waits for the judge
  // to take them while holding no place, and the other client takes it.
  for (int i = 0; i < 2; ++i) replicas_.script(i).judge_delay = absl::Milliseconds(100);
  Caller mine, other;
  mine.client = "curve";
  other.client = "other";
  std::atomic<bool> stop{false};
  std::atomic<int> taken{0};
  std::thread competitor;  // started at the plan event, if the curve gets that far
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(mine, Request(6), [&](const v1::CurveEvent& e) {
        if (e.has_plan()) {  // trunk 0 holds the place now
          competitor = std::thread([&] {
            while (!stop) {
              if (auto held = grids_->Admit(other, Request(1).grid()); held.ok()) {
                ++taken;
                absl::SleepFor(absl::Milliseconds(150));  // held, then let go
              } else {
                absl::SleepFor(absl::Milliseconds(1));
                continue;
              }
              absl::SleepFor(absl::Milliseconds(60));  // the curve's turn
            }
          });
        }
        return true;
      });
  stop = true;
  if (competitor.joinable()) competitor.join();
  ASSERT_TRUE(curve.ok()) << curve.status();
  EXPECT_EQ(curve->trunks(), 6);
  EXPECT_GE(taken.load(), 1) << "the other client never took the place; nothing was tested";
  EXPECT_EQ(Curves("ok"), 1);
}

// Another client holds the service's only place for good: a running curve
// waits CurveLimits::max_place_wait for it, then fails with the refusal
// (overload); with the caller's deadline sooner, at the deadline, counted as
// cancelled. With two workers, so that one waits on the other's grids
// before both wait on the other client's.
TEST_F(CurveServiceTest, ACurveWaitsForAPlaceOnlySoLong) {
  OrchestratorLimits limits;
  limits.max_concurrent_grids = 1;
  CurveLimits curve_limits{1000, 2};
  curve_limits.max_place_wait = absl::Milliseconds(300);
  Start(limits, curve_limits);
  for (int i = 0; i < 2; ++i) replicas_.script(i).judge_delay = absl::Milliseconds(100);
  Caller other;
  other.client = "other";
  // Takes the place as soon as trunk 0 lets it go, and keeps it.
  std::atomic<bool> held{false};
  auto run = [&](Caller mine) {
    std::atomic<bool> stop{false};
    held = false;
    std::thread holder;
    absl::StatusOr<v1::CurveResult> curve =
        curves_->RunCurve(mine, Request(12), [&](const v1::CurveEvent& e) {
          if (e.has_plan()) {
            holder = std::thread([&] {
              while (!stop) {
                auto place = grids_->Admit(other, Request(1).grid());
                if (!place.ok()) {
                  absl::SleepFor(absl::Milliseconds(1));
                  continue;
                }
                held = true;
                while (!stop) absl::SleepFor(absl::Milliseconds(5));
              }
            });
          }
          return true;
        });
    stop = true;
    if (holder.joinable()) holder.join();
    return curve.status();
  };
  Caller mine;
  mine.client = "curve";
  const absl::Time started = absl::Now();
  absl::Status status = run(mine);
  EXPECT_TRUE(held) << "the other client never took the place; nothing was tested";
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_NE(status.message().find("waited 300ms for a place"), std::string::npos) << status;
  EXPECT_GE(absl::Now() - started, absl::Milliseconds(300));
  EXPECT_EQ(Curves("rejected"), 1);

  curve_limits.max_place_wait = absl::Minutes(5);
  Start(limits, curve_limits);
  mine.deadline = absl::Now() + absl::Seconds(3);
  status = run(mine);
  EXPECT_TRUE(held) << "the other client never took the place; nothing was tested";
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_NE(status.message().find("before the caller's deadline"), std::string::npos) << status;
  EXPECT_LT(absl::Now() - mine.deadline, absl::Seconds(2));
  EXPECT_EQ(Curves("cancelled"), 1);
}

// A client at its own grid limit is throttled; the service at its limit
// rejects, which the grid error-ratio alert counts. Behind an Ingress every
// browser is one client, and its limit alone is no outage.
TEST_F(CurveServiceTest, AClientsLimitIsThrottledAndTheServicesRejected) {
  OrchestratorLimits limits;
  limits.max_grids_per_client = 1;
  limits.max_concurrent_grids = 2;
  Start(limits);
  Caller a, b, c;
  a.client = "a";
  b.client = "b";
  c.client = "c";
  v1::GridRequest request = Request(1).grid();
  auto first = grids_->Admit(a, request);
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = grids_->Admit(a, request);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Grids("throttled"), 1);
  EXPECT_EQ(Grids("rejected"), 0);
  auto second = grids_->Admit(b, request);
  ASSERT_TRUE(second.ok()) << second.status();
  auto third = grids_->Admit(c, request);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Grids("rejected"), 1);
  EXPECT_EQ(Grids("throttled"), 1);
}

// A rolling update under a running curve: the replica the pool asks for its
// models first now serves version 2. The trunks after the first still run on
// version 1, on the other replica; a curve over two versions would be no
// model's curve.
TEST_F(CurveServiceTest, EveryTrunkRunsOnTheFirstTrunksModelVersion) {
  Start(OrchestratorLimits{}, CurveLimits{1000, 1});
  const int updated = replicas_.address(0) < replicas_.address(1) ? 0 : 1;
  auto update = [&] {
    replicas_.StopServing(updated);
    pool_->CheckHealthNow();
    replicas_.ServeVersion(updated, "2");
    pool_->CheckHealthNow();
  };
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(Caller{}, Request(4), [&](const v1::CurveEvent& e) {
        if (e.has_plan()) update();  // trunk 0 is planned; no trunk has run
        return true;
      });
  ASSERT_TRUE(curve.ok()) << curve.status();
  EXPECT_TRUE(replicas_.log(updated).branches.empty())
      << "trunks ran on version 2 of a curve started on version 1";
  EXPECT_FALSE(replicas_.log(1 - updated).branches.empty());
}

// A caller's own deadline is the caller's doing, counted as cancelled: as
// "failed" it fired the grid error-ratio alert for clients with deadlines.
TEST_F(CurveServiceTest, TheCallersDeadlineCountsAsCancelled) {
  Start();
  for (int i : {0, 1}) replicas_.script(i).delay = absl::Milliseconds(500);
  Caller caller;
  caller.deadline = absl::Now() + absl::Milliseconds(200);
  const absl::Status status =
      curves_->RunCurve(caller, Request(4), [](const v1::CurveEvent&) { return true; }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_EQ(Curves("cancelled"), 1);
  EXPECT_EQ(Curves("failed"), 0);
  EXPECT_GE(Grids("cancelled"), 1);
  EXPECT_EQ(Grids("failed"), 0);
}

// The same deadline passed while a text model's prompts were tokenized, in
// planning: the first grid counts cancelled, and so does the curve (it was
// "failed").
TEST_F(CurveServiceTest, ADeadlinePassedWhilePlanningCountsAsCancelled) {
  FakeReplicas text(1);
  text.script(0).text = true;
  text.script(0).tokenize_delay = absl::Seconds(3);
  auto pool = ReplicaPool::Create(text.PoolOptions(), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  GridExecutor executor(pool->get(), &cache_, &metrics_, ExecutorOptions{});
  GridService grids(pool->get(), &executor, &metrics_, OrchestratorLimits{}, "");
  CurveService curves(&grids, pool->get(), &metrics_, CurveLimits{});
  v1::CurveRequest request = Request(4);
  request.mutable_grid()->set_prompt("a cat");
  Caller caller;
  caller.deadline = absl::Now() + absl::Milliseconds(300);
  const absl::Status status =
      curves.RunCurve(caller, request, [](const v1::CurveEvent&) { return true; }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_EQ(Curves("cancelled"), 1);
  EXPECT_EQ(Curves("failed"), 0);
  EXPECT_EQ(Grids("cancelled"), 1);
}

// A later trunk's planning failing for a moment (a replica's Tokenize
// answering UNAVAILABLE as it restarts) waits and tries again, as a full
// service does: the curve failed, throwing its finished trunks away.
TEST_F(CurveServiceTest, ALaterTrunkThatCannotBePlannedForAMomentWaits) {
  FakeReplicas text(1);
  text.script(0).text = true;
  text.script(0).tokenize_code = grpc::StatusCode::UNAVAILABLE;
  text.script(0).tokenize_message = "restarting";
  text.script(0).tokenize_fail_from = 1;  // the curve's own admission plans trunk 0
  text.script(0).tokenize_fail_calls = 2;
  auto pool = ReplicaPool::Create(text.PoolOptions(), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  GridExecutor executor(pool->get(), &cache_, &metrics_, ExecutorOptions{});
  GridService grids(pool->get(), &executor, &metrics_, OrchestratorLimits{}, "");
  CurveService curves(&grids, pool->get(), &metrics_, CurveLimits{1000, 1});
  v1::CurveRequest request = Request(3);
  request.mutable_grid()->set_prompt("a cat");
  absl::StatusOr<v1::CurveResult> curve =
      curves.RunCurve(Caller{}, request, [](const v1::CurveEvent&) { return true; });
  ASSERT_TRUE(curve.ok()) << curve.status();
  EXPECT_EQ(curve->trunks(), 3);
  EXPECT_EQ(Curves("ok"), 1);
  EXPECT_EQ(Grids("failed"), 0);  // the refusals it waited out count nowhere
}

// Past admission, a replica refusing the work is config or version skew: a
// failure the error-ratio alert must see, not the caller's "invalid".
TEST_F(CurveServiceTest, AReplicaRefusingAnAdmittedGridIsAFailure) {
  Start();
  for (int i : {0, 1}) {
    replicas_.script(i).fail_first = 1000;
    replicas_.script(i).fail_code = grpc::StatusCode::INVALID_ARGUMENT;
  }
  GridCancel cancel;
  absl::StatusOr<v1::Grid> grid = grids_->RunGrid(
      Caller{}, Request(2).grid(), [](const v1::GridEvent&) { return true; }, &cancel, false);
  ASSERT_FALSE(grid.ok());
  EXPECT_EQ(Grids("failed"), 1) << grid.status();
  EXPECT_EQ(Grids("invalid"), 0);
}

// One trunk's failure cancels the curve's other grids at once; their
// cancellations must not hide the cause, which the client reads as its own
// doing (CANCELLED) and the error-ratio alert would not see.
TEST_F(CurveServiceTest, ATrunksFailureIsTheCurvesOutcomeNotItsSiblingsCancellation) {
  Start();
  replicas_.script(0).fail_first = 1000;
  replicas_.script(0).fail_code = grpc::StatusCode::FAILED_PRECONDITION;
  replicas_.script(1).delay = absl::Milliseconds(300);  // the siblings, in flight
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(Caller{}, Request(8), [](const v1::CurveEvent&) { return true; });
  ASSERT_FALSE(curve.ok());
  EXPECT_EQ(curve.status().code(), absl::StatusCode::kFailedPrecondition) << curve.status();
  EXPECT_EQ(Curves("failed"), 1);
  EXPECT_EQ(Curves("cancelled"), 0);
}

// The orchestrator builds judge calls: a replica refusing one as invalid
// (config skew) is a failure, not the client's invalid request.
TEST_F(CurveServiceTest, AReplicaRefusingAJudgeCallIsAFailureNotTheClientsMistake) {
  Start();
  for (int i : {0, 1}) {
    replicas_.script(i).judge_fail_first = 1000;
    replicas_.script(i).judge_fail_code = grpc::StatusCode::INVALID_ARGUMENT;
  }
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(Caller{}, Request(2), [](const v1::CurveEvent&) { return true; });
  ASSERT_FALSE(curve.ok());
  EXPECT_EQ(curve.status().code(), absl::StatusCode::kInternal) << curve.status();
  EXPECT_NE(curve.status().message().find("refused a request this orchestrator made "
                                          "(INVALID_ARGUMENT)"),
            std::string::npos)
      << curve.status();
  EXPECT_EQ(Curves("failed"), 1);
  EXPECT_EQ(Curves("invalid"), 0);
}

// A judge call that fails on one replica is tried on another, and counted
// as jobs are (retries and failed judge calls used to reach no metric).
TEST_F(CurveServiceTest, JudgeRetriesAreCounted) {
  Start();
  for (int i : {0, 1}) replicas_.script(i).judge_fail_first = 1;
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(Caller{}, Request(3), [](const v1::CurveEvent&) { return true; });
  ASSERT_TRUE(curve.ok()) << curve.status();
  // Each replica's first judge call failed once: two retries.
  EXPECT_EQ(Count("dgrid_orchestrator_jobs_total", "retried"), 2);
  double retries = 0;
  for (const prometheus::MetricFamily& family : metrics_.registry()->Collect()) {
    if (family.name == "dgrid_orchestrator_retries_total") {
      retries = family.metric.at(0).counter.value;
    }
  }
  EXPECT_EQ(retries, 2);
}

// A replica whose judge calls time out (the call's own 60 s bound, the
// curve's deadline far ahead) is a slow replica: the calls go to the other
// one and the curve stands.
TEST_F(CurveServiceTest, AJudgeCallThatTimesOutIsTriedOnAnotherReplica) {
  Start();
  replicas_.script(0).judge_fail_first = 1000;
  replicas_.script(0).judge_fail_code = grpc::StatusCode::DEADLINE_EXCEEDED;
  ExpectReplicaOneJudgesEveryImage();
}

// A malformed judge answer is that replica's bad output, tried elsewhere as
// a job's is.
TEST_F(CurveServiceTest, AMalformedJudgeAnswerIsTriedOnAnotherReplica) {
  Start();
  replicas_.script(0).judge_answers_nothing = true;
  ExpectReplicaOneJudgesEveryImage();
}

// A label the judge head lacks is that replica's bad output too: it would
// count as a change of label, and reach the client's trunk labels.
TEST_F(CurveServiceTest, AJudgeLabelTheHeadLacksIsTriedOnAnotherReplica) {
  Start();
  replicas_.script(0).judge_label = 7;  // "level" has 2
  ExpectReplicaOneJudgesEveryImage();
}

// While no trunk finishes, the progress so far goes out again, so that a
// proxy's read timeout does not cut a slow curve's stream.
TEST_F(CurveServiceTest, ASlowCurveSendsItsProgressAgain) {
  CurveLimits limits{1000, 1};
  limits.keepalive = absl::Milliseconds(50);
  Start(OrchestratorLimits{}, limits);
  for (int i : {0, 1}) replicas_.script(i).delay = absl::Milliseconds(400);
  std::vector<int> done;
  absl::StatusOr<v1::CurveResult> curve =
      curves_->RunCurve(Caller{}, Request(2), [&](const v1::CurveEvent& e) {
        if (e.has_progress()) done.push_back(e.progress().trunks_done());
        return true;
      });
  ASSERT_TRUE(curve.ok()) << curve.status();
  ASSERT_FALSE(done.empty());
  EXPECT_EQ(done.front(), 0) << "no progress before the first trunk finished";
  EXPECT_EQ(done.back(), 2);
  EXPECT_TRUE(std::is_sorted(done.begin(), done.end()));
}

// A client that stops reading: the curve's last write blocks until the
// transport is aborted, which the write-stall watch does, as for a grid.
// Before, nothing watched a curve's writes and its thread waited for ever.
TEST_F(CurveServiceTest, AClientWhoseWriteBlocksIsCancelled) {
  OrchestratorLimits limits;
  limits.max_write_stall = absl::Milliseconds(300);
  Start(limits);
  testing::AbortLatch latch;
  Caller caller;
  caller.abort = latch.Abort();
  const absl::Time start = absl::Now();
  absl::Status status = curves_->RunCurve(caller, Request(3), [&](const v1::CurveEvent& e) {
    if (!e.has_curve()) return true;
    latch.Wait();
    return false;
  }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_NE(status.message().find("blocked for more than"), std::string::npos) << status;
  EXPECT_TRUE(latch.aborted());
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_EQ(Curves("abandoned"), 1);
}

}  // namespace
}  // namespace dgrid
