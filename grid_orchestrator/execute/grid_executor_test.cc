// The executor against fake replicas behind the generated StubInterface:
// retry policy, validation of replica output, counting of evaluations,
// version pinning and fairness keys. No model, no sockets but the replicas'
// health servers.
#include "grid_orchestrator/execute/grid_executor.h"

#include <functional>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/png_image.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grid_orchestrator/testing/fake_denoiser.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using testing::FakeReplicas;

class GridExecutorTest : public ::testing::Test {
 protected:
  // A 2-row x 2-column grid of 10 steps, one cell per job.
  static GridPlanSpec Plan(const std::string& version = "1") {
    v1::GridRequest request;
    request.set_seed(3);
    request.mutable_steps()->set_value(10);
    request.mutable_branches()->set_value(2);
    request.add_branch_steps(0);
    request.add_branch_steps(5);
    absl::StatusOr<GridPlanSpec> plan =
        PlanGrid(request, FakeReplicas::Model("fake", version), PlanLimits{});
    EXPECT_TRUE(plan.ok()) << plan.status();
    return *plan;
  }

  // `before` runs on the pool before the grid (a health round, say).
  absl::StatusOr<v1::Grid> Run(FakeReplicas& replicas, const GridPlanSpec& plan,
                               std::vector<v1::GridEvent>* events = nullptr,
                               const std::function<void(ReplicaPool&)>& before = {}) {
    auto pool = ReplicaPool::Create(replicas.PoolOptions(), nullptr);
    if (!pool.ok()) return pool.status();
    if (before) before(**pool);
    PrefixCache cache(0);
    ExecutorOptions options;
    options.cells_per_job = 1;
    options.retry_backoff = absl::Milliseconds(1);
    GridExecutor executor(pool->get(), &cache, nullptr, options);
    GridCancel cancel;
    std::mutex mu;
    return executor.Run(
        plan, absl::Now() + absl::Seconds(30),
        [&](const v1::GridEvent& e) {
          std::lock_guard<std::mutex> lock(mu);
          if (events) events->push_back(e);
        },
        &cancel);
  }

  // Grids on one fake replica through one executor, sharing a 16 MiB cache.
  class CachedGrids {
   public:
    CachedGrids() {
      auto pool = ReplicaPool::Create(replicas_.PoolOptions(), nullptr);
      EXPECT_TRUE(pool.ok()) << pool.status();
      if (pool.ok()) pool_ = std::move(*pool);
    }
    absl::StatusOr<v1::Grid> Run(const GridPlanSpec& plan,
                                 std::vector<v1::GridEvent>* events = nullptr) {
      if (!pool_) return absl::InternalError("no pool");
      GridExecutor executor(pool_.get(), &cache_, nullptr, ExecutorOptions{});
      GridCancel cancel;
      return executor.Run(
          plan, absl::Now() + absl::Seconds(30),
          [events](const v1::GridEvent& e) {
            if (events) events->push_back(e);
          },
          &cancel);
    }
    FakeReplicas& replicas() { return replicas_; }

   private:
    FakeReplicas replicas_{1};
    std::unique_ptr<ReplicaPool> pool_;
    PrefixCache cache_{size_t{16} << 20};
  };

  static int Calls(FakeReplicas& replicas, int i) {
    return static_cast<int>(replicas.log(i).branches.size());
  }
};

TEST_F(GridExecutorTest, RunsEveryCellOnceAndCountsThePlansEvaluations) {
  FakeReplicas replicas(1);
  const GridPlanSpec plan = Plan();
  std::vector<v1::GridEvent> events;
  absl::StatusOr<v1::Grid> grid = Run(replicas, plan, &events);
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(grid->model_evals(), plan.model_evals);
  // Trunk + 4 cells.
  EXPECT_EQ(Calls(replicas, 0), 5);
  int cells = 0;
  for (const auto& e : events) cells += e.has_cell();
  EXPECT_EQ(cells, 5);
}

