// Malformed and hostile requests against both real services: each gets the
// expected code and a message naming the field, and afterwards both still
// serve a normal grid.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "common/tensor_codec.h"
#include "gtest/gtest.h"
#include "tests/support/raw_call.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using Code = grpc::StatusCode;
using testing::Stack;

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::StackOptions options;
    options.denoisers = 1;
    options.denoiser_flags = {"--max_message_bytes=1048576", "--max_trajectories_per_request=64"};
    options.orchestrator_flags = {"--max_message_bytes=1048576"};
    auto stack = Stack::Start(options, "bad-input");
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
    grpc::ClientContext context;
    v1::ListModelsResponse models;
    ASSERT_TRUE(stack_->Orchestrator()->ListModels(&context, {}, &models).ok());
    model_ = new v1::ModelInfo(models.models(0));
  }
  static void TearDownTestSuite() {
    delete stack_;
    delete model_;
  }

  static grpc::Status Branch(const v1::BranchRequest& request,
                             absl::Duration timeout = absl::Seconds(30)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    auto reader = stack_->Denoiser(0)->Branch(&context, request);
    v1::BranchEvent event;
    while (reader->Read(&event)) {
    }
    return reader->Finish();
  }
  static grpc::Status Grid(const v1::GridRequest& request,
                           absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::Grid grid;
    return stack_->Orchestrator()->CreateGrid(&context, request, &grid);
  }
  static v1::BranchRequest GoodBranch() {
    v1::BranchRequest r;
    r.set_model(model_->name());
    r.mutable_sampler()->set_steps(10);
    r.mutable_sampler()->set_eta(1);
    r.mutable_sampler()->set_guidance(1);
    v1::Path* p = r.add_trajectories()->mutable_path();
    p->set_init_seed(1);
    p->add_segments()->set_noise_seed(2);
    return r;
  }
  static v1::GridRequest SmallGrid() {
    v1::GridRequest r;
    r.set_seed(1);
    r.mutable_steps()->set_value(10);
    r.mutable_branches()->set_value(2);
    r.add_branch_steps(0);
    r.add_branch_steps(5);
    return r;
  }
  static void Latent(v1::BranchRequest& r, std::vector<float> values, std::vector<int64_t> shape) {
    r.set_start_step(5);
    EncodeFloatTensor(values, shape, r.mutable_trajectories(0)->mutable_start_latent());
  }
  static std::vector<int64_t> Shape() {
    return {model_->latent_shape().begin(), model_->latent_shape().end()};
  }
  static size_t Numel() {
    size_t n = 1;
    for (int64_t d : model_->latent_shape()) n *= d;
    return n;
  }

  static void ExpectBothStillServe() {
    EXPECT_TRUE(Branch(GoodBranch()).ok());
    v1::GridRequest normal;
    normal.set_seed(3);
    const grpc::Status ok = Grid(normal);
    EXPECT_TRUE(ok.ok()) << ok.error_message();
    EXPECT_TRUE(stack_->denoiser(0).Running());
    EXPECT_TRUE(stack_->orchestrator().Running());
  }

  // A call with `wire` as the request's bytes (testing::RawCall).
  static grpc::Status RawCall(const std::string& address, const std::string& method,
                              const std::string& wire) {
    return testing::RawCall(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()),
                            method, wire);
  }

  static Stack* stack_;
  static v1::ModelInfo* model_;
};

// A string field's placeholder, made invalid UTF-8 in the wire bytes.
constexpr char kPlaceholder[] = "UTF8-PLACEHOLDER";

// `message`'s wire form with the placeholder's first byte made 0xFF: the
// same length, no longer UTF-8. (A client's own protobuf will not build such
// a message; a hostile client writes the bytes.)
std::string WithInvalidUtf8(const google::protobuf::Message& message) {
  std::string wire = message.SerializeAsString();
  const size_t at = wire.find(kPlaceholder);
  EXPECT_NE(at, std::string::npos) << message.ShortDebugString();
  if (at != std::string::npos) wire[at] = '\xFF';
  return wire;
}

