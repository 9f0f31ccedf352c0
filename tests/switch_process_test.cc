// Prompt-switch grids through the real pair (issue 25, part 1): the fixture's
// tiny CLIP-tokenized text model, and the shipped class model. Cells compare
// byte for byte where the same trajectory must give the same image in the
// same batch, and within the pixel drift allowed across batch compositions.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tensor_codec.h"
#include "gtest/gtest.h"
#include "tests/support/grids.h"
#include "tests/support/latents.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::CellImages;
using testing::FixtureDir;
using testing::kBatchDrift;
using testing::MaxAbsDiff;
using testing::MustCreateGrid;
using testing::ServingStack;
using testing::Stack;
using testing::StackOptions;

constexpr char kCat[] = "a photo of a cat";
constexpr char kCar[] = "a red sports car on a road";

v1::GridRequest Request(const std::string& prompt, uint64_t seed = 11) {
  v1::GridRequest r;
  r.set_prompt(prompt);
  r.set_seed(seed);
  r.mutable_steps()->set_value(10);
  r.mutable_branches()->set_value(2);
  r.add_branch_steps(0);
  r.add_branch_steps(3);
  r.add_branch_steps(7);
  return r;
}

class SwitchGridTest : public testing::SharedStackTest<SwitchGridTest> {
 public:
  static constexpr char kName[] = "switch";
  static StackOptions Options() {
    return ServingStack(FixtureDir("textlatent"), 2, {"--cache_mb=0"});
  }
};

// `switched` is `plain`: the same images and the same cell paths, by name.
void ExpectThePlainGrid(const v1::Grid& switched, const v1::Grid& plain) {
  ASSERT_EQ(CellImages(plain).size(), 6u);
  EXPECT_EQ(CellImages(switched), CellImages(plain));
  EXPECT_EQ(switched.trunk().png(), plain.trunk().png());
  EXPECT_EQ(switched.plan().model_evals(), plain.plan().model_evals());
  for (int r = 0; r < plain.rows_size(); ++r) {
    for (int c = 0; c < plain.rows(r).cells_size(); ++c) {
      EXPECT_EQ(switched.rows(r).cells(c).path().SerializeAsString(),
                plain.rows(r).cells(c).path().SerializeAsString());
    }
  }
}

TEST_F(SwitchGridTest, ASwitchToThePromptItselfIsThePlainGridByteForByte) {
  const v1::Grid plain = MustCreateGrid(*stack_, Request(kCat));
  v1::GridRequest same = Request(kCat);
  same.set_switch_prompt(kCat);
  ExpectThePlainGrid(MustCreateGrid(*stack_, same), plain);
}

// Guidance 1 runs the prompt's row alone and 0 the negative prompt's: a
// switch of what that row does not read is no switch, and runs as none (it
// ran as a second set of trajectories). The prompt's other case and spaces
// read as the prompt, which only the tokens tell.
TEST_F(SwitchGridTest, ASwitchOfWhatTheGuidanceDoesNotReadIsThePlainGrid) {
  auto at = [](float guidance) {
    v1::GridRequest r = Request(kCat);
    r.set_negative_prompt("blurry");
    r.mutable_guidance()->set_value(guidance);
    return r;
  };
  v1::GridRequest negative_only = at(1);
  negative_only.set_switch_prompt("A Photo of a  Cat");
  negative_only.set_switch_negative_prompt("sharp and bright");
  ExpectThePlainGrid(MustCreateGrid(*stack_, negative_only), MustCreateGrid(*stack_, at(1)));
  v1::GridRequest prompt_only = at(0);
  prompt_only.set_switch_prompt(kCar);
  ExpectThePlainGrid(MustCreateGrid(*stack_, prompt_only), MustCreateGrid(*stack_, at(0)));
  // Where the row reads it, the same switch runs.
  v1::GridRequest seen = at(4);
  seen.set_switch_prompt(kCat);
  seen.set_switch_negative_prompt("sharp and bright");
  EXPECT_NE(CellImages(MustCreateGrid(*stack_, seen)), CellImages(MustCreateGrid(*stack_, at(4))));
}