// With the trunk's noise, a switch to the prompt in force leaves every cell
// the trunk: they are not run, and each shows the trunk's final.
TEST_F(GridExecutorTest, ACellThatIsTheTrunkIsNotRunAgain) {
  v1::GridRequest request;
  request.set_seed(3);
  request.set_prompt("class2");
  request.set_switch_prompt("class2");
  request.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  request.mutable_steps()->set_value(10);
  request.add_branch_steps(0);
  request.add_branch_steps(5);
  absl::StatusOr<GridPlanSpec> plan = PlanGrid(request, FakeReplicas::Model("fake", "1"), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  FakeReplicas replicas(1);
  std::vector<v1::GridEvent> events;
  absl::StatusOr<v1::Grid> grid = Run(replicas, *plan, &events);
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(Calls(replicas, 0), 1);  // the trunk alone
  EXPECT_EQ(grid->model_evals(), 10);
  int cells = 0;
  for (const auto& e : events) cells += e.has_cell();
  EXPECT_EQ(cells, 3);
  for (const v1::GridRow& row : grid->rows()) {
    ASSERT_EQ(row.cells_size(), 1);
    EXPECT_EQ(row.cells(0).png(), grid->trunk().png());
  }
  // A real switch runs its cells.
  request.set_switch_prompt("class3");
  plan = PlanGrid(request, FakeReplicas::Model("fake", "1"), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  FakeReplicas switched(1);
  ASSERT_TRUE(Run(switched, *plan).ok());
  EXPECT_EQ(Calls(switched, 0), 3);
}

TEST_F(GridExecutorTest, ABadTrajectoryIndexFailsTheAttemptNotTheProcess) {
  // Before: columns.at() threw inside a job thread, and std::terminate
  // ended the orchestrator.
  FakeReplicas replicas(2);
  replicas.script(0).bad_trajectory_index = 7;
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
  ASSERT_TRUE(grid.ok()) << grid.status();
  // The healthy replica finished every cell.
  for (const auto& row : grid->rows()) {
    for (const auto& cell : row.cells()) EXPECT_EQ(cell.source(), replicas.address(1));
  }
}

TEST_F(GridExecutorTest, OnlyBadReplicasFailTheGridWithAMessage) {
  FakeReplicas replicas(1);
  replicas.script(0).bad_trajectory_index = 7;
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
  ASSERT_FALSE(grid.ok());
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(grid.status().message().find("trajectory 7"), std::string::npos)
      << grid.status();
}

// A stream that ended well without its finals once passed as a finished
// job, and assembling the grid then failed as the client's fault; an image
// that was no PNG was cached and failed every later grid on its path.
TEST_F(GridExecutorTest, MissingOrBrokenResultsAreBadOutputRetriedElsewhere) {
  const struct {
    const char* name;
    std::function<void(testing::FakeScript&)> spoil;
    const char* says;
    bool spoil_captures = false;
  } cases[] = {
      {"no finals", [](testing::FakeScript& s) { s.drop_finals = true; },
       "the stream ended before all its finals"},
      {"not a PNG", [](testing::FakeScript& s) { s.final_png = "GIF89a"; },
       "whose image is not a PNG"},
      // Cached, it would fail every later figure on its path as the client's
      // fault, and make a curve's divergence NaN.
      {"the wrong size",
       [](testing::FakeScript& s) { s.final_png = *EncodePng(std::vector<uint8_t>(9), 3, 3, 1); },
       "whose image is 3x3x1, not the model's 2x2x1"},
      // A trunk without its captures: its rows never started, and the grid
      // failed at its end as if the client's PNG were bad.
      {"no captures", [](testing::FakeScript& s) { s.drop_captures = true; },
       "sent the final without the capture at step 0", /*spoil_captures=*/true},
      {"a capture skipped", [](testing::FakeScript& s) { s.skip_capture_step = 0; },
       "sent the capture at step 5 before the one at step 0", /*spoil_captures=*/true},
  };
  for (const auto& c : cases) {
    FakeReplicas replicas(2);
    c.spoil(replicas.script(0));
    absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
    ASSERT_TRUE(grid.ok()) << c.name << ": " << grid.status();
    EXPECT_EQ(grid->trunk().source(), replicas.address(1)) << c.name;
    for (const auto& row : grid->rows()) {
      for (const auto& cell : row.cells()) {
        // A branch job asks for no captures: its cells are good anywhere.
        if (c.spoil_captures) continue;
        EXPECT_EQ(cell.source(), replicas.address(1)) << c.name;
      }
    }
    // With no good replica the grid fails as the server's fault, saying why.
    FakeReplicas bad(1);
    c.spoil(bad.script(0));
    absl::StatusOr<v1::Grid> failed = Run(bad, Plan());
    ASSERT_FALSE(failed.ok()) << c.name;
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal) << c.name;
    EXPECT_NE(failed.status().message().find(c.says), std::string::npos) << failed.status();
  }
}

// A capture whose latent has the right bytes but the wrong shape would be
// cached and sent back as a start latent, which every denoiser refuses with
// INVALID_ARGUMENT, blamed on the client: it is the replica's bad output.
TEST_F(GridExecutorTest, AMisshapenCaptureLatentIsBadOutput) {
  FakeReplicas replicas(2);
  replicas.script(0).flat_capture_latents = true;
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(grid->trunk().source(), replicas.address(1));
  FakeReplicas bad(1);
  bad.script(0).flat_capture_latents = true;
  absl::StatusOr<v1::Grid> failed = Run(bad, Plan());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(failed.status().message().find("a capture's latent.shape must be [1,2,2], got [4]"),
            std::string::npos)
      << failed.status();
}

// A capture sent twice (perhaps with another latent) is bad output, not
// taken: the grid's rows may have started from the first. Each retry resumes
// after the captures taken, so even a replica that repeats every capture
// gets the grid done, each capture taken and shown once.
TEST_F(GridExecutorTest, ARepeatedCaptureIsBadOutputAndTakenOnce) {
  FakeReplicas bad(1);
  bad.script(0).repeat_captures = true;
  std::vector<v1::GridEvent> events;
  absl::StatusOr<v1::Grid> grid = Run(bad, Plan(), &events);
  ASSERT_TRUE(grid.ok()) << grid.status();
  std::vector<int> shown;
  for (const v1::GridEvent& e : events) {
    if (e.has_trunk()) shown.push_back(e.trunk().step());
  }
  EXPECT_EQ(shown, (std::vector<int>{0, 5}));
}

// Every result arrived and was checked, then the stream ended with an error
// that is not retried (UNKNOWN): the job is done and the grid stands.
TEST_F(GridExecutorTest, AnErrorAfterEveryResultDoesNotFailTheGrid) {
  FakeReplicas replicas(1);
  replicas.script(0).end_code = grpc::StatusCode::UNKNOWN;
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(grid->rows_size(), 2);
  // One call per job: nothing was run again.
  EXPECT_EQ(Calls(replicas, 0), 5);
}

// A replica that restarted onto another model version between two health
// rounds still looks like version 1 to the pool. Calls carry the planned
// version: it answers UNAVAILABLE and the work goes to a replica of that
// version, instead of version 2's results being cached under version 1.
TEST_F(GridExecutorTest, AReplicaOnAnotherVersionIsRefusedByTheVersionOnTheWire) {
  FakeReplicas replicas(2);
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan(), nullptr, [&](ReplicaPool& pool) {
    pool.CheckHealthNow();  // both replicas' models known: version 1
    ASSERT_TRUE(pool.Model("fake", "1").ok());
    replicas.script(0).version = "2";  // unseen by the pool until it asks again
  });
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(grid->trunk().source(), replicas.address(1));
  for (const auto& row : grid->rows()) {
    for (const auto& cell : row.cells()) EXPECT_EQ(cell.source(), replicas.address(1));
  }
  for (const v1::BranchRequest& call : replicas.log(1).branches) {
    EXPECT_EQ(call.model_version(), "1");
  }
}