Stack* BadInputTest::stack_ = nullptr;
v1::ModelInfo* BadInputTest::model_ = nullptr;

TEST_F(BadInputTest, EveryBadRequestGetsACodeAndTheFieldAndServiceGoesOn) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  using BranchEdit = std::function<void(v1::BranchRequest&)>;
  using GridEdit = std::function<void(v1::GridRequest&)>;
  struct Case {
    const char* name;
    BranchEdit branch;  // a denoiser case when set
    GridEdit grid;      // else an orchestrator case
    Code code;
    const char* field;
  };
  auto denoiser = [](const char* n, BranchEdit e, Code c, const char* f) {
    return Case{n, std::move(e), nullptr, c, f};
  };
  auto orchestrator = [](const char* n, GridEdit e, Code c, const char* f) {
    return Case{n, nullptr, std::move(e), c, f};
  };
  const std::vector<Case> cases = {
      // ---- denoiser ----
      denoiser("unknown model", [](auto& r) { r.set_model("nope"); }, Code::INVALID_ARGUMENT,
               "model"),
      denoiser("unknown prompt", [](auto& r) { r.mutable_conditioning()->set_prompt("zebra"); },
               Code::INVALID_ARGUMENT, "conditioning.prompt"),
      denoiser("free text to a class model",
               [](auto& r) { r.mutable_conditioning()->set_prompt("a photo of a cat"); },
               Code::INVALID_ARGUMENT, "its prompts are: t-shirt"),
      denoiser("negative prompt to a class model",
               [](auto& r) { r.mutable_conditioning()->set_negative_prompt("blurry"); },
               Code::INVALID_ARGUMENT, "conditioning.negative_prompt"),
      denoiser("class out of range",
               [](auto& r) { r.mutable_conditioning()->set_class_index(1000); },
               Code::INVALID_ARGUMENT, "conditioning.class_index"),
      denoiser("negative steps", [](auto& r) { r.mutable_sampler()->set_steps(-3); },
               Code::INVALID_ARGUMENT, "sampler.steps"),
      denoiser("absurd steps", [](auto& r) { r.mutable_sampler()->set_steps(2000000000); },
               Code::INVALID_ARGUMENT, "sampler.steps"),
      denoiser("eta NaN", [&](auto& r) { r.mutable_sampler()->set_eta(nan); },
               Code::INVALID_ARGUMENT, "sampler.eta"),
      denoiser("eta above 1", [](auto& r) { r.mutable_sampler()->set_eta(3); },
               Code::INVALID_ARGUMENT, "sampler.eta"),
      denoiser("guidance NaN", [&](auto& r) { r.mutable_sampler()->set_guidance(nan); },
               Code::INVALID_ARGUMENT, "sampler.guidance"),
      denoiser("wrong shape",
               [&](auto& r) { Latent(r, std::vector<float>(Numel(), 0.f), {1, 1, (int64_t)Numel()}); },
               Code::INVALID_ARGUMENT, "trajectories[0].start_latent.shape"),
      denoiser("huge dimensions",
               [&](auto& r) { Latent(r, {0.f}, {int64_t{1} << 40, int64_t{1} << 40, 1}); },
               Code::INVALID_ARGUMENT, "trajectories[0].start_latent.shape"),
      denoiser("byte length",
               [&](auto& r) {
                 Latent(r, std::vector<float>(Numel(), 0.f), Shape());
                 r.mutable_trajectories(0)->mutable_start_latent()->mutable_raw_contents()->pop_back();
               },
               Code::INVALID_ARGUMENT, "trajectories[0].start_latent.raw_contents"),
      denoiser("wrong dtype",
               [&](auto& r) {
                 Latent(r, std::vector<float>(Numel(), 0.f), Shape());
                 r.mutable_trajectories(0)->mutable_start_latent()->set_dtype(v1::DATA_TYPE_INT64);
               },
               Code::INVALID_ARGUMENT, "trajectories[0].start_latent.dtype"),
      denoiser("NaN latent",
               [&](auto& r) {
                 std::vector<float> v(Numel(), 0.f);
                 v[1] = nan;
                 Latent(r, v, Shape());
               },
               Code::INVALID_ARGUMENT, "non-finite"),
      denoiser("unsorted segments",
               [](auto& r) {
                 auto* p = r.mutable_trajectories(0)->mutable_path();
                 p->add_segments()->set_from_step(7);
                 p->add_segments()->set_from_step(3);
               },
               Code::INVALID_ARGUMENT, "trajectories[0].path.segments[2].from_step"),
      denoiser("duplicate segments",
               [](auto& r) {
                 auto* p = r.mutable_trajectories(0)->mutable_path();
                 p->add_segments()->set_from_step(4);
                 p->add_segments()->set_from_step(4);
               },
               Code::INVALID_ARGUMENT, "trajectories[0].path.segments[2].from_step"),
      // The step is named, not the start latent a step in range would need.
      denoiser("start beyond steps", [](auto& r) { r.set_start_step(99); },
               Code::INVALID_ARGUMENT, "start_step must be in [0, 10), got 99"),
      denoiser("too many trajectories",
               [](auto& r) {
                 for (int i = 0; i < 70; ++i) *r.add_trajectories() = r.trajectories(0);
               },
               Code::INVALID_ARGUMENT, "trajectories"),
      denoiser("oversized message", [](auto& r) { r.set_model(std::string(2 << 20, 'm')); },
               Code::RESOURCE_EXHAUSTED, "larger than max"),
      // ---- orchestrator ----
      orchestrator("unknown model", [](auto& r) { r.set_model("nope"); },
                   Code::INVALID_ARGUMENT, "model"),
      orchestrator("unknown prompt", [](auto& r) { r.set_prompt("zebra"); },
                   Code::INVALID_ARGUMENT, "prompt"),
      // Free text to a class model: the error lists the prompts it takes.
      orchestrator("free text to a class model",
                   [](auto& r) { r.set_prompt("a photo of a cat"); }, Code::INVALID_ARGUMENT,
                   "its prompts are: t-shirt"),
      orchestrator("negative prompt to a class model",
                   [](auto& r) { r.set_negative_prompt("blurry"); }, Code::INVALID_ARGUMENT,
                   "negative_prompt"),
      orchestrator("unknown preset", [](auto& r) { r.set_preset("hyper"); },
                   Code::INVALID_ARGUMENT, "preset"),
      orchestrator("negative steps", [](auto& r) { r.mutable_steps()->set_value(-1); },
                   Code::INVALID_ARGUMENT, "steps"),
      orchestrator("absurd steps", [](auto& r) { r.mutable_steps()->set_value(1 << 30); },
                   Code::INVALID_ARGUMENT, "steps"),
      orchestrator("eta NaN", [&](auto& r) { r.mutable_eta()->set_value(nan); },
                   Code::INVALID_ARGUMENT, "eta"),
      orchestrator("negative guidance", [](auto& r) { r.mutable_guidance()->set_value(-2); },
                   Code::INVALID_ARGUMENT, "guidance"),
      orchestrator("zero columns", [](auto& r) { r.mutable_branches()->set_value(0); },
                   Code::INVALID_ARGUMENT, "branches"),
      orchestrator("absurd columns", [](auto& r) { r.mutable_branches()->set_value(1 << 20); },
                   Code::INVALID_ARGUMENT, "branches"),
      orchestrator("negative row", [](auto& r) { r.set_branch_steps(0, -5); },
                   Code::INVALID_ARGUMENT, "branch_steps[0]"),
      orchestrator("row beyond steps", [](auto& r) { r.set_branch_steps(1, 10); },
                   Code::INVALID_ARGUMENT, "branch_steps[1]"),
      orchestrator("unsorted rows", [](auto& r) { r.set_branch_steps(0, 7); },
                   Code::INVALID_ARGUMENT, "branch_steps[1]"),
      orchestrator("absurd rows",
                   [](auto& r) {
                     r.mutable_steps()->set_value(200);
                     r.clear_branch_steps();
                     for (int k = 0; k < 100; ++k) r.add_branch_steps(k);
                   },
                   Code::INVALID_ARGUMENT, "branch_steps"),
      orchestrator("too much work",
                   [](auto& r) {
                     r.mutable_steps()->set_value(999);
                     r.mutable_branches()->set_value(16);
                     r.clear_branch_steps();
                     for (int k = 0; k < 16; ++k) r.add_branch_steps(k * 10);
                   },
                   Code::INVALID_ARGUMENT, "exceeds the limit"),
      orchestrator("trunk with unsorted segments",
                   [](auto& r) {
                     auto* t = r.mutable_trunk();
                     t->add_segments()->set_from_step(0);
                     t->add_segments()->set_from_step(6);
                     t->add_segments()->set_from_step(2);
                   },
                   Code::INVALID_ARGUMENT, "trunk.segments[2].from_step"),
      orchestrator("trunk with duplicate segments",
                   [](auto& r) {
                     auto* t = r.mutable_trunk();
                     t->add_segments()->set_from_step(0);
                     t->add_segments()->set_from_step(0);
                   },
                   Code::INVALID_ARGUMENT, "trunk.segments[1].from_step"),
      orchestrator("trunk not starting at 0",
                   [](auto& r) { r.mutable_trunk()->add_segments()->set_from_step(3); },
                   Code::INVALID_ARGUMENT, "trunk.segments[0].from_step"),
      orchestrator("oversized message", [](auto& r) { r.set_prompt(std::string(2 << 20, 'p')); },
                   Code::RESOURCE_EXHAUSTED, "larger than max"),
  };
  ASSERT_GE(cases.size(), 30u);
  for (const Case& c : cases) {
    grpc::Status status;
    if (c.branch) {
      v1::BranchRequest request = GoodBranch();
      c.branch(request);
      status = Branch(request);
    } else {
      v1::GridRequest request = SmallGrid();
      c.grid(request);
      status = Grid(request);
    }
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_NE(status.error_message().find(c.field), std::string::npos)
        << c.name << ": " << status.error_message();
  }
  ExpectBothStillServe();
  std::cout << cases.size() << " malformed or hostile requests answered\n";
}

