// The pair as users run it: 2 real dgrid-denoiser processes and 1
// dgrid-orchestrator on free loopback ports.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <thread>

#include "common/png_image.h"
#include "grid_orchestrator/assemble/divergence.h"
#include "grid_orchestrator/assemble/picture.h"
#include "gtest/gtest.h"
#include "tests/support/pixel_drift.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::kDriftTolerance;
using testing::MaxPixelDrift;
using testing::Stack;
using testing::StackOptions;

struct Streamed {
  grpc::Status status;
  std::vector<v1::GridEvent> events;
  v1::Grid grid;
};

Streamed StreamGrid(v1::Orchestrator::Stub& stub, const v1::GridRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = stub.StreamGrid(&context, request);
  Streamed out;
  v1::GridEvent event;
  while (reader->Read(&event)) {
    if (event.has_grid()) out.grid = event.grid();
    out.events.push_back(event);
  }
  out.status = reader->Finish();
  return out;
}

v1::Grid CreateGrid(v1::Orchestrator::Stub& stub, const v1::GridRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  v1::Grid grid;
  const grpc::Status status = stub.CreateGrid(&context, request, &grid);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return grid;
}

// Runs one path from step 0 to the end on one denoiser, alone.
std::string RunDirect(v1::Denoiser::Stub& stub, const v1::GridPlan& plan, const v1::Path& path,
                      int64_t class_index) {
  v1::BranchRequest request;
  request.set_model(plan.model());
  *request.mutable_sampler() = plan.sampler();
  if (class_index >= 0) request.mutable_conditioning()->set_class_index(class_index);
  *request.add_trajectories()->mutable_path() = path;
  request.set_decode(true);
  grpc::ClientContext context;
  auto reader = stub.Branch(&context, request);
  v1::BranchEvent event;
  std::string png;
  while (reader->Read(&event)) {
    if (event.has_final()) png = event.final().image().png();
  }
  EXPECT_TRUE(reader->Finish().ok());
  return png;
}


class OrchestratorProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    StackOptions options;
    auto stack = Stack::Start(options, "orchestrator");
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  static v1::ModelInfo Model() {
    grpc::ClientContext context;
    v1::ListModelsResponse models;
    EXPECT_TRUE(stack_->Orchestrator()->ListModels(&context, {}, &models).ok());
    return models.models(0);
  }
  static Stack* stack_;
};

Stack* OrchestratorProcessTest::stack_ = nullptr;