// The planner drops a switch that changes nothing, so the test above runs
// the same plan twice. The denoiser itself does not: a trajectory whose path
// switches to the request's own prompt mid-way must give the plain
// trajectory's final, byte for byte in one batch with one that switches for
// real. Alone, in a batch of another size, it may drift as any path may: the
// fixture's matrix products round differently by batch size on some CPUs
// (AVX2 OpenBLAS; docs/ARCHITECTURE.md, "Counter-based noise").
TEST_F(SwitchGridTest, TheDenoiserRunsASwitchToTheSamePromptAsNoSwitch) {
  grpc::ClientContext list_context;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stack_->Orchestrator()->ListModels(&list_context, {}, &models).ok());
  ASSERT_GT(models.models_size(), 0);
  auto finals = [&](const std::vector<v1::Path>& paths) {
    v1::BranchRequest request;
    request.set_model(models.models(0).name());
    request.mutable_sampler()->set_steps(10);
    request.mutable_sampler()->set_eta(1);
    request.mutable_sampler()->set_guidance(5);
    request.mutable_conditioning()->set_prompt(kCat);
    request.mutable_conditioning()->set_negative_prompt("blurry");
    for (const v1::Path& path : paths) *request.add_trajectories()->mutable_path() = path;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stack_->Denoiser(0)->Branch(&context, request);
    std::vector<std::vector<float>> out(paths.size());
    v1::BranchEvent event;
    while (reader->Read(&event)) {
      if (!event.has_final()) continue;
      const v1::Tensor& latent = event.final().latent();
      absl::StatusOr<std::vector<float>> values = DecodeFloatTensor(
          latent, std::vector<int64_t>(latent.shape().begin(), latent.shape().end()), "final");
      EXPECT_TRUE(values.ok()) << values.status();
      if (values.ok()) out.at(event.final().trajectory()) = std::move(*values);
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return out;
  };
  auto path = [](const char* switch_to, const char* negative) {
    v1::Path p;
    p.set_init_seed(7);
    p.add_segments()->set_noise_seed(8);
    if (switch_to != nullptr) {
      v1::Segment* s = p.add_segments();
      s->set_from_step(3);
      s->set_noise_seed(8);
      s->mutable_conditioning()->set_prompt(switch_to);
      s->mutable_conditioning()->set_negative_prompt(negative);
    }
    return p;
  };
  const std::vector<std::vector<float>> mixed =
      finals({path(nullptr, ""), path(kCat, "blurry"), path(kCar, "blurry")});
  ASSERT_EQ(mixed.size(), 3u);
  ASSERT_FALSE(mixed[0].empty());
  EXPECT_EQ(mixed[1], mixed[0]);
  EXPECT_GT(MaxAbsDiff(mixed[2], mixed[0]), 100 * kBatchDrift);
  EXPECT_LE(MaxAbsDiff(finals({path(kCat, "blurry")})[0], mixed[0]), kBatchDrift);
  // The negative prompt is part of the conditioning a segment switches.
  EXPECT_GT(MaxAbsDiff(finals({path(kCat, "")})[0], mixed[0]), 100 * kBatchDrift);
}

TEST_F(SwitchGridTest, ASwitchAtStepZeroWithTrunkNoiseIsThePlainGridOfTheNewPrompt) {
  v1::GridRequest request = Request(kCat);
  request.set_switch_prompt(kCar);
  request.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  request.clear_branches();
  const v1::Grid switched = MustCreateGrid(*stack_, request);
  ASSERT_EQ(switched.rows_size(), 3);
  ASSERT_EQ(switched.rows(0).cells_size(), 1);
  EXPECT_EQ(switched.plan().branch_noise(), v1::BRANCH_NOISE_TRUNK);
  EXPECT_EQ(switched.plan().switch_prompt(), kCar);
  const v1::Grid car = MustCreateGrid(*stack_, Request(kCar));
  // Row 0 switches before the first step: the car's own trunk, same seed.
  EXPECT_EQ(switched.rows(0).cells(0).png(), car.trunk().png());
  // Later switches give something else than either prompt alone.
  EXPECT_NE(switched.rows(2).cells(0).png(), car.trunk().png());
  EXPECT_NE(switched.rows(2).cells(0).png(), switched.trunk().png());
}