// A grid whose cells and trunk come from the cache but whose trunk images
// do not (there a curve's grid, which caches none; in the explorer a
// promoted cell, which ran as a branch) runs its trunk again for them: its
// rows once came without their x_t and x0.
TEST_F(GridExecutorTest, AFigureMissingTrunkImagesRunsTheTrunkForThem) {
  CachedGrids grids;
  GridPlanSpec cells_only = Plan();
  cells_only.images = GridImages::kCellsOnly;
  ASSERT_TRUE(grids.Run(cells_only).ok());
  const int calls = Calls(grids.replicas(), 0);
  absl::StatusOr<v1::Grid> figure = grids.Run(Plan());
  ASSERT_TRUE(figure.ok()) << figure.status();
  EXPECT_EQ(Calls(grids.replicas(), 0), calls + 1);  // the trunk, for its images alone
  for (const v1::GridRow& row : figure->rows()) {
    EXPECT_FALSE(row.trunk_xt_png().empty()) << "row after step " << row.branch_step();
  }
  // Now cached, they cost nothing the next time.
  ASSERT_TRUE(grids.Run(Plan()).ok());
  EXPECT_EQ(Calls(grids.replicas(), 0), calls + 1);
}

// A trunk whose final is cached runs only as far as the rows it still
// starts: a row added to a cached grid (or a promoted cell's grid) ran the
// trunk to its last step again.
TEST_F(GridExecutorTest, ATrunkWhoseFinalIsCachedRunsOnlyToTheRowsItStarts) {
  auto plan = [](std::vector<int> rows, GridImages images) {
    v1::GridRequest request;
    request.set_seed(3);
    request.mutable_steps()->set_value(50);
    request.mutable_branches()->set_value(1);
    for (int k : rows) request.add_branch_steps(k);
    PlanLimits limits;
    limits.checkpoint_every = 10;
    absl::StatusOr<GridPlanSpec> spec = PlanGrid(request, FakeReplicas::Model("fake", "1"), limits);
    EXPECT_TRUE(spec.ok()) << spec.status();
    spec->images = images;
    return *spec;
  };
  for (const GridImages images : {GridImages::kFigure, GridImages::kCellsOnly}) {
    CachedGrids grids;
    ASSERT_TRUE(grids.Run(plan({0}, images)).ok());
    const size_t calls = grids.replicas().log(0).branches.size();
    absl::StatusOr<v1::Grid> grid = grids.Run(plan({0, 35}, images));
    ASSERT_TRUE(grid.ok()) << grid.status();
    // The new row's 15 steps, and the trunk to step 35, whose latent its
    // Final is: from its checkpoint at 30 where the cache keeps captures,
    // for a figure; else from the start.
    const int resume = images == GridImages::kFigure ? 30 : 0;
    EXPECT_EQ(grid->model_evals(), 15 + 35 - resume);
    const auto& log = grids.replicas().log(0).branches;
    ASSERT_EQ(log.size(), calls + 2);
    const v1::BranchRequest* trunk = nullptr;
    for (size_t i = calls; i < log.size(); ++i) {
      if (log[i].trajectories(0).path().segments_size() == 1) trunk = &log[i];
    }
    ASSERT_NE(trunk, nullptr);
    EXPECT_EQ(trunk->start_step(), resume);
    EXPECT_EQ(trunk->end_step(), 35);
    for (int step : trunk->capture_steps()) EXPECT_LT(step, 35);
    // Curves branch from latents alone: no decoder pass for this trunk.
    EXPECT_EQ(trunk->decode(), images == GridImages::kFigure);
    ASSERT_EQ(grid->rows_size(), 2);
    EXPECT_FALSE(grid->rows(1).cells(0).png().empty());
    EXPECT_FALSE(grid->trunk().png().empty());
  }
}

