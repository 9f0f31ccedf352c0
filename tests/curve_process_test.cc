// Decision curves through the real pair (2 dgrid-denoisers serving the
// shipped fashion-mnist bundle and its judge, 1 dgrid-orchestrator), as a
// user runs them with `dgrid curve`: the curve must agree with a count made
// here, independently, over the same grids' images judged one by one.
#include <grpcpp/grpcpp.h>

#include <signal.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/png_image.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::BinPath;
using testing::ChildProcess;
using testing::Stack;
using testing::StackOptions;

constexpr int kTrunks = 8;
constexpr uint64_t kSeed = 300;

class CurveProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    StackOptions options;
    auto stack = Stack::Start(options, "curve");
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }

  // The grid of every trunk: short, so that the test stays quick.
  static v1::GridRequest Grid(uint64_t seed) {
    v1::GridRequest r;
    r.set_seed(seed);
    r.mutable_steps()->set_value(20);
    r.mutable_branches()->set_value(4);
    for (int k : {0, 4, 8, 14}) r.add_branch_steps(k);
    return r;
  }

  // The class the judge sees in each image, asked of denoiser 0 one image
  // per call.
  static int Label(const std::string& png) {
    v1::JudgeRequest request;
    request.add_images()->set_png(png);
    v1::JudgeResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status status = stack_->Denoiser(0)->Judge(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return status.ok() ? response.images(0).heads(0).label_index() : -1;
  }

  // The curve's result, the call expected to end OK.
  static v1::CurveResult RunCurve(const v1::CurveRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    auto reader = stack_->Orchestrator()->DecisionCurve(&context, request);
    v1::CurveEvent event;
    v1::CurveResult result;
    while (reader->Read(&event)) {
      if (event.has_curve()) result = event.curve();
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return result;
  }

  static Stack* stack_;
};

Stack* CurveProcessTest::stack_ = nullptr;

// Trajectories the denoisers have queued, of `work` ("interactive" or
// "batch"), over both replicas.
double Queued(const Stack& stack, const std::string& work) {
  double sum = 0;
  for (int i = 0; i < 2; ++i) {
    sum += stack.Metric(i, absl::StrCat("dgrid_denoiser_queue_seconds_count{work=\"", work, "\"}"));
  }
  return sum;
}

TEST_F(CurveProcessTest, DgridCurveAgreesWithAnIndependentCountOverTheSameGrids) {
  const std::string dir = stack_->dir();
  const double interactive_before = Queued(*stack_, "interactive");
  const double batch_before = Queued(*stack_, "batch");
  ASSERT_GE(interactive_before, 0);  // -1 a replica: the series is absent
  ASSERT_GE(batch_before, 0);
  // `dgrid curve` of the test's grids, its plot written to `out`; its log.
  auto run_curve = [&](const std::string& out) -> std::string {
    auto cli = ChildProcess::Start(
        {BinPath("dgrid"), "curve", "--target=" + stack_->orchestrator_address(),
         absl::StrCat("--seed=", kSeed), absl::StrCat("--trunks=", kTrunks), "--steps=20",
         "--branches=4", "--branch_steps=0,4,8,14", "-o", dir + "/" + out},
        dir + "/" + out + ".log");
    if (!cli.ok()) return absl::StrCat("cannot start: ", cli.status().ToString());
    absl::StatusOr<int> code = (*cli)->Wait(absl::Seconds(300));
    EXPECT_TRUE(code.ok() && *code == 0) << (*cli)->Log();
    return (*cli)->Log();
  };
  const std::string log = run_curve("curve.png");
  EXPECT_NE(log.find("trunk 8/8 done"), std::string::npos) << log;
  // The table gives each estimate with its standard error, the divergence
  // too (the only curve of a model without a judge), in aligned columns.
  const std::vector<std::string> lines = absl::StrSplit(log, '\n');
  const auto header = std::find_if(lines.begin(), lines.end(), [](const std::string& line) {
    return absl::StartsWith(line, "  step ");
  });
  ASSERT_NE(header, lines.end()) << log;
  auto columns = [](const std::string& line) {  // characters, not bytes
    return std::count_if(line.begin(), line.end(),
                         [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
  };
  for (auto row = header + 1; row != header + 5 && row != lines.end(); ++row) {
    EXPECT_EQ(std::count(row->begin(), row->end(), '\xB1'), 2) << *row;  // ±: divergence, class
    EXPECT_EQ(columns(row->substr(0, row->find("  class 95%"))), columns(*header)) << *row;
  }
  // The curve's trajectories (a trunk and 16 branches a grid) queued as
  // batch work, which the queue-time alert leaves out; none as interactive.
  EXPECT_GE(Queued(*stack_, "batch") - batch_before, kTrunks * (1 + 4 * 4));
  EXPECT_EQ(Queued(*stack_, "interactive"), interactive_before);

  std::ifstream json_file(dir + "/curve.json");
  std::stringstream json;
  json << json_file.rdbuf();
  v1::CurveResult curve;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.str(), &curve).ok()) << json.str();
  ASSERT_EQ(curve.trunks(), kTrunks);
  ASSERT_EQ(curve.rows_size(), 4);
  ASSERT_EQ(curve.heads_size(), 1);
  EXPECT_EQ(curve.heads(0).head(), "class");
  EXPECT_EQ(curve.judged_images(), kTrunks * (1 + 4 * 4));
  std::ifstream png_file(dir + "/curve.png", std::ios::binary);
  std::stringstream png;
  png << png_file.rdbuf();
  EXPECT_TRUE(DecodePng({reinterpret_cast<const uint8_t*>(png.str().data()), png.str().size()})
                  .ok());

  // Independently: the same grids (from the cache now), each image judged
  // on its own, the differing labels counted here.
  std::vector<std::vector<double>> fractions(4);  // [row][trunk]
  std::vector<double> divergence(4, 0.0);
  // The curve's own record of each trunk's labels, against those counted
  // here (a label on a knife edge between batch sizes may differ: one).
  ASSERT_EQ(curve.trunk_labels_size(), kTrunks);
  EXPECT_EQ(curve.heads(0).labels_size(), 10);  // fashion-mnist's classes
  int labels_differing = 0;
  for (int t = 0; t < kTrunks; ++t) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    v1::Grid grid;
    const grpc::Status status = stack_->Orchestrator()->CreateGrid(&context, Grid(kSeed + t), &grid);
    ASSERT_TRUE(status.ok()) << status.error_message();
    // The curve's own grids: served whole from the cache it filled.
    ASSERT_EQ(grid.rows_size(), 4);
    EXPECT_EQ(grid.trunk().source(), "cache") << "trunk " << t;
    const int trunk = Label(grid.trunk().png());
    const v1::CurveTrunk& recorded = curve.trunk_labels(t);
    EXPECT_EQ(recorded.seed(), kSeed + t);
    ASSERT_EQ(recorded.heads_size(), 1);
    ASSERT_EQ(recorded.heads(0).rows_size(), 4);
    labels_differing += recorded.heads(0).trunk() != trunk;
    for (int r = 0; r < 4; ++r) {
      int differ = 0;
      ASSERT_EQ(recorded.heads(0).rows(r).branches_size(), grid.rows(r).cells_size());
      for (int c = 0; c < grid.rows(r).cells_size(); ++c) {
        const v1::GridCell& cell = grid.rows(r).cells(c);
        EXPECT_EQ(cell.source(), "cache") << "trunk " << t << " row " << r;
        const int label = Label(cell.png());
        differ += label != trunk;
        labels_differing += recorded.heads(0).rows(r).branches(c) != label;
      }
      fractions[r].push_back(differ / 4.0);
      divergence[r] += grid.rows(r).divergence() / kTrunks;
    }
  }
  EXPECT_LE(labels_differing, 1);
  for (int r = 0; r < 4; ++r) {
    double mean = 0;
    for (double f : fractions[r]) mean += f / kTrunks;
    double squares = 0;
    for (double f : fractions[r]) squares += (f - mean) * (f - mean);
    // Over trunks: a trunk's four branches are one sample.
    const double standard_error = std::sqrt(squares / (kTrunks - 1) / kTrunks);
    const v1::Estimate& p = curve.heads(0).p_differs(r);
    // The same images and the same judge: equal, but for a label on a knife
    // edge between batch sizes. Within the standard error counted here, and
    // within one branch's label of it.
    EXPECT_LE(std::abs(p.mean() - mean), std::min(standard_error, 1.0 / (4 * kTrunks)) + 1e-9)
        << "row " << r << ": curve " << p.mean() << " ± " << p.standard_error()
        << ", counted " << mean << " ± " << standard_error;
    EXPECT_NEAR(p.standard_error(), standard_error, 0.05)
        << "row " << r << ": curve " << p.mean() << " ± " << p.standard_error()
        << ", counted " << mean << " ± " << standard_error;
    EXPECT_NEAR(curve.rows(r).divergence().mean(), divergence[r], 1e-9) << "row " << r;
    // The 95% interval holds the mean, and is wider than ± one error.
    ASSERT_EQ(curve.heads(0).p_differs_95_size(), 4);
    const v1::Interval& wide = curve.heads(0).p_differs_95(r);
    EXPECT_LE(wide.lo(), p.mean()) << "row " << r;
    EXPECT_GE(wide.hi(), p.mean()) << "row " << r;
    EXPECT_LT(wide.lo(), wide.hi()) << "row " << r;
  }
  // Early branches change the class more often than late ones.
  EXPECT_GT(curve.heads(0).p_differs(0).mean(), curve.heads(0).p_differs(3).mean());

  // The same curve (its grids from the cache) with its plot as SVG.
  run_curve("vector.svg");
  std::ifstream svg_file(dir + "/vector.svg", std::ios::binary);
  std::stringstream svg;
  svg << svg_file.rdbuf();
  EXPECT_EQ(svg.str().rfind("<?xml", 0), 0u) << svg.str().substr(0, 80);
  EXPECT_NE(svg.str().find("<svg"), std::string::npos);
  std::ifstream svg_json_file(dir + "/vector.json");
  std::stringstream svg_json;
  svg_json << svg_json_file.rdbuf();
  v1::CurveResult again;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(svg_json.str(), &again).ok());
  // The sidecar holds the figures, not the plots.
  EXPECT_TRUE(again.svg().empty() && again.png().empty());
  EXPECT_EQ(again.heads(0).p_differs(0).mean(), curve.heads(0).p_differs(0).mean());
}

