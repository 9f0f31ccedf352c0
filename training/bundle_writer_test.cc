#include "bundle_writer.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "dgrid/v1/manifest.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace dgrid::training {
namespace {

namespace fs = std::filesystem;

dgrid::v1::ModelManifest ReadBack(const std::string& path) {
  std::ifstream in(path);
  std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  dgrid::v1::ModelManifest proto;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &proto).ok()) << json;
  return proto;
}

TEST(BundleWriterTest, WritesManifestThatParsesBackWithEngineFields) {
  const fs::path dir = fs::temp_directory_path() / "bundle_writer_test";
  fs::create_directories(dir);
  const std::string path = (dir / "manifest.json").string();

  BundleManifest m = FashionMnistManifest();
  m.training.final_loss = 0.0312;
  m.training.parameters = 696001;
  m.training.command = "dgrid-train diffusion --out_dir x";
  ASSERT_TRUE(WriteManifest(m, path).ok());

  std::ifstream in(path);
  std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // snake_case keys, as in the proto, so that people can grep for them.
  EXPECT_NE(json.find("\"null_label\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"set_alpha_to_one\": false"), std::string::npos) << json;

  dgrid::v1::ModelManifest p = ReadBack(path);
  EXPECT_EQ(p.weights(), "model.pt");
  ASSERT_EQ(p.latent_shape_size(), 3);
  EXPECT_EQ(p.latent_shape(1), 28);
  EXPECT_EQ(p.schedule().train_timesteps(), 1000);
  EXPECT_DOUBLE_EQ(p.schedule().beta_end(), 0.02);
  EXPECT_EQ(p.schedule().prediction_type(), "epsilon");
  EXPECT_TRUE(p.schedule().has_set_alpha_to_one());
  ASSERT_EQ(p.conditioning().class_labels_size(), 10);
  EXPECT_EQ(p.conditioning().class_labels(9), "ankle boot");
  EXPECT_EQ(p.conditioning().null_label(), 10);
  EXPECT_EQ(p.decoder().kind(), "identity");
  EXPECT_EQ(p.data().license(), "MIT");
  EXPECT_EQ(p.training().parameters(), 696001);
  EXPECT_TRUE(p.classifier().empty());

  ASSERT_TRUE(SetManifestClassifier(path, "classifier.pt").ok());
  p = ReadBack(path);
  EXPECT_EQ(p.classifier(), "classifier.pt");
  // The classifier is the bundle's judge, its logits the "class" head.
  EXPECT_EQ(p.judge().weights(), "classifier.pt");
  ASSERT_EQ(p.judge().heads_size(), 1);
  EXPECT_EQ(p.judge().heads(0).name(), "class");
  EXPECT_EQ(p.judge().heads(0).output(), 0);
  ASSERT_EQ(p.judge().heads(0).labels_size(), 10);
  EXPECT_EQ(p.judge().heads(0).labels(9), "ankle boot");
  EXPECT_EQ(p.training().command(), "dgrid-train diffusion --out_dir x");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dgrid::training