TEST_F(SwitchGridTest, APromotedSwitchedCellReproducesIt) {
  v1::GridRequest request = Request(kCat);
  request.set_switch_prompt(kCar);
  const v1::Grid grid = MustCreateGrid(*stack_, request);
  ASSERT_EQ(grid.rows_size(), 3);
  const v1::GridCell& cell = grid.rows(1).cells(1);
  ASSERT_TRUE(cell.path().segments(1).has_conditioning());
  // The switch made a difference, so reproducing the cell means something.
  const v1::Grid unswitched = MustCreateGrid(*stack_, Request(kCat));
  ASSERT_EQ(unswitched.rows_size(), 3);
  EXPECT_NE(cell.png(), unswitched.rows(1).cells(1).png());
  v1::GridRequest promote = Request(kCat);
  *promote.mutable_trunk() = cell.path();
  const v1::Grid promoted = MustCreateGrid(*stack_, promote);
  EXPECT_EQ(promoted.trunk().png(), cell.png());
}

TEST(SwitchReplicaTest, ASwitchGridGivesTheSameCellsOnOneAndTwoReplicas) {
  v1::GridRequest request = Request(kCat, 5);
  request.set_switch_prompt(kCar);
  request.set_switch_negative_prompt("blurry");
  EXPECT_EQ(
      testing::ExpectSameCellsOnOneAndTwoReplicas(FixtureDir("textlatent"), request, "switch"),
      6u);
}

// With the cache on: grids that differ only in the switch prompt share the
// trunk (cache hits) but never a switched cell.
TEST(SwitchCacheTest, TheCacheTellsApartPathsThatDifferOnlyInASegmentsPrompt) {
  auto stack = Stack::Start(ServingStack(FixtureDir("textlatent")), "switch-cache");
  ASSERT_TRUE(stack.ok()) << stack.status();
  v1::GridRequest to_car = Request(kCat);
  to_car.set_switch_prompt(kCar);
  v1::GridRequest to_dog = Request(kCat);
  to_dog.set_switch_prompt("a dog");
  const v1::Grid car = MustCreateGrid(**stack, to_car);
  const v1::Grid dog = MustCreateGrid(**stack, to_dog);
  EXPECT_GT(dog.cache_hits(), 0);  // the trunk, shared
  EXPECT_EQ(dog.trunk().png(), car.trunk().png());
  const std::vector<std::string> a = CellImages(car), b = CellImages(dog);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NE(a[i], b[i]) << "cell " << i;
  // The same request again: all from the cache, the same images.
  const v1::Grid again = MustCreateGrid(**stack, to_dog);
  EXPECT_EQ(CellImages(again), b);
  for (const v1::GridRow& row : again.rows()) {
    for (const v1::GridCell& cell : row.cells()) EXPECT_EQ(cell.source(), "cache");
  }
}

TEST(SwitchClassTest, AClassModelSwitchesToAClassAndRefusesFreeText) {
  auto stack = Stack::Start(ServingStack(testing::ModelDir()), "switch-class");
  ASSERT_TRUE(stack.ok()) << stack.status();
  grpc::ClientContext list_context;
  v1::ListModelsResponse models;
  ASSERT_TRUE((*stack)->Orchestrator()->ListModels(&list_context, {}, &models).ok());
  const v1::ModelInfo* model = nullptr;
  for (const v1::ModelInfo& m : models.models()) {
    if (m.conditioning() == "class") model = &m;
  }
  ASSERT_NE(model, nullptr);
  v1::GridRequest request = Request(model->prompts(0));
  request.set_model(model->name());
  request.set_switch_prompt(model->prompts(1));
  request.set_branch_noise(v1::BRANCH_NOISE_TRUNK);
  request.clear_branches();
  const v1::Grid switched = MustCreateGrid(**stack, request);
  v1::GridRequest plain = Request(model->prompts(1));
  plain.set_model(model->name());
  EXPECT_EQ(switched.rows(0).cells(0).png(), MustCreateGrid(**stack, plain).trunk().png());

  request.set_switch_prompt("a photo of a cat");
  grpc::ClientContext context;
  v1::Grid refused;
  const grpc::Status status = (*stack)->Orchestrator()->CreateGrid(&context, request, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message().rfind("switch_prompt:", 0), 0u) << status.error_message();
}

}  // namespace
}  // namespace dgrid