TEST_F(OrchestratorProcessTest, DefaultGridStreamsAndMatchesDirectRuns) {
  const v1::ModelInfo model = Model();
  v1::GridRequest request;
  request.set_seed(7);
  request.set_prompt(model.prompts(model.prompts_size() > 7 ? 7 : 0));
  Streamed s = StreamGrid(*stack_->Orchestrator(), request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();

  // Events: the plan first, cells before the grid, the grid last.
  ASSERT_GE(s.events.size(), 3u);
  EXPECT_TRUE(s.events.front().has_plan());
  EXPECT_TRUE(s.events.back().has_grid());
  int cells = 0, trunk_progress = 0;
  for (const auto& e : s.events) {
    cells += e.has_cell();
    trunk_progress += e.has_trunk();
  }
  EXPECT_EQ(cells, 25);  // 24 branches and the trunk
  EXPECT_GE(trunk_progress, 5);

  const v1::Grid& grid = s.grid;
  ASSERT_EQ(grid.rows_size(), 6);
  EXPECT_EQ(grid.plan().model_evals(), 50 + 4 * (50 + 45 + 40 + 30 + 20 + 10));
  EXPECT_EQ(grid.model_evals(), grid.plan().model_evals());  // the minimum, nothing twice
  EXPECT_LT(grid.plan().model_evals(), grid.plan().from_scratch_evals());
  EXPECT_EQ(grid.png().substr(1, 3), "PNG");

  // Every cell equals its path run alone on one denoiser, within drift.
  auto direct = stack_->Denoiser(0);
  int64_t class_index = -1;
  for (int i = 0; i < model.prompts_size(); ++i) {
    if (model.prompts(i) == request.prompt()) class_index = i;
  }
  int worst = MaxPixelDrift(grid.trunk().png(),
                            RunDirect(*direct, grid.plan(), grid.trunk().path(), class_index));
  for (const v1::GridRow& row : grid.rows()) {
    for (const v1::GridCell& cell : row.cells()) {
      worst = std::max(worst, MaxPixelDrift(cell.png(), RunDirect(*direct, grid.plan(),
                                                                  cell.path(), class_index)));
    }
  }
  std::cout << "grid vs direct runs: max drift " << worst << "/255 over 25 images\n";
  EXPECT_LE(worst, kDriftTolerance);
}

TEST_F(OrchestratorProcessTest, EarlierRowsDivergeMoreThanLaterRows) {
  double first = 0, last = 0;
  constexpr int kSeeds = 4;
  for (int seed = 100; seed < 100 + kSeeds; ++seed) {
    v1::GridRequest request;
    request.set_seed(seed);
    const v1::Grid grid = CreateGrid(*stack_->Orchestrator(), request);
    ASSERT_EQ(grid.rows_size(), 6);
    first += grid.rows(0).divergence() / kSeeds;
    last += grid.rows(5).divergence() / kSeeds;
  }
  std::cout << "mean divergence: row 0 (step 0) " << first << ", row 5 (step 40) " << last
            << "\n";
  EXPECT_GT(first, last);
}

TEST_F(OrchestratorProcessTest, PromotedCellBecomesTheTrunkAndReusesTheCache) {
  v1::GridRequest request;
  request.set_seed(21);
  const v1::Grid grid = CreateGrid(*stack_->Orchestrator(), request);
  const v1::GridCell& cell = grid.rows(2).cells(1);
  v1::GridRequest promoted = request;
  *promoted.mutable_trunk() = cell.path();
  const v1::Grid next = CreateGrid(*stack_->Orchestrator(), promoted);
  EXPECT_EQ(next.trunk().png(), cell.png());
  // Rows 0-2 are the same cells, served from the cache; rows below are new.
  for (int r = 0; r <= 2; ++r) {
    for (int c = 0; c < 4; ++c) {
      EXPECT_EQ(next.rows(r).cells(c).png(), grid.rows(r).cells(c).png());
      EXPECT_EQ(next.rows(r).cells(c).source(), "cache");
    }
  }
  EXPECT_GT(next.cache_hits(), 12);
  EXPECT_LT(next.model_evals(), next.plan().model_evals());
  // Row 2 holds the trunk itself (column 1): its distance to the trunk is
  // the other branches' alone, not lowered by a 0.
  const v1::GridRow& same = next.rows(2);
  ASSERT_EQ(same.cells(1).path().SerializeAsString(), next.plan().trunk().SerializeAsString());
  absl::StatusOr<Picture> trunk = PictureFromPng(next.trunk().png());
  ASSERT_TRUE(trunk.ok()) << trunk.status();
  double sum = 0;
  for (int c = 0; c < same.cells_size(); ++c) {
    if (c == 1) continue;
    absl::StatusOr<Picture> other = PictureFromPng(same.cells(c).png());
    ASSERT_TRUE(other.ok()) << other.status();
    sum += PictureDistance(*trunk, *other);
  }
  EXPECT_NEAR(same.divergence_to_trunk(), sum / (same.cells_size() - 1), 1e-12);
}

// A row added to a cached grid runs its own cells, and the trunk, whose
// final is cached, only from its checkpoint before the row to the row's
// step.
TEST_F(OrchestratorProcessTest, ARowAddedToACachedGridRunsTheTrunkOnlyToIt) {
  v1::GridRequest request;
  request.set_seed(41);
  request.mutable_steps()->set_value(30);
  request.mutable_branches()->set_value(2);
  request.add_branch_steps(0);
  const v1::Grid first = CreateGrid(*stack_->Orchestrator(), request);
  request.add_branch_steps(15);
  const v1::Grid second = CreateGrid(*stack_->Orchestrator(), request);
  // Row 15's two cells, and the trunk from its checkpoint at 10 to 15.
  EXPECT_EQ(second.model_evals(), 2 * 15 + 5);
  EXPECT_EQ(second.trunk().png(), first.trunk().png());
  EXPECT_EQ(second.trunk().source(), "cache");
  ASSERT_EQ(second.rows_size(), 2);
  EXPECT_FALSE(second.rows(1).trunk_xt_png().empty());
  EXPECT_FALSE(second.rows(1).trunk_x0_png().empty());
  // The new row's cells are their paths run alone.
  auto direct = stack_->Denoiser(0);
  for (const v1::GridCell& cell : second.rows(1).cells()) {
    EXPECT_LE(MaxPixelDrift(cell.png(), RunDirect(*direct, second.plan(), cell.path(), -1)),
              kDriftTolerance);
  }
}

TEST(OrchestratorNoCacheTest, PromotedCellRerunAsTrunkReproducesTheCell) {
  // No cache: the promoted trunk is recomputed from step 0 on the replicas.
  StackOptions options;
  options.orchestrator_flags = {"--cache_mb=0"};
  auto stack = Stack::Start(options, "promote-nocache");
  ASSERT_TRUE(stack.ok()) << stack.status();
  v1::GridRequest request;
  request.set_seed(5);
  const v1::Grid grid = CreateGrid(*(*stack)->Orchestrator(), request);
  const v1::GridCell& cell = grid.rows(3).cells(2);
  v1::GridRequest promoted = request;
  *promoted.mutable_trunk() = cell.path();
  const v1::Grid next = CreateGrid(*(*stack)->Orchestrator(), promoted);
  EXPECT_EQ(next.cache_hits(), 0);
  EXPECT_EQ(next.model_evals(), next.plan().model_evals());
  const int drift = MaxPixelDrift(next.trunk().png(), cell.png());
  std::cout << "promoted trunk vs its cell: max drift " << drift << "/255\n";
  EXPECT_LE(drift, kDriftTolerance);
}

// A finished grid past --max_message_bytes (a large model's, every cell and
// the figure) failed to send after all the work, and the call ended as if
// its client had gone; it is refused, naming the limit. Its events before
// it are each within the limit.
TEST(OrchestratorLimitTest, AGridPastTheMessageLimitIsRefusedNamingIt) {
  StackOptions options;
  options.denoisers = 1;
  options.orchestrator_flags = {"--max_message_bytes=40000"};
  auto stack = Stack::Start(options, "message-limit");
  ASSERT_TRUE(stack.ok()) << stack.status();
  v1::GridRequest request;
  request.set_seed(5);
  auto stub = (*stack)->Orchestrator();
  {
    grpc::ClientContext context;
    v1::Grid grid;
    const grpc::Status status = stub->CreateGrid(&context, request, &grid);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
    EXPECT_EQ(status.error_message().rfind("the grid's answer is ", 0), 0u)
        << status.error_message();
    EXPECT_NE(status.error_message().find("message limit of 39 KiB (--max_message_bytes)"),
              std::string::npos)
        << status.error_message();
  }
  grpc::ClientContext context;
  auto reader = stub->StreamGrid(&context, request);
  v1::GridEvent event;
  int cells = 0;
  while (reader->Read(&event)) cells += event.has_cell();
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_EQ(status.error_message().rfind("the grid's last event is ", 0), 0u)
      << status.error_message();
  EXPECT_EQ(cells, 6 * 4 + 1);  // every cell came before it
  // The server's limit: failed, for the error-ratio alert (CreateGrid's
  // counted ok, StreamGrid's cancelled).
  EXPECT_EQ((*stack)->Metric(-1, "dgrid_orchestrator_grids_total{status=\"failed\"}"), 2);
  EXPECT_LE((*stack)->Metric(-1, "dgrid_orchestrator_grids_total{status=\"ok\"}"), 0);
}

TEST(OrchestratorFaultTest, OneDenoiserStoppedBeforeTheGridStillGivesACompleteGrid) {
  auto stack = Stack::Start({}, "one-down");
  ASSERT_TRUE(stack.ok()) << stack.status();
  (*stack)->KillDenoiser(1);
  v1::GridRequest request;
  request.set_seed(3);
  const v1::Grid grid = CreateGrid(*(*stack)->Orchestrator(), request);
  ASSERT_EQ(grid.rows_size(), 6);
  for (const auto& row : grid.rows()) {
    for (const auto& cell : row.cells()) {
      EXPECT_FALSE(cell.png().empty());
      EXPECT_EQ(cell.source(), (*stack)->denoiser_address(0));
    }
  }
}

TEST(OrchestratorCancelTest, CancellingAStreamStopsTheWorkOnTheReplicas) {
  StackOptions options;
  options.denoiser_flags = {"--debug_step_delay_ms=20"};
  auto stack = Stack::Start(options, "cancel");
  ASSERT_TRUE(stack.ok()) << stack.status();
  grpc::ClientContext context;
  v1::GridRequest request;
  request.set_seed(11);
  auto reader = (*stack)->Orchestrator()->StreamGrid(&context, request);
  v1::GridEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_plan());
  const int64_t planned = event.plan().model_evals();
  absl::SleepFor(absl::Milliseconds(300));
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  auto evals = [&] {
    return (*stack)->Metric(0, "dgrid_denoiser_model_evals_total") +
           (*stack)->Metric(1, "dgrid_denoiser_model_evals_total");
  };
  // The replicas drop the grid's trajectories (within a second on an idle
  // machine; polled, for a loaded one)...
  auto active = [&] {
    return (*stack)->Metric(0, "dgrid_denoiser_active_trajectories") +
           (*stack)->Metric(1, "dgrid_denoiser_active_trajectories");
  };
  for (const absl::Time until = absl::Now() + absl::Seconds(30);
       active() != 0 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(active(), 0);
  const double settled = evals();
  // ...and do no more work for it.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(evals(), settled);
  EXPECT_LT(settled, planned);
  std::cout << "cancelled grid: " << settled << " of " << planned << " model evaluations ran\n";
}

}  // namespace
}  // namespace dgrid
