// In-process gRPC round trip: a real DenoiserServer on a free loopback port,
// called through the generated stub.
#include "denoiser_service/server/denoiser_server.h"

#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <thread>

#include <unistd.h>
#include <algorithm>

#include "common/tensor_codec.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "gtest/gtest.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace dgrid {
namespace {

class DenoiserServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("DGRID_FIXTURES");
    ASSERT_NE(dir, nullptr);
    DenoiserServerOptions o;
    o.model_dirs = {std::string(dir) + "/gaussian", std::string(dir) + "/tinyconv"};
    o.listen = "127.0.0.1:0";
    o.threads = 1;
    o.max_queue = 64;
    o.max_trajectories_per_request = 32;
    o.max_message_bytes = 1 << 20;
    auto server = DenoiserServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(8 << 20);
    channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                         grpc::InsecureChannelCredentials(), args);
    stub_ = v1::Denoiser::NewStub(channel_);
  }

  static v1::BranchRequest GaussianBranch(int n) {
    v1::BranchRequest r;
    r.set_model("gaussian");
    r.mutable_sampler()->set_steps(20);
    r.mutable_sampler()->set_eta(1.0f);
    r.mutable_sampler()->set_guidance(1.0f);
    for (int i = 0; i < n; ++i) {
      v1::Path* p = r.add_trajectories()->mutable_path();
      p->set_init_seed(10 + i);
      v1::Segment* s = p->add_segments();
      s->set_from_step(0);
      s->set_noise_seed(20 + i);
    }
    return r;
  }

  struct BranchResult {
    grpc::Status status;
    std::vector<v1::BranchEvent> events;
  };
  BranchResult CallBranch(const v1::BranchRequest& request,
                          absl::Duration timeout = absl::Seconds(30)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    auto reader = stub_->Branch(&context, request);
    BranchResult result;
    v1::BranchEvent event;
    while (reader->Read(&event)) result.events.push_back(event);
    result.status = reader->Finish();
    return result;
  }

  static DenoiserServer* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Denoiser::Stub> stub_;
};

DenoiserServer* DenoiserServerTest::server_ = nullptr;

TEST_F(DenoiserServerTest, GetModelInfoListsBothBundles) {
  grpc::ClientContext context;
  v1::GetModelInfoResponse response;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &response).ok());
  ASSERT_EQ(response.models_size(), 2);
  EXPECT_EQ(response.models(0).name(), "gaussian");
  EXPECT_EQ(response.models(0).prompts_size(), 2);
  EXPECT_EQ(response.models(1).name(), "tinyconv");
  EXPECT_EQ(response.models(1).image_shape(0), 16);
}

TEST_F(DenoiserServerTest, BranchStreamsCapturesBeforeFinalsAndDecodes) {
  v1::BranchRequest request = GaussianBranch(2);
  request.add_capture_steps(5);
  request.add_capture_steps(10);
  request.set_previews(true);
  request.set_decode(true);
  BranchResult r = CallBranch(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.events.size(), 6u);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(r.events[i].has_capture()) << i;
  for (int i = 4; i < 6; ++i) {
    ASSERT_TRUE(r.events[i].has_final());
    const v1::Final& f = r.events[i].final();
    EXPECT_EQ(f.model_evals(), 20);
    EXPECT_EQ(f.image().png().substr(1, 3), "PNG");
    EXPECT_EQ(f.image().pixels().raw_contents().size(), 16u);
    EXPECT_EQ(f.x0_preview().raw_contents().size(), 64u);
  }
  EXPECT_EQ(r.events[0].capture().step(), 5);
}

// A field is sent only when it holds something: the start step's capture
// had an x0 preview (and x0 image) of shape [] and no bytes, and with
// decode_finals_only every capture an empty image, which a client checking
// for the field would try to read.
TEST_F(DenoiserServerTest, ACaptureCarriesNoEmptyPreviewOrImage) {
  v1::BranchRequest request = GaussianBranch(1);
  request.add_capture_steps(0);
  request.add_capture_steps(5);
  request.set_previews(true);
  request.set_decode(true);
  BranchResult r = CallBranch(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.events.size(), 3u);
  const v1::Capture& start = r.events[0].capture();
  ASSERT_EQ(start.step(), 0);
  EXPECT_FALSE(start.has_x0_preview());
  EXPECT_FALSE(start.has_x0_image());
  EXPECT_TRUE(start.has_image());
  EXPECT_TRUE(r.events[1].capture().has_x0_preview());
  EXPECT_TRUE(r.events[1].capture().has_x0_image());
  request.set_decode_finals_only(true);
  r = CallBranch(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(r.events[i].capture().has_image()) << i;
    EXPECT_FALSE(r.events[i].capture().has_x0_image()) << i;
  }
  EXPECT_TRUE(r.events[2].final().has_image());
}