// A grid from the cache streams its trunk's progress as a live one does, up
// front: the explorer showed its trajectory strip only with the last event.
TEST_F(GridExecutorTest, AGridFromTheCacheStreamsItsTrunksProgress) {
  CachedGrids grids;
  std::vector<v1::GridEvent> live, cached;
  ASSERT_TRUE(grids.Run(Plan(), &live).ok());
  const int calls = Calls(grids.replicas(), 0);
  ASSERT_TRUE(grids.Run(Plan(), &cached).ok());
  EXPECT_EQ(Calls(grids.replicas(), 0), calls);  // all of it from the cache
  auto steps = [](const std::vector<v1::GridEvent>& events) {
    std::vector<int> out;
    for (const v1::GridEvent& e : events) {
      if (e.has_trunk()) out.push_back(e.trunk().step());
    }
    return out;
  };
  ASSERT_FALSE(steps(live).empty());
  EXPECT_EQ(steps(cached), steps(live));
  auto first = std::find_if(cached.begin(), cached.end(), [](const v1::GridEvent& e) {
    return e.has_trunk() || e.has_cell();
  });
  ASSERT_NE(first, cached.end());
  ASSERT_TRUE(first->has_trunk()) << "before the cells";
  EXPECT_EQ(first->trunk().source(), "cache");
  EXPECT_FALSE(first->trunk().xt_png().empty());
}

TEST_F(GridExecutorTest, APermanentErrorIsNotRetried) {
  // Before: permanent limits came back as RESOURCE_EXHAUSTED and every
  // replica was tried, and UNKNOWN was retried too.
  for (grpc::StatusCode code : {grpc::StatusCode::FAILED_PRECONDITION,
                                grpc::StatusCode::UNKNOWN}) {
    FakeReplicas replicas(2);
    for (int i = 0; i < 2; ++i) {
      replicas.script(i).fail_first = 100;
      replicas.script(i).fail_code = code;
    }
    absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
    ASSERT_FALSE(grid.ok());
    EXPECT_EQ(static_cast<int>(grid.status().code()), static_cast<int>(code));
    // The trunk and the step-0 row start at once: at most one call each,
    // none retried.
    EXPECT_LE(Calls(replicas, 0) + Calls(replicas, 1), 3) << code;
  }
}

