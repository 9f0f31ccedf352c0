#include "common/manifest_reader.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

constexpr char kGood[] = R"({
  "name": "toy", "version": "1",
  "latent_shape": [1, 4, 4], "weights": "model.pt",
  "schedule": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
               "train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": false},
  "conditioning": {"class_labels": ["a", "b"], "null_label": 2},
  "defaults": {"steps": 20, "eta": 1.0, "guidance": 2.0, "spacing": "trailing"}
})";

TEST(ManifestReaderTest, ParsesAGoodManifest) {
  auto m = ParseManifestJson(kGood);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->name, "toy");
  EXPECT_EQ(m->LatentNumel(), 16);
  EXPECT_EQ(m->image_shape, (std::vector<int64_t>{4, 4, 1}));
  EXPECT_FALSE(m->schedule.set_alpha_to_one);
  EXPECT_EQ(m->schedule.steps_offset, 1);
  EXPECT_EQ(m->ClassIndex("b"), 1);
  EXPECT_EQ(m->ClassIndex("zebra"), -1);
  EXPECT_EQ(m->null_label, 2);
  EXPECT_EQ(m->defaults.spacing, Spacing::kTrailing);
  EXPECT_FLOAT_EQ(m->defaults.guidance, 2.0f);
}

TEST(ManifestReaderTest, RejectsBadFieldsByName) {
  const struct {
    const char* json;
    const char* field;
  } cases[] = {
      {R"({"latent_shape": [1,4,4], "weights": "m.pt", "schedule": {"train_timesteps": 10, "beta_start": 0.1, "beta_end": 0.2}})",
       "name"},
      {R"({"name": "x", "latent_shape": [1,4], "weights": "m.pt"})", "latent_shape"},
      {R"({"name": "x", "latent_shape": [1,4,0], "weights": "m.pt"})", "latent_shape"},
      {R"({"name": "x", "latent_shape": [1,4,4], "weights": "../m.pt"})", "weights"},
      {R"({"name": "x", "latent_shape": [1,4,4], "weights": "m.pt", "schedule": {"beta_schedule": "cosine"}})",
       "schedule.beta_schedule"},
      {R"({"name": "x", "latent_shape": [1,4,4], "weights": "m.pt", "schedule": {"train_timesteps": 1000, "beta_start": 0.5, "beta_end": 0.1}})",
       "schedule.beta_start"},
      {R"({"name": "x", "latent_shape": [1,4,4], "weights": "m.pt", "bogus": 1})", "bogus"},
      {R"({"name": )", "manifest.json"},
  };
  for (const auto& c : cases) {
    auto m = ParseManifestJson(c.json);
    ASSERT_FALSE(m.ok()) << c.json;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(c.field), absl::string_view::npos)
        << m.status().message();
  }
}

TEST(ManifestReaderTest, MissingFolderIsNotFound) {
  EXPECT_EQ(ReadManifest("/nonexistent/bundle").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dgrid