// A curve that adds a row to one already run: each trunk's final is cached,
// so its trunk runs only through the new row's step, for latents alone (a
// curve keeps no captures in the cache, and needs no images of them).
TEST_F(CurveProcessTest, ARowAddedToACachedCurveRunsEachTrunkOnlyToIt) {
  v1::CurveRequest request;
  request.set_trunks(2);
  v1::GridRequest* grid = request.mutable_grid();
  grid->set_seed(900);
  grid->mutable_steps()->set_value(20);
  grid->mutable_branches()->set_value(4);
  grid->add_branch_steps(0);
  grid->add_branch_steps(4);
  const v1::CurveResult first = RunCurve(request);
  grid->add_branch_steps(8);
  const v1::CurveResult second = RunCurve(request);
  // Per trunk: row 8's four cells (12 steps each) and the trunk to step 8
  // (from x_T).
  EXPECT_EQ(second.model_evals(), 2 * (4 * 12 + 8));
  ASSERT_EQ(second.rows_size(), 3);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(second.rows(r).divergence().mean(), first.rows(r).divergence().mean()) << r;
    EXPECT_EQ(second.heads(0).p_differs(r).mean(), first.heads(0).p_differs(r).mean()) << r;
  }
  EXPECT_GT(second.rows(2).divergence().mean(), 0);
}