// The orchestrator makes every request a replica gets: a replica that calls
// one INVALID_ARGUMENT disagrees with it (another version, a lower request
// limit). That reached the client as its own mistake (HTTP 400); it is the
// server's, and another replica may take the request.
TEST_F(GridExecutorTest, AReplicaRefusingTheOrchestratorsRequestIsNotTheClientsMistake) {
  FakeReplicas replicas(2);
  replicas.script(0).fail_first = 100;
  replicas.script(0).fail_code = grpc::StatusCode::INVALID_ARGUMENT;
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(grid->trunk().source(), replicas.address(1));
  FakeReplicas refusing(1);
  refusing.script(0).fail_first = 100;
  refusing.script(0).fail_code = grpc::StatusCode::INVALID_ARGUMENT;
  absl::StatusOr<v1::Grid> failed = Run(refusing, Plan());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  EXPECT_NE(failed.status().message().find(absl::StrCat(
                "replica ", refusing.address(0),
                " refused a request this orchestrator made (INVALID_ARGUMENT): ")),
            std::string::npos)
      << failed.status();
}

// Replicas that cancel every call (a transport cut, a replica's own
// cancel) fail the grid as UNAVAILABLE: it failed CANCELLED, which the
// client and the metrics read as the client's own cancel.
TEST_F(GridExecutorTest, ReplicasThatCancelEveryCallAreUnavailableNotTheClientsCancel) {
  FakeReplicas replicas(2);
  for (int i = 0; i < 2; ++i) {
    replicas.script(i).fail_first = 100;
    replicas.script(i).fail_code = grpc::StatusCode::CANCELLED;
  }
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
  ASSERT_FALSE(grid.ok());
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kUnavailable) << grid.status();
}

TEST_F(GridExecutorTest, ATransientErrorMovesToAnotherReplica) {
  for (grpc::StatusCode code : {grpc::StatusCode::UNAVAILABLE,
                                grpc::StatusCode::RESOURCE_EXHAUSTED,
                                grpc::StatusCode::INTERNAL}) {
    FakeReplicas replicas(2);
    replicas.script(0).fail_first = 100;
    replicas.script(0).fail_code = code;
    absl::StatusOr<v1::Grid> grid = Run(replicas, Plan());
    ASSERT_TRUE(grid.ok()) << grid.status();
    for (const auto& row : grid->rows()) {
      for (const auto& cell : row.cells()) EXPECT_EQ(cell.source(), replicas.address(1));
    }
  }
}

TEST_F(GridExecutorTest, EvaluationsOfFailedAttemptsCount) {
  // Before: Grid.model_evals counted finals only, so retried work vanished.
  FakeReplicas replicas(1);
  replicas.script(0).fail_first = 1;  // the first call (a cell of row 0, which needs no capture) fails
  replicas.script(0).evals_before_failing = 7;
  const GridPlanSpec plan = Plan();
  absl::StatusOr<v1::Grid> grid = Run(replicas, plan);
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(grid->model_evals(), plan.model_evals + 7);
}