// Bytes that are not UTF-8 in a string field, on every RPC of both
// services. Before request parsing named the field, each came back INTERNAL
// with an empty message.
TEST_F(BadInputTest, InvalidUtf8IsInvalidArgumentNamingTheField) {
  v1::GridRequest grid_prompt = SmallGrid();
  grid_prompt.set_prompt(kPlaceholder);
  v1::GridRequest grid_model = SmallGrid();
  grid_model.set_model(kPlaceholder);
  v1::BranchRequest branch_model = GoodBranch();
  branch_model.set_model(kPlaceholder);
  v1::BranchRequest branch_prompt = GoodBranch();
  branch_prompt.mutable_conditioning()->set_prompt(kPlaceholder);
  v1::StepRequest step;
  step.set_model(model_->name());
  step.mutable_conditioning()->set_prompt(kPlaceholder);
  v1::GetModelInfoRequest info;
  info.set_model(kPlaceholder);
  v1::DecodeRequest decode;
  decode.set_model(kPlaceholder);
  const std::string orchestrator = stack_->orchestrator_address();
  const std::string denoiser = stack_->denoiser_address(0);
  const struct {
    std::string address;
    const char* method;
    std::string wire;
    const char* message;
  } cases[] = {
      {orchestrator, "/dgrid.v1.Orchestrator/CreateGrid", WithInvalidUtf8(grid_prompt),
       "prompt: is not valid UTF-8"},
      {orchestrator, "/dgrid.v1.Orchestrator/CreateGrid", WithInvalidUtf8(grid_model),
       "model: is not valid UTF-8"},
      {orchestrator, "/dgrid.v1.Orchestrator/StreamGrid", WithInvalidUtf8(grid_prompt),
       "prompt: is not valid UTF-8"},
      // ListModelsRequest has no field: any bytes that are not a message.
      {orchestrator, "/dgrid.v1.Orchestrator/ListModels", "\xFF\xFF\xFF",
       "request: cannot be parsed as dgrid.v1.ListModelsRequest"},
      {denoiser, "/dgrid.v1.Denoiser/Branch", WithInvalidUtf8(branch_model),
       "model: is not valid UTF-8"},
      {denoiser, "/dgrid.v1.Denoiser/Branch", WithInvalidUtf8(branch_prompt),
       "conditioning.prompt: is not valid UTF-8"},
      {denoiser, "/dgrid.v1.Denoiser/Step", WithInvalidUtf8(step),
       "conditioning.prompt: is not valid UTF-8"},
      {denoiser, "/dgrid.v1.Denoiser/GetModelInfo", WithInvalidUtf8(info),
       "model: is not valid UTF-8"},
      {denoiser, "/dgrid.v1.Denoiser/Decode", WithInvalidUtf8(decode),
       "model: is not valid UTF-8"},
  };
  for (const auto& c : cases) {
    const grpc::Status status = RawCall(c.address, c.method, c.wire);
    EXPECT_EQ(status.error_code(), Code::INVALID_ARGUMENT) << c.method << ": " << c.message
                                                          << ": " << status.error_message();
    EXPECT_EQ(status.error_message(), c.message) << c.method;
  }
  ExpectBothStillServe();
  // The client heard of it; the servers' logs did not, a line a request
  // (protobuf's "String field ... contains invalid UTF-8 data").
  for (const std::string& log : {stack_->orchestrator().Log(), stack_->denoiser(0).Log()}) {
    ASSERT_FALSE(log.empty());  // each writes its start-up lines
    EXPECT_EQ(log.find("UTF-8"), std::string::npos) << log.substr(0, 2000);
  }
}