// A replica stopped (SIGSTOP) under a curve whose grids are cached: its
// Judge call is given up once health checks have found it down for
// kJudgeUnhealthyGrace (5 s) and judged by the other replica. The call
// waited out its 60 s, and the curve with it.
TEST_F(CurveProcessTest, AJudgeCallOnAStoppedReplicaMovesOn) {
  v1::CurveRequest request;
  request.set_trunks(3);
  *request.mutable_grid() = Grid(1700);
  const v1::CurveResult first = RunCurve(request);
  // Both idle, the pool takes the replica first by address.
  const int stopped = stack_->denoiser_address(0) < stack_->denoiser_address(1) ? 0 : 1;
  const char* retried = "dgrid_orchestrator_jobs_total{status=\"retried\"}";
  const double retried_before = std::max(0.0, stack_->Metric(-1, retried));
  stack_->denoiser(stopped).Signal(SIGSTOP);
  const absl::Time start = absl::Now();
  const v1::CurveResult again = RunCurve(request);
  const absl::Duration took = absl::Now() - start;
  stack_->denoiser(stopped).Signal(SIGCONT);
  EXPECT_LT(took, absl::Seconds(30));
  ASSERT_EQ(again.heads_size(), first.heads_size());
  for (int r = 0; r < first.rows_size(); ++r) {
    EXPECT_EQ(again.heads(0).p_differs(r).mean(), first.heads(0).p_differs(r).mean()) << r;
  }
  // The stopped replica had a call, given up and tried on the other.
  EXPECT_EQ(stack_->Metric(-1, retried), retried_before + 1);
}

TEST_F(CurveProcessTest, BadInputIsInvalidArgumentNamingTheField) {
  auto stub = stack_->Orchestrator();
  auto refused = [&](const v1::CurveRequest& request, const std::string& field) {
    grpc::ClientContext context;
    auto reader = stub->DecisionCurve(&context, request);
    v1::CurveEvent event;
    EXPECT_FALSE(reader->Read(&event)) << field;
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(status.error_message().find(field), std::string::npos) << status.error_message();
  };
  v1::CurveRequest request;
  *request.mutable_grid() = Grid(1);
  request.set_trunks(0);
  refused(request, "trunks");
  request.set_trunks(4);
  request.mutable_grid()->set_prompt("zebra");
  refused(request, "grid.prompt");
}

}  // namespace
}  // namespace dgrid