// A trunk attempt that fails after its captures: the steps up to the last
// capture were used (the retry resumes there), only those past it wasted.
TEST_F(GridExecutorTest, StepsUpToAFailedTrunksLastCaptureAreUsedNotWasted) {
  FakeReplicas replicas(1);
  replicas.script(0).fail_first = 1;  // the first call: the trunk's, no row leaves at step 0
  replicas.script(0).captures_before_failing = true;  // steps 3 and 6
  replicas.script(0).evals_before_failing = 8;
  auto pool = ReplicaPool::Create(replicas.PoolOptions(), nullptr);
  ASSERT_TRUE(pool.ok()) << pool.status();
  PrefixCache cache(0);
  OrchestratorMetrics metrics;
  ExecutorOptions options;
  options.cells_per_job = 1;
  options.retry_backoff = absl::Milliseconds(1);
  GridExecutor executor(pool->get(), &cache, &metrics, options);
  GridCancel cancel;
  v1::GridRequest request;
  request.set_seed(3);
  request.mutable_steps()->set_value(10);
  request.mutable_branches()->set_value(2);
  request.add_branch_steps(3);
  request.add_branch_steps(6);
  absl::StatusOr<GridPlanSpec> plan =
      PlanGrid(request, FakeReplicas::Model("fake", "1"), PlanLimits{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  absl::StatusOr<v1::Grid> grid =
      executor.Run(*plan, absl::Now() + absl::Seconds(30), [](const v1::GridEvent&) {}, &cancel);
  ASSERT_TRUE(grid.ok()) << grid.status();
  // 8 steps ran in the failed call; the retry resumed at step 6, so 6 of
  // them were the plan's.
  EXPECT_EQ(grid->model_evals(), plan->model_evals + 2);
  auto evals = [&](const std::string& use) {
    for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
      if (family.name != "dgrid_orchestrator_model_evals_total") continue;
      for (const prometheus::ClientMetric& m : family.metric) {
        if (m.label.at(0).value == use) return m.counter.value;
      }
    }
    return -1.0;
  };
  EXPECT_EQ(evals("wasted"), 2);
  EXPECT_EQ(evals("used"), plan->model_evals);
}

TEST_F(GridExecutorTest, AGridIsPinnedToItsModelVersion) {
  // Mid-rollout: replica 1 already serves version 2 of the model.
  FakeReplicas replicas(2);
  replicas.script(1).version = "2";
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan("1"));
  ASSERT_TRUE(grid.ok()) << grid.status();
  EXPECT_EQ(Calls(replicas, 1), 0);
  EXPECT_EQ(Calls(replicas, 0), 5);
}

TEST_F(GridExecutorTest, NoReplicaOfTheVersionIsUnavailable) {
  FakeReplicas replicas(1);
  replicas.script(0).version = "2";
  absl::StatusOr<v1::Grid> grid = Run(replicas, Plan("1"));
  ASSERT_FALSE(grid.ok());
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(grid.status().message().find("version 1"), std::string::npos) << grid.status();
}

TEST_F(GridExecutorTest, EveryCallOfAGridCarriesOneFairnessKeyAndAProgressInterval) {
  FakeReplicas replicas(1);
  ASSERT_TRUE(Run(replicas, Plan()).ok());
  ASSERT_TRUE(Run(replicas, Plan()).ok());
  const auto calls = replicas.log(0).branches;
  ASSERT_GE(calls.size(), 10u);
  // The grids ran one after the other: each one's calls share a key, and
  // the two keys differ.
  std::set<uint64_t> keys;
  for (const auto& call : calls) {
    keys.insert(call.fairness_key());
    EXPECT_GT(call.progress_interval_ms(), 0);
  }
  EXPECT_EQ(keys.size(), 2u);
  EXPECT_NE(calls.front().fairness_key(), calls.back().fairness_key());
}

TEST_F(GridExecutorTest, ACellsOnlyGridAsksForNoStripImagesAndDrawsNoFigure) {
  for (GridImages images : {GridImages::kFigure, GridImages::kCellsOnly}) {
    SCOPED_TRACE(images == GridImages::kFigure ? "figure" : "cells only");
    const bool figure = images == GridImages::kFigure;
    FakeReplicas replicas(1);
    GridPlanSpec plan = Plan();
    plan.images = images;
    absl::StatusOr<v1::Grid> grid = Run(replicas, plan);
    ASSERT_TRUE(grid.ok()) << grid.status();
    int trunk_calls = 0;
    for (const v1::BranchRequest& call : replicas.log(0).branches) {
      EXPECT_TRUE(call.decode());
      if (call.capture_steps_size() == 0) continue;
      ++trunk_calls;
      EXPECT_EQ(call.decode_finals_only(), !figure);
      EXPECT_EQ(call.previews(), figure);
    }
    EXPECT_EQ(trunk_calls, 1);
    EXPECT_EQ(grid->png().empty(), !figure);
    EXPECT_FALSE(grid->trunk().png().empty());
    ASSERT_EQ(grid->rows_size(), 2);
    for (const v1::GridRow& row : grid->rows()) {
      EXPECT_EQ(row.trunk_xt_png().empty(), !figure);
      for (const v1::GridCell& cell : row.cells()) EXPECT_FALSE(cell.png().empty());
    }
  }
}

}  // namespace
}  // namespace dgrid
