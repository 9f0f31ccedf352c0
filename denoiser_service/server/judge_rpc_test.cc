// The Judge RPC on the shipped bundles' judges: a real DenoiserServer on a
// free loopback port, called through the generated stub.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/png_image.h"
#include "common/tensor_codec.h"
#include "denoiser_service/server/denoiser_server.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

class JudgeRpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    DenoiserServerOptions o;
    o.model_dirs = {std::string(DGRID_SOURCE_DIR) + "/models/fashion-mnist",
                    std::string(DGRID_SOURCE_DIR) + "/models/emoji"};
    o.listen = "127.0.0.1:0";
    o.threads = 1;
    o.max_trajectories_per_request = 40;
    auto server = DenoiserServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    stub_ = v1::Denoiser::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  }

  // Final images of `n` trajectories of fashion-mnist drawing `prompt`.
  std::vector<v1::Image> Samples(const std::string& prompt, int n) {
    v1::BranchRequest r;
    r.set_model("fashion-mnist");
    r.mutable_conditioning()->set_prompt(prompt);
    r.mutable_sampler()->set_steps(25);
    r.mutable_sampler()->set_eta(1.0f);
    r.mutable_sampler()->set_guidance(1.5f);  // the bundle's default
    r.set_decode(true);
    for (int i = 0; i < n; ++i) {
      v1::Path* p = r.add_trajectories()->mutable_path();
      p->set_init_seed(100 + i);
      p->add_segments()->set_noise_seed(200 + i);
    }
    grpc::ClientContext context;
    auto reader = stub_->Branch(&context, r);
    std::vector<v1::Image> images(n);
    v1::BranchEvent event;
    while (reader->Read(&event)) {
      if (event.has_final()) images[event.final().trajectory()] = event.final().image();
    }
    EXPECT_TRUE(reader->Finish().ok());
    return images;
  }

  grpc::Status Judge(const v1::JudgeRequest& request, v1::JudgeResponse* response,
                     absl::Duration timeout = absl::Seconds(30)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Judge(&context, request, response);
  }

  static DenoiserServer* server_;
  std::unique_ptr<v1::Denoiser::Stub> stub_;
};

DenoiserServer* JudgeRpcTest::server_ = nullptr;

TEST_F(JudgeRpcTest, ModelInfoListsTheJudgesHeadsAndLabels) {
  grpc::ClientContext context;
  v1::GetModelInfoResponse response;
  ASSERT_TRUE(stub_->GetModelInfo(&context, {}, &response).ok());
  ASSERT_EQ(response.models_size(), 2);
  const v1::JudgeInfo& fashion = response.models(0).judge();
  ASSERT_EQ(fashion.heads_size(), 1);
  EXPECT_EQ(fashion.heads(0).name(), "class");
  EXPECT_EQ(fashion.heads(0).labels(1), "trouser");
  const v1::JudgeInfo& emoji = response.models(1).judge();
  ASSERT_EQ(emoji.heads_size(), 2);
  EXPECT_EQ(emoji.heads(0).name(), "subcategory");
  EXPECT_EQ(emoji.heads(1).labels_size(), 2);
}

// The judge agrees with what the model was asked to draw, and a PNG and the
// same pixels get the same verdict.
TEST_F(JudgeRpcTest, JudgesSamplesAsTheClassTheyWereDrawnAs) {
  const std::vector<v1::Image> trousers = Samples("trouser", 6);
  v1::JudgeRequest request;  // model "": the first, fashion-mnist
  for (const v1::Image& image : trousers) {
    request.add_images()->set_png(image.png());
    *request.add_images()->mutable_pixels() = image.pixels();
  }
  v1::JudgeResponse response;
  grpc::Status status = Judge(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.images_size(), 12);
  int trouser = 0;
  for (int i = 0; i < 12; i += 2) {
    const v1::HeadVerdict& png = response.images(i).heads(0);
    const v1::HeadVerdict& pixels = response.images(i + 1).heads(0);
    EXPECT_EQ(png.head(), "class");
    EXPECT_EQ(png.label_index(), pixels.label_index());
    EXPECT_FLOAT_EQ(png.probability(), pixels.probability());
    EXPECT_GT(png.probability(), 0.1f);
    EXPECT_LE(png.probability(), 1.0f);
    trouser += png.label() == "trouser";
  }
  // A judge that ignored the image would call about 1 in 10 a trouser.
  EXPECT_GE(trouser, 4);
}