// A client that gives up at once (Ctrl-C, a closed page; the orchestrator
// itself, when a curve's client leaves) may cancel a call before its
// request arrives. Such calls were counted INTERNAL by the denoiser and
// "failed" by the orchestrator (gRPC's parse of the missing bytes: "Couldn't
// initialize byte buffer reader"), which the error-ratio alerts read as the
// service's own failures. About one call in ten here is cancelled that early.
TEST_F(BadInputTest, CallsCancelledAtOnceAreNotCountedAsFailures) {
  const std::string internal = "dgrid_denoiser_requests_total{code=\"INTERNAL\",method=\"Branch\"}";
  const std::string grids_failed = "dgrid_orchestrator_grids_total{status=\"failed\"}";
  const std::string curves_failed = "dgrid_orchestrator_curves_total{status=\"failed\"}";
  auto count = [&](int i, const std::string& series) {
    return std::max(0.0, stack_->Metric(i, series));  // -1: no such series yet
  };
  const double internal_before = count(0, internal);
  const double grids_before = count(-1, grids_failed);
  const double curves_before = count(-1, curves_failed);
  auto denoiser = stack_->Denoiser(0);
  auto orchestrator = stack_->Orchestrator();
  v1::CurveRequest curve;
  *curve.mutable_grid() = SmallGrid();
  curve.set_trunks(4);
  for (int i = 0; i < 150; ++i) {
    grpc::ClientContext branch_context, grid_context, curve_context;
    auto branch = denoiser->Branch(&branch_context, GoodBranch());
    branch_context.TryCancel();
    branch->Finish();
    auto grid = orchestrator->StreamGrid(&grid_context, SmallGrid());
    grid_context.TryCancel();
    grid->Finish();
    auto curves = orchestrator->DecisionCurve(&curve_context, curve);
    curve_context.TryCancel();
    curves->Finish();
  }
  // The orchestrator counts a grid when its worker ends.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_EQ(count(0, internal), internal_before);
  EXPECT_EQ(count(-1, grids_failed), grids_before);
  EXPECT_EQ(count(-1, curves_failed), curves_before);
  ExpectBothStillServe();
}