// The version the caller planned with, when it is this replica's, runs.
TEST_F(DenoiserServerTest, BranchRunsForItsOwnModelVersion) {
  v1::BranchRequest request = GaussianBranch(1);
  request.set_model_version("1");
  BranchResult r = CallBranch(request);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
}

TEST_F(DenoiserServerTest, StepsComposeIntoABranch) {
  // Running Step 0..19 one call at a time equals one Branch call: the service
  // is stateless and the path carries the noise.
  v1::BranchRequest branch = GaussianBranch(1);
  BranchResult whole = CallBranch(branch);
  ASSERT_TRUE(whole.status.ok());

  v1::StepRequest step;
  step.set_model("gaussian");
  *step.mutable_sampler() = branch.sampler();
  *step.add_trajectories() = branch.trajectories(0);
  for (int i = 0; i < 20; ++i) {
    step.set_step(i);
    grpc::ClientContext context;
    v1::StepResponse response;
    ASSERT_TRUE(stub_->Step(&context, step, &response).ok()) << i;
    *step.mutable_trajectories(0)->mutable_start_latent() = response.latents(0);
  }
  EXPECT_EQ(step.trajectories(0).start_latent().raw_contents(),
            whole.events.back().final().latent().raw_contents());

  // The last int32 step is out of range, and its next step computed without
  // overflow (undefined behaviour before; UBSan's run reports it).
  step.set_step(std::numeric_limits<int32_t>::max());
  grpc::ClientContext context;
  v1::StepResponse response;
  const grpc::Status refused = stub_->Step(&context, step, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("step"), std::string::npos) << refused.error_message();
  // Out of range either way, without a start latent: the step is named, not
  // the latent that a step in range would need.
  step.mutable_trajectories(0)->clear_start_latent();
  for (int bad : {-1, 5000}) {
    step.set_step(bad);
    grpc::ClientContext bad_context;
    const grpc::Status out = stub_->Step(&bad_context, step, &response);
    EXPECT_EQ(out.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_EQ(out.error_message().rfind("step must be in [0, 20)", 0), 0u)
        << bad << ": " << out.error_message();
  }
}

// A class model's empty prompt is unconditional, as in a path segment and
// a grid's request; it was refused here alone, as an unknown class.
TEST_F(DenoiserServerTest, AClassModelsEmptyPromptIsUnconditional) {
  v1::BranchRequest plain = GaussianBranch(1);
  plain.clear_conditioning();
  v1::BranchRequest empty = plain;
  empty.mutable_conditioning()->set_prompt("");
  const BranchResult a = CallBranch(plain), b = CallBranch(empty);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(a.events.back().final().latent().raw_contents(),
            b.events.back().final().latent().raw_contents());
}

TEST_F(DenoiserServerTest, DecodeReturnsPngs) {
  v1::DecodeRequest request;
  request.set_model("tinyconv");
  EncodeFloatTensor(std::vector<float>(64, 0.5f), std::vector<int64_t>{1, 8, 8},
                    request.add_latents());
  grpc::ClientContext context;
  v1::DecodeResponse response;
  ASSERT_TRUE(stub_->Decode(&context, request, &response).ok());
  ASSERT_EQ(response.images_size(), 1);
  EXPECT_EQ(response.images(0).pixels().shape(0), 16);
  EXPECT_EQ(static_cast<uint8_t>(response.images(0).pixels().raw_contents()[0]), 191);
}

TEST_F(DenoiserServerTest, BadInputGetsACodeAndNamesTheFieldAndTheServerKeepsServing) {
  using Code = grpc::StatusCode;
  struct Case {
    const char* name;
    std::function<void(v1::BranchRequest&)> mutate;
    Code code;
    const char* field;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto latent = [](v1::BranchRequest& r, std::vector<float> v, std::vector<int64_t> shape) {
    r.set_start_step(5);
    EncodeFloatTensor(v, shape, r.mutable_trajectories(0)->mutable_start_latent());
  };
  const Case cases[] = {
      {"unknown model", [](auto& r) { r.set_model("nope"); }, Code::INVALID_ARGUMENT, "model"},
      // Another replica may serve it: UNAVAILABLE, which a caller retries.
      {"another model version", [](auto& r) { r.set_model_version("2"); }, Code::UNAVAILABLE,
       "model_version: this replica serves gaussian version \"1\", not \"2\""},
      {"unknown prompt", [](auto& r) { r.mutable_conditioning()->set_prompt("zebra"); },
       Code::INVALID_ARGUMENT, "conditioning.prompt"},
      {"class out of range", [](auto& r) { r.mutable_conditioning()->set_class_index(9); },
       Code::INVALID_ARGUMENT, "conditioning.class_index"},
      {"steps zero", [](auto& r) { r.mutable_sampler()->set_steps(0); }, Code::INVALID_ARGUMENT,
       "sampler.steps"},
      {"steps negative", [](auto& r) { r.mutable_sampler()->set_steps(-5); },
       Code::INVALID_ARGUMENT, "sampler.steps"},
      {"steps absurd", [](auto& r) { r.mutable_sampler()->set_steps(1 << 30); },
       Code::INVALID_ARGUMENT, "sampler.steps"},
      {"eta above 1", [](auto& r) { r.mutable_sampler()->set_eta(1.01f); },
       Code::INVALID_ARGUMENT, "sampler.eta"},
      {"eta below 0", [](auto& r) { r.mutable_sampler()->set_eta(-1.0f); },
       Code::INVALID_ARGUMENT, "sampler.eta"},
      {"eta NaN", [&](auto& r) { r.mutable_sampler()->set_eta(nan); }, Code::INVALID_ARGUMENT,
       "sampler.eta"},
      {"wrong shape",
       [&](auto& r) { latent(r, std::vector<float>(16, 0.f), {1, 16, 1}); },
       Code::INVALID_ARGUMENT, "trajectories[0].start_latent.shape"},
      {"huge dims",
       [&](auto& r) { latent(r, std::vector<float>(16, 0.f), {1, 1 << 30, 1 << 30}); },
       Code::INVALID_ARGUMENT, "trajectories[0].start_latent.shape"},
      {"byte length",
       [&](auto& r) {
         latent(r, std::vector<float>(16, 0.f), {1, 4, 4});
         r.mutable_trajectories(0)->mutable_start_latent()->mutable_raw_contents()->resize(60);
       },
       Code::INVALID_ARGUMENT, "trajectories[0].start_latent.raw_contents"},
      {"wrong dtype",
       [&](auto& r) {
         latent(r, std::vector<float>(16, 0.f), {1, 4, 4});
         r.mutable_trajectories(0)->mutable_start_latent()->set_dtype(v1::DATA_TYPE_UINT8);
       },
       Code::INVALID_ARGUMENT, "trajectories[0].start_latent.dtype"},
      {"NaN latent",
       [&](auto& r) {
         std::vector<float> v(16, 0.f);
         v[3] = nan;
         latent(r, v, {1, 4, 4});
       },
       Code::INVALID_ARGUMENT, "non-finite"},
      {"Inf latent",
       [&](auto& r) {
         std::vector<float> v(16, 0.f);
         v[0] = std::numeric_limits<float>::infinity();
         latent(r, v, {1, 4, 4});
       },
       Code::INVALID_ARGUMENT, "non-finite"},
      {"missing start latent", [](auto& r) { r.set_start_step(3); }, Code::INVALID_ARGUMENT,
       "trajectories[0].start_latent"},
      {"unsorted segments",
       [](auto& r) {
         v1::Path* p = r.mutable_trajectories(0)->mutable_path();
         p->add_segments()->set_from_step(9);
         p->add_segments()->set_from_step(4);
       },
       Code::INVALID_ARGUMENT, "trajectories[0].path.segments[2].from_step"},
      {"duplicate segments",
       [](auto& r) {
         v1::Path* p = r.mutable_trajectories(0)->mutable_path();
         p->add_segments()->set_from_step(0);
       },
       Code::INVALID_ARGUMENT, "trajectories[0].path.segments[1].from_step"},
      // The request's field, as the range check names it ("steps" is the
      // schedule's own word).
      {"leading steps past the schedule",
       [](auto& r) { r.mutable_sampler()->set_steps(1000); },
       Code::INVALID_ARGUMENT, "sampler.steps: 1000 leading steps with steps_offset 1"},
      {"segment beyond steps",
       [](auto& r) { r.mutable_trajectories(0)->mutable_path()->add_segments()->set_from_step(99); },
       Code::INVALID_ARGUMENT, "trajectories[0].path.segments[1].from_step"},
      // Each distinct one is encoded on the batcher's thread: 64k of them
      // held the replica for a minute.
      {"too many segment conditionings",
       [](auto& r) {
         r.mutable_sampler()->set_steps(100);
         // 40 each in two paths, all distinct.
         *r.add_trajectories() = r.trajectories(0);
         for (int t = 0; t < 2; ++t) {
           v1::Path* p = r.mutable_trajectories(t)->mutable_path();
           for (int k = 1; k <= 40; ++k) {
             v1::Segment* s = p->add_segments();
             s->set_from_step(k);
             s->set_noise_seed(k);
             s->mutable_conditioning()->set_class_index(40 * t + k);
           }
         }
       },
       Code::INVALID_ARGUMENT,
       "trajectories[1].path.segments[25].conditioning: more than 64 distinct"},
      // Few distinct ones, but each a switch the engine holds: 256
      // trajectories of 999 took 75 MB for 3 MB sent.
      {"too many switches in one path",
       [](auto& r) {
         r.mutable_sampler()->set_steps(100);
         v1::Path* p = r.mutable_trajectories(0)->mutable_path();
         for (int k = 1; k <= 65; ++k) {
           v1::Segment* s = p->add_segments();
           s->set_from_step(k);
           s->set_noise_seed(k);
           s->mutable_conditioning()->set_class_index(k % 2);
         }
       },
       Code::INVALID_ARGUMENT,
       "trajectories[0].path.segments[65].conditioning: more than 64 segments of one path"},
      {"no segments",
       [](auto& r) { r.mutable_trajectories(0)->mutable_path()->clear_segments(); },
       Code::INVALID_ARGUMENT, "trajectories[0].path.segments"},
      {"end before start", [](auto& r) { r.set_end_step(-2); }, Code::INVALID_ARGUMENT,
       "end_step"},
      {"capture out of range", [](auto& r) { r.add_capture_steps(40); }, Code::INVALID_ARGUMENT,
       "capture_steps[0]"},
      {"no trajectories", [](auto& r) { r.clear_trajectories(); }, Code::INVALID_ARGUMENT,
       "trajectories"},
      {"too many trajectories",
       [](auto& r) {
         for (int i = 0; i < 40; ++i) *r.add_trajectories() = r.trajectories(0);
       },
       Code::INVALID_ARGUMENT, "trajectories"},
      {"oversized message",
       [](auto& r) { r.set_model(std::string(2 << 20, 'x')); }, Code::RESOURCE_EXHAUSTED,
       "larger than max"},
  };
  for (const Case& c : cases) {
    v1::BranchRequest request = GaussianBranch(1);
    c.mutate(request);
    BranchResult r = CallBranch(request);
    EXPECT_EQ(r.status.error_code(), c.code) << c.name << ": " << r.status.error_message();
    EXPECT_NE(r.status.error_message().find(c.field), std::string::npos)
        << c.name << ": " << r.status.error_message();
    EXPECT_TRUE(r.events.empty()) << c.name;
  }
  // Deadline already expired.
  BranchResult expired = CallBranch(GaussianBranch(1), absl::Milliseconds(-1));
  EXPECT_EQ(expired.status.error_code(), Code::DEADLINE_EXCEEDED);
  // Still serving.
  BranchResult ok = CallBranch(GaussianBranch(3));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.events.size(), 3u);
}

TEST_F(DenoiserServerTest, QueueLimitAnswersResourceExhausted) {
  // max_queue is 64 trajectories: with two 30-trajectory runs admitted (each
  // has sent its first capture, the start latent), a third cannot be.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::BranchEvent>>> running;
  for (int i = 0; i < 2; ++i) {
    v1::BranchRequest request = GaussianBranch(30);
    request.mutable_sampler()->set_steps(999);
    request.clear_capture_steps();
    request.add_capture_steps(0);
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    running.push_back(stub_->Branch(contexts.back().get(), request));
    v1::BranchEvent first;
    ASSERT_TRUE(running.back()->Read(&first));  // admitted
  }
  v1::BranchRequest third = GaussianBranch(30);
  third.mutable_sampler()->set_steps(999);
  EXPECT_EQ(CallBranch(third).status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (size_t i = 0; i < running.size(); ++i) {
    contexts[i]->TryCancel();
    v1::BranchEvent event;
    while (running[i]->Read(&event)) {
    }
    running[i]->Finish();
  }
}

TEST_F(DenoiserServerTest, HealthIsPerModel) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const char* service : {"", "gaussian", "tinyconv", "missing"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status s = health->Check(&context, request, &response);
    if (std::string(service) == "missing") {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    } else {
      ASSERT_TRUE(s.ok()) << service;
      EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    }
  }
}

TEST_F(DenoiserServerTest, BranchSendsProgressWhileItRunsWhenAsked) {
  // A slow replica of its own: 20 steps of 10 ms.
  DenoiserServerOptions o;
  o.model_dirs = {std::string(std::getenv("DGRID_FIXTURES")) + "/gaussian"};
  o.listen = "127.0.0.1:0";
  o.threads = 1;
  o.debug_step_delay = absl::Milliseconds(10);
  auto slow = DenoiserServer::Start(o);
  ASSERT_TRUE(slow.ok()) << slow.status();
  auto stub = v1::Denoiser::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*slow)->port()), grpc::InsecureChannelCredentials()));
  auto call = [&](int interval_ms) {
    v1::BranchRequest request = GaussianBranch(2);
    request.set_progress_interval_ms(interval_ms);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    auto reader = stub->Branch(&context, request);
    BranchResult result;
    v1::BranchEvent event;
    while (reader->Read(&event)) result.events.push_back(event);
    result.status = reader->Finish();
    return result;
  };

  BranchResult r = call(30);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::vector<int64_t> counts;
  int64_t finals_evals = 0;
  for (const v1::BranchEvent& e : r.events) {
    if (e.has_progress()) counts.push_back(e.progress().model_evals());
    if (e.has_final()) finals_evals += e.final().model_evals();
  }
  EXPECT_EQ(finals_evals, 40);
  // About 200 ms of work at a 30 ms interval: several counts, growing, never
  // past what the finals report.
  ASSERT_GE(counts.size(), 3u);
  EXPECT_TRUE(std::is_sorted(counts.begin(), counts.end()));
  EXPECT_LT(counts.front(), counts.back());
  EXPECT_LE(counts.back(), finals_evals);

  // Not asked, none: callers that predate Progress see the old stream.
  BranchResult quiet = call(0);
  ASSERT_TRUE(quiet.status.ok());
  EXPECT_EQ(quiet.events.size(), 2u);
  for (const v1::BranchEvent& e : quiet.events) EXPECT_TRUE(e.has_final());
  EXPECT_EQ(call(-1).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DenoiserServerTest, AHugeStartLatentIsRejectedAndItsEvaluationsReported) {
  // Finite, but tinyconv's sums overflow on it: not an OK NaN result, and a
  // code the orchestrator does not retry on another replica. The last
  // Progress tells the caller what the failed call spent.
  v1::BranchRequest request;
  request.set_model("tinyconv");
  request.mutable_sampler()->set_steps(10);
  request.set_start_step(5);
  request.set_progress_interval_ms(60000);
  v1::TrajectoryInput* t = request.add_trajectories();
  t->mutable_path()->add_segments()->set_noise_seed(3);
  std::vector<float> huge(64);
  for (size_t j = 0; j < huge.size(); ++j) huge[j] = j % 2 ? 3e38f : -3e38f;
  EncodeFloatTensor(huge, {1, 8, 8}, t->mutable_start_latent());
  BranchResult r = CallBranch(request);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("trajectories[0].start_latent"), std::string::npos)
      << r.status.error_message();
  ASSERT_EQ(r.events.size(), 1u);
  ASSERT_TRUE(r.events[0].has_progress());
  EXPECT_EQ(r.events[0].progress().model_evals(), 1);
}