TEST_F(JudgeRpcTest, EveryHeadAnswersForAnRgbModel) {
  v1::JudgeRequest request;
  request.set_model("emoji");
  std::vector<uint8_t> grey(64 * 64 * 3, 128);
  EncodeUint8Tensor(grey, {64, 64, 3}, request.add_images()->mutable_pixels());
  v1::JudgeResponse response;
  ASSERT_TRUE(Judge(request, &response).ok());
  ASSERT_EQ(response.images(0).heads_size(), 2);
  EXPECT_EQ(response.images(0).heads(1).head(), "style");
  const std::string style = response.images(0).heads(1).label();
  EXPECT_TRUE(style == "noto" || style == "twemoji") << style;
}

TEST_F(JudgeRpcTest, BadImagesAreRefusedByField) {
  auto refused = [&](const v1::JudgeRequest& request, const std::string& field) {
    v1::JudgeResponse response;
    grpc::Status status = Judge(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(status.error_message().find(field), std::string::npos) << status.error_message();
  };
  v1::JudgeRequest request;
  refused(request, "images");
  std::vector<uint8_t> good(28 * 28, 0);
  EncodeUint8Tensor(good, {28, 28, 1}, request.add_images()->mutable_pixels());
  EncodeUint8Tensor(good, {28, 1, 28}, request.add_images()->mutable_pixels());
  refused(request, "images[1].pixels.shape");
  request.mutable_images(1)->Clear();
  absl::StatusOr<std::string> big = EncodePng(std::vector<uint8_t>(64 * 64, 0), 64, 64, 1);
  request.mutable_images(1)->set_png(*big);
  refused(request, "images[1].png");
  request.mutable_images(1)->set_png("not a png");
  refused(request, "images[1].png");
  request.clear_images();
  for (int i = 0; i < 41; ++i) {
    EncodeUint8Tensor(good, {28, 28, 1}, request.add_images()->mutable_pixels());
  }
  refused(request, "images: 41");
}

TEST_F(JudgeRpcTest, APassedDeadlineIsDeadlineExceeded) {
  v1::JudgeRequest request;
  request.set_model("emoji");
  for (int i = 0; i < 40; ++i) {
    EncodeUint8Tensor(std::vector<uint8_t>(64 * 64 * 3, 0), {64, 64, 3},
                      request.add_images()->mutable_pixels());
  }
  v1::JudgeResponse response;
  EXPECT_EQ(Judge(request, &response, absl::ZeroDuration()).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

}  // namespace
}  // namespace dgrid

namespace dgrid {
namespace {

// A judge whose head reads the wrong output (fashion-mnist's features, 128
// wide, for 10 labels) fails at start-up, naming the head and the shapes.
TEST(JudgeLoadTest, AHeadOfTheWrongShapeFailsAtStartUpNamingIt) {
  namespace fs = std::filesystem;
  const fs::path source = fs::path(DGRID_SOURCE_DIR) / "models" / "fashion-mnist";
  const fs::path dir = fs::path(::testing::TempDir()) / "judge_wrong_head";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* part : {"model.pt", "classifier.pt"}) fs::copy_file(source / part, dir / part);
  std::ifstream in(source / "manifest.json");
  std::stringstream manifest;
  manifest << in.rdbuf();
  std::string text = manifest.str();
  const size_t output = text.find("\"output\": 0");
  ASSERT_NE(output, std::string::npos);
  text.replace(output, 11, "\"output\": 1");
  std::ofstream(dir / "manifest.json") << text;

  DenoiserServerOptions o;
  o.model_dirs = {dir.string()};
  o.threads = 1;
  absl::Status status = DenoiserServer::Start(o).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("judge.heads[0] (class)"), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find("[2, 128]"), absl::string_view::npos) << status;
}

}  // namespace
}  // namespace dgrid