// An echoed value is cut to ~100 characters. Before, a prompt or model of
// 8 KB was echoed whole, and the status no longer fit the client's metadata
// limit: the client saw a metadata error, not INVALID_ARGUMENT.
TEST_F(BadInputTest, LongValuesAreEchoedShort) {
  const std::string long_value(8 << 10, 'x');
  const auto expect_short = [](const char* name, const grpc::Status& status,
                               const char* field) {
    EXPECT_EQ(status.error_code(), Code::INVALID_ARGUMENT) << name << ": "
                                                           << status.error_message();
    EXPECT_LT(status.error_message().size(), 300u) << name << ": " << status.error_message();
    EXPECT_EQ(status.error_message().rfind(field, 0), 0u) << name << ": "
                                                          << status.error_message();
    // The value's size: after a short quote of it, or against a size limit
    // (prompts 4,096 bytes, names 256).
    EXPECT_NE(status.error_message().find("8192 bytes"), std::string::npos)
        << name << ": " << status.error_message();
  };
  v1::GridRequest grid = SmallGrid();
  grid.set_prompt(long_value);
  expect_short("grid prompt", Grid(grid), "prompt:");
  grid = SmallGrid();
  grid.set_model(long_value);
  expect_short("grid model", Grid(grid), "model:");
  grid = SmallGrid();
  grid.set_preset(long_value);
  expect_short("grid preset", Grid(grid), "preset:");
  v1::BranchRequest branch = GoodBranch();
  branch.set_model(long_value);
  expect_short("branch model", Branch(branch), "model:");
  branch = GoodBranch();
  branch.mutable_conditioning()->set_prompt(long_value);
  expect_short("branch prompt", Branch(branch), "conditioning.prompt:");
  // A tensor that claims 8,192 dimensions: its shape is a client value too.
  branch = GoodBranch();
  Latent(branch, {0.f}, std::vector<int64_t>(8192, 1));
  const grpc::Status shape = Branch(branch);
  EXPECT_EQ(shape.error_code(), Code::INVALID_ARGUMENT) << shape.error_message();
  EXPECT_LT(shape.error_message().size(), 300u) << shape.error_message();
  EXPECT_EQ(shape.error_message().rfind("trajectories[0].start_latent.shape", 0), 0u)
      << shape.error_message();
  ExpectBothStillServe();
}

// A request over a fixed limit can never succeed: INVALID_ARGUMENT, which
// the orchestrator does not retry, not RESOURCE_EXHAUSTED (retry later).
TEST_F(BadInputTest, PermanentLimitsAreInvalidArgument) {
  v1::BranchRequest branch = GoodBranch();
  for (int i = 0; i < 64; ++i) *branch.add_trajectories() = branch.trajectories(0);
  const grpc::Status branched = Branch(branch);
  EXPECT_EQ(branched.error_code(), Code::INVALID_ARGUMENT) << branched.error_message();
  EXPECT_EQ(branched.error_message().rfind("trajectories:", 0), 0u) << branched.error_message();

  v1::DecodeRequest decode;
  decode.set_model(model_->name());
  for (int i = 0; i < 65; ++i) decode.add_latents();
  grpc::ClientContext context;
  v1::DecodeResponse decoded;
  const grpc::Status status = stack_->Denoiser(0)->Decode(&context, decode, &decoded);
  EXPECT_EQ(status.error_code(), Code::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message().rfind("latents:", 0), 0u) << status.error_message();
}

}  // namespace
}  // namespace dgrid