// A server of one fixture bundle on loopback, and a stub to it.
struct FixtureServer {
  std::unique_ptr<DenoiserServer> server;
  std::unique_ptr<v1::Denoiser::Stub> stub;
};
absl::StatusOr<FixtureServer> StartFixture(const std::string& bundle,
                                           int max_message_bytes = 16 << 20) {
  DenoiserServerOptions o;
  o.model_dirs = {std::string(std::getenv("DGRID_FIXTURES")) + "/" + bundle};
  o.listen = "127.0.0.1:0";
  o.threads = 2;
  o.max_message_bytes = max_message_bytes;
  absl::StatusOr<std::unique_ptr<DenoiserServer>> server = DenoiserServer::Start(o);
  if (!server.ok()) return server.status();
  auto stub = v1::Denoiser::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  return FixtureServer{std::move(*server), std::move(stub)};
}

// A Branch call's status, its events read and dropped.
grpc::Status BranchStatus(v1::Denoiser::Stub& stub, const v1::BranchRequest& request) {
  grpc::ClientContext context;
  auto reader = stub.Branch(&context, request);
  v1::BranchEvent event;
  while (reader->Read(&event)) {
  }
  return reader->Finish();
}

// A refusal of an answer past --max_message_bytes: `code`, its message
// starting with `starts` (the field, the count) and saying how many fit.
void ExpectPastTheLimit(const grpc::Status& status, grpc::StatusCode code,
                        const std::string& starts) {
  EXPECT_EQ(status.error_code(), code) << status.error_message();
  EXPECT_EQ(status.error_message().rfind(starts, 0), 0u) << status.error_message();
  EXPECT_NE(status.error_message().find("(--max_message_bytes); at most "), std::string::npos)
      << status.error_message();
}

// An answer past --max_message_bytes is refused naming the field and how
// many fit, before the work where its size is known (Step), after it where
// it is not (Decode's PNGs); gRPC alone answered "larger than max" after
// the work, and the call counted as OK. The server keeps serving.
TEST(AnswerSizeTest, AnAnswerPastTheMessageLimitIsRefusedNamingTheField) {
  absl::StatusOr<FixtureServer> fixture = StartFixture("tinyconv", 4096);
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  v1::Denoiser::Stub* stub = fixture->stub.get();

  // tinyconv's latent is 1x8x8 floats: a Step answers 538 bytes of latent
  // and x0 per trajectory, so 7 fit and 8 do not.
  auto step = [&](int n) {
    v1::StepRequest request;
    request.set_model("tinyconv");
    request.mutable_sampler()->set_steps(10);
    for (int i = 0; i < n; ++i) {
      v1::Path* path = request.add_trajectories()->mutable_path();
      path->set_init_seed(i);
      path->add_segments()->set_noise_seed(i);
    }
    grpc::ClientContext context;
    v1::StepResponse response;
    return stub->Step(&context, request, &response);
  };
  const grpc::Status too_many = step(8);
  EXPECT_EQ(too_many.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(too_many.error_message(),
            "trajectories: 8 latents and x0 previews make an answer of 4 KiB, past this "
            "replica's message limit of 4 KiB (--max_message_bytes); at most 7 fit in one call");
  const grpc::Status one = step(7);
  EXPECT_TRUE(one.ok()) << one.error_message();

  // A 16x16 image is 256 bytes of pixels and its PNG (of noise here, which
  // compresses badly), about 500 bytes in all: 9 images pass 4 KiB.
  auto decode = [&](int n) {
    v1::DecodeRequest request;
    request.set_model("tinyconv");
    for (int i = 0; i < n; ++i) {
      std::vector<float> latent(64);
      for (int j = 0; j < 64; ++j) latent[j] = std::sin(12.9898f * (j + 64 * i));
      EncodeFloatTensor(latent, std::vector<int64_t>{1, 8, 8}, request.add_latents());
    }
    grpc::ClientContext context;
    v1::DecodeResponse response;
    return stub->Decode(&context, request, &response);
  };
  ExpectPastTheLimit(decode(9), grpc::StatusCode::INVALID_ARGUMENT,
                     "latents: 9 images make an answer of 4 KiB");
  EXPECT_TRUE(decode(1).ok());
}

// A Branch event, and the small answers, are held to the message limit
// too: gRPC would refuse them after the work, as a bare "larger than max"
// that the handler took for a client gone.
TEST(AnswerSizeTest, BranchEventsAndSmallAnswersPastTheLimitAreRefusedNamingWhy) {
  // tinyconv: a latent of 269 bytes, a 16x16 image of 256 pixels and a PNG
  // of noise about as large.
  absl::StatusOr<FixtureServer> fixture = StartFixture("tinyconv", 640);
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  auto branch = [&](bool decode, bool previews) {
    v1::BranchRequest request;
    request.set_model("tinyconv");
    request.mutable_sampler()->set_steps(4);
    request.set_decode(decode);
    request.set_previews(previews);
    v1::Path* path = request.add_trajectories()->mutable_path();
    path->set_init_seed(3);
    path->add_segments()->set_noise_seed(3);
    return BranchStatus(*fixture->stub, request);
  };
  // Known before the work: two latents and two images pass 640 bytes.
  const grpc::Status previews = branch(true, true);
  EXPECT_EQ(previews.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(previews.error_message().rfind("previews: one event of this model is ", 0), 0u)
      << previews.error_message();
  // Known only once the PNG is made: a latent and an image fit, with the
  // PNG they do not.
  const grpc::Status decoded = branch(true, false);
  EXPECT_EQ(decoded.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(decoded.error_message().rfind("decode: an event of ", 0), 0u)
      << decoded.error_message();
  EXPECT_NE(decoded.error_message().find("(--max_message_bytes)"), std::string::npos);
  const grpc::Status latents = branch(false, false);
  EXPECT_TRUE(latents.ok()) << latents.error_message();

  // A limit below even the model list: the server's own setting, not the
  // caller's doing.
  absl::StatusOr<FixtureServer> tiny = StartFixture("tinyconv", 20);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  grpc::ClientContext context;
  v1::GetModelInfoResponse info;
  const grpc::Status listed = tiny->stub->GetModelInfo(&context, {}, &info);
  EXPECT_EQ(listed.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(listed.error_message().find("past this replica's message limit of 20 bytes"),
            std::string::npos)
      << listed.error_message();
}

// Token lists past the limit are the replica's limit, not the caller's
// mistake: an orchestrator tokenizes prompts of its own accord, and would
// pass an INVALID_ARGUMENT on to its client as the client's.
TEST(AnswerSizeTest, TokenListsPastTheLimitAreTheReplicasLimit) {
  absl::StatusOr<FixtureServer> fixture = StartFixture("textlatent", 640);
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  // An empty text is 2 bytes asked and BOS, EOS (about 10 bytes) answered.
  auto tokenize = [&](int n) {
    v1::TokenizeRequest request;
    request.set_model("textlatent");
    for (int i = 0; i < n; ++i) request.add_texts("");
    grpc::ClientContext context;
    v1::TokenizeResponse response;
    return fixture->stub->Tokenize(&context, request, &response);
  };
  ExpectPastTheLimit(tokenize(100), grpc::StatusCode::FAILED_PRECONDITION,
                     "texts: 100 token lists make an answer of ");
  const grpc::Status few = tokenize(4);
  EXPECT_TRUE(few.ok()) << few.error_message();
  // So are more texts than --max_trajectories_per_request.
  absl::StatusOr<FixtureServer> counted = StartFixture("textlatent");
  ASSERT_TRUE(counted.ok()) << counted.status();
  v1::TokenizeRequest request;
  request.set_model("textlatent");
  for (int i = 0; i < 257; ++i) request.add_texts("");
  grpc::ClientContext context;
  v1::TokenizeResponse response;
  const grpc::Status many = counted->stub->Tokenize(&context, request, &response);
  EXPECT_EQ(many.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << many.error_message();
  EXPECT_EQ(many.error_message(), "texts: at most 256 per request (--max_trajectories_per_request)");
}

// A latent the decoder turns into NaN came back OK as a black image; it is
// the caller's when past any sampler's scale.
TEST(DecodeTest, ALatentThatDecodesToNonFinitePixelsIsRefusedNotBlack) {
  absl::StatusOr<FixtureServer> fixture = StartFixture("textlatent");
  ASSERT_TRUE(fixture.ok()) << fixture.status();
  v1::Denoiser::Stub* stub = fixture->stub.get();
  // One latent a value: the error names the one that fails.
  auto decode = [&](std::vector<float> values) {
    v1::DecodeRequest request;
    request.set_model("textlatent");
    for (float value : values) {
      EncodeFloatTensor(std::vector<float>(4 * 8 * 8, value), std::vector<int64_t>{4, 8, 8},
                        request.add_latents());
    }
    grpc::ClientContext context;
    v1::DecodeResponse response;
    return stub->Decode(&context, request, &response);
  };
  // In a Branch, a capture at the start step is the caller's latent as it
  // came: decoded to NaN, the caller's again, named as its field.
  {
    v1::BranchRequest request;
    request.set_model("textlatent");
    request.mutable_sampler()->set_steps(4);
    request.set_decode(true);
    request.add_capture_steps(0);
    v1::TrajectoryInput* t = request.add_trajectories();
    t->mutable_path()->add_segments()->set_noise_seed(1);
    EncodeFloatTensor(std::vector<float>(4 * 8 * 8, 3e38f), std::vector<int64_t>{4, 8, 8},
                      t->mutable_start_latent());
    const grpc::Status branched = BranchStatus(*stub, request);
    EXPECT_EQ(branched.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(branched.error_message().rfind(
                  "trajectories[0].start_latent: decodes to non-finite pixels", 0),
              0u)
        << branched.error_message();
  }
  const grpc::Status huge = decode({1.0f, 3e38f});
  EXPECT_EQ(huge.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(huge.error_message().rfind(
                "latents[1]: decodes to non-finite pixels (NaN or Inf); its largest magnitude, "
                "3e+38, is outside",
                0),
            0u)
      << huge.error_message();
  EXPECT_TRUE(decode({1.0f}).ok());
}

TEST(ModelDirsTest, AFolderOfBundlesExpandsByNameAndFlagOrderIsKept) {
  const std::string fixtures = std::filesystem::absolute(std::getenv("DGRID_FIXTURES")).string();
  const std::filesystem::path folder =
      std::filesystem::temp_directory_path() / absl::StrCat("dgrid-bundles-", getpid());
  std::filesystem::remove_all(folder);
  std::filesystem::create_directories(folder / "not-a-bundle");
  std::filesystem::create_directory_symlink(fixtures + "/tinyconv", folder / "b-tiny");
  std::filesystem::create_directory_symlink(fixtures + "/gaussian", folder / "a-gauss");

  absl::StatusOr<std::vector<std::string>> dirs = ExpandModelDirs({folder.string()});
  ASSERT_TRUE(dirs.ok()) << dirs.status();
  EXPECT_EQ(*dirs, (std::vector<std::string>{(folder / "a-gauss").string(),
                                             (folder / "b-tiny").string()}));
  dirs = ExpandModelDirs({fixtures + "/tinyconv", fixtures + "/gaussian"});
  ASSERT_TRUE(dirs.ok()) << dirs.status();
  EXPECT_EQ(*dirs, (std::vector<std::string>{fixtures + "/tinyconv", fixtures + "/gaussian"}));
  dirs = ExpandModelDirs({(folder / "not-a-bundle").string()});
  ASSERT_FALSE(dirs.ok());
  EXPECT_NE(dirs.status().message().find("not-a-bundle"), std::string::npos)
      << dirs.status().message();

  // GetModelInfo lists the models in --model_dir order, not by name: the
  // first is what a request naming no model gets.
  DenoiserServerOptions o;
  o.model_dirs = {fixtures + "/tinyconv", folder.string()};
  o.listen = "127.0.0.1:0";
  o.threads = 1;
  absl::StatusOr<std::unique_ptr<DenoiserServer>> server = DenoiserServer::Start(o);
  std::filesystem::remove_all(folder);
  EXPECT_FALSE(server.ok());  // tinyconv twice: two bundles of one name
  o.model_dirs = {fixtures + "/tinyconv", fixtures + "/gaussian"};
  server = DenoiserServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Denoiser::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::GetModelInfoResponse info;
  ASSERT_TRUE(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  ASSERT_EQ(info.models_size(), 2);
  EXPECT_EQ(info.models(0).name(), "tinyconv");
  EXPECT_EQ(info.models(1).name(), "gaussian");
  // The startup line's order too (it was by name).
  EXPECT_EQ((*server)->model_names(), (std::vector<std::string>{"tinyconv", "gaussian"}));
}

}  // namespace
}  // namespace dgrid
