#include "common/manifest_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>

#include "absl/strings/str_cat.h"
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
      // The identity decoder's image is the latent: same height and width.
      {R"({"name": "x", "latent_shape": [1,4,4], "image_shape": [8,8,1], "weights": "m.pt", "schedule": {"train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02}})",
       "image_shape"},
      {R"({"name": "x", "latent_shape": [1,4,4], "weights": "m.pt", "max_batch": 1, "schedule": {"train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02}})",
       "max_batch"},
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

// Numbers a request that leaves a setting unset would inherit, or that
// decoding uses, are refused at load with the field named: before, guidance
// -5 or NaN loaded and failed every such request, and latent_scale 1e-300
// gave black images.
TEST(ManifestReaderTest, RefusesNumbersOutsideSensibleRangesByName) {
  // `fields` with a good schedule and latent shape unless they bring their own.
  auto manifest = [&](const std::string& fields) {
    const bool scheduled = fields.find("schedule") != std::string::npos;
    const std::string base =
        std::string(R"("name": "x", "weights": "m.pt")") +
        (fields.find("latent_shape") != std::string::npos ? "" : R"(, "latent_shape": [1,4,4])");
    return "{" + base + ", " + fields +
           (scheduled ? "" : R"(, "schedule": {"beta_start": 0.0001, "beta_end": 0.02,
                                                 "train_timesteps": 1000})") +
           "}";
  };
  const struct {
    const char* json;
    const char* field;
  } cases[] = {
      {R"("defaults": {"guidance": -5})", "defaults.guidance"},
      {R"("defaults": {"guidance": "NaN"})", "defaults.guidance"},
      {R"("defaults": {"guidance": "Infinity"})", "defaults.guidance"},
      {R"("defaults": {"guidance": 101})", "defaults.guidance"},
      {R"("defaults": {"eta": "NaN"})", "defaults.eta"},
      {R"("defaults": {"spacing": "sideways"})", "defaults.spacing"},
      {R"("decoder": {"latent_scale": 1e-300})", "decoder.latent_scale"},
      {R"("decoder": {"latent_scale": "Infinity"})", "decoder.latent_scale"},
      {R"("decoder": {"latent_scale": -0.18})", "decoder.latent_scale"},
      {R"("decoder": {"value_range": [0, 1e-300]})", "decoder.value_range"},
      {R"("decoder": {"value_range": [-1e300, 1]})", "decoder.value_range"},
      {R"("decoder": {"value_range": ["NaN", 1]})", "decoder.value_range"},
      {R"("schedule": {"beta_start": 1e-300, "beta_end": 0.02, "train_timesteps": 1000})",
       "schedule.beta_start"},
      {R"("schedule": {"beta_start": "NaN", "beta_end": 0.02, "train_timesteps": 1000})",
       "schedule.beta_start"},
      {R"("schedule": {"beta_start": 0.0001, "beta_end": "Infinity", "train_timesteps": 1000})",
       "schedule.beta_end"},
      {R"("schedule": {"beta_start": 0.0001, "beta_end": 0.9999, "train_timesteps": 1000})",
       "schedule.beta_end"},
      {R"("schedule": {"beta_schedule": "squaredcos_cap_v2", "beta_start": "NaN",
                       "train_timesteps": 1000})",
       "schedule.beta_"},
      {R"("conditioning": {"null_label": -1})", "conditioning.null_label"},
      {R"("conditioning": {"null_label": 4294967296})", "conditioning.null_label"},
      // A class as the unconditional row (0 when left out).
      {R"("conditioning": {"class_labels": ["a", "b"]})",
       "conditioning.null_label: 0 is class \"a\"; give an index past the 2 classes"},
      {R"("conditioning": {"class_labels": ["a", "b"], "null_label": 1})",
       "conditioning.null_label: 1 is class \"b\""},
      // alpha-bar about 1e-133 at the last timestep: every sample overflows.
      {R"("schedule": {"beta_start": 0.0001, "beta_end": 0.5, "train_timesteps": 1000})",
       "schedule.beta_end: alpha-bar at the last training timestep is "},
      // Leading steps past the table's end: every default request refused.
      {R"("schedule": {"beta_start": 0.0001, "beta_end": 0.02, "train_timesteps": 1000,
                       "steps_offset": 1}, "defaults": {"steps": 1000})",
       "defaults.steps"},
      // Two channels, from the latent's shape: no image format has them.
      {R"("latent_shape": [2,4,4])", "image_shape: channels must be 1 or 3, got 2 (from latent_shape"},
  };
  for (const auto& c : cases) {
    const std::string json = manifest(c.json);
    auto m = ParseManifestJson(json);
    ASSERT_FALSE(m.ok()) << json;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(c.field), absl::string_view::npos)
        << json << ": " << m.status().message();
  }
  // The edges of the ranges load, and so do the shipped bundles' values.
  for (const char* good : {R"("defaults": {"guidance": 100, "eta": 0})",
                           R"("conditioning": {"class_labels": ["a", "b"], "null_label": 2})",
                           R"("schedule": {"beta_schedule": "squaredcos_cap_v2",
                                           "train_timesteps": 100000})",
                           R"("schedule": {"beta_start": 0.0001, "beta_end": 0.02,
                                           "train_timesteps": 1000, "steps_offset": 1},
                              "defaults": {"steps": 999})",
                           R"("decoder": {"latent_scale": 0.18215, "value_range": [0, 1]})",
                           R"("schedule": {"beta_schedule": "squaredcos_cap_v2",
                                           "train_timesteps": 1000})"}) {
    const std::string json = manifest(good);
    EXPECT_TRUE(ParseManifestJson(json).ok()) << json << ": " << ParseManifestJson(json).status();
  }
}

TEST(ManifestReaderTest, ATokenizerIdBelowMinusOneIsRefusedByName) {
  const std::string json = R"({"name": "x", "latent_shape": [1,4,4], "weights": "m.pt",
    "schedule": {"beta_start": 0.0001, "beta_end": 0.02, "train_timesteps": 1000},
    "conditioning": {"kind": "text", "text_encoder": {"weights": "t.pt", "context_dim": 4},
      "tokenizer": {"kind": "words", "vocab": "v.txt", "pad_id": -2}}})";
  auto m = ParseManifestJson(json);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("conditioning.tokenizer.pad_id"), absl::string_view::npos)
      << m.status();
}

// Example prompts go to clients as they are, and come back as prompts.
TEST(ManifestReaderTest, ExamplePromptsArePlainTextAPromptLong) {
  auto with_examples = [](const std::string& examples) {
    return absl::StrCat(R"({"name": "x", "latent_shape": [1,4,4], "weights": "m.pt",
      "schedule": {"beta_start": 0.0001, "beta_end": 0.02, "train_timesteps": 1000},
      "conditioning": {"kind": "text", "text_encoder": {"weights": "t.pt", "context_dim": 4},
        "tokenizer": {"kind": "words", "vocab": "v.txt"}, "example_prompts": )",
                        examples, "}}");
  };
  EXPECT_TRUE(ParseManifestJson(with_examples(R"(["a cat", "a dog"])")).ok());
  std::string many = "[";
  for (int i = 0; i < 65; ++i) absl::StrAppend(&many, i ? "," : "", "\"p", i, "\"");
  many += "]";
  const std::pair<std::string, const char*> cases[] = {
      {many, "conditioning.example_prompts: more than 64 prompts"},
      {R"(["a cat", "a \u001b[2Jdog"])", "conditioning.example_prompts[1]: holds a control"},
      // A client's prompt may not hold one, so a prompt offered to it may not.
      {R"(["a \ufdd0 cat"])",
       "manifest conditioning.example_prompts[0]: holds the noncharacter U+FDD0"},
      {absl::StrCat(R"([")", std::string(5000, 'p'), R"("])"),
       "conditioning.example_prompts[0]: is 5000 bytes, more than 4096"},
  };
  for (const auto& [examples, says] : cases) {
    auto m = ParseManifestJson(with_examples(examples));
    ASSERT_FALSE(m.ok()) << examples.substr(0, 40);
    EXPECT_NE(m.status().message().find(says), absl::string_view::npos) << m.status().message();
  }
}

// A text manifest with `extra` (SDXL-style conditioning) set to `extra`.
std::string TextManifestWithExtra(const std::string& extra, const std::string& kind = "text") {
  return absl::StrCat(R"({"name": "x", "latent_shape": [4,8,8], "image_shape": [32,32,3],
    "weights": "m.pt", "decoder": {"kind": "torchscript", "weights": "d.pt"},
    "schedule": {"beta_start": 0.0001, "beta_end": 0.02, "train_timesteps": 1000},
    "conditioning": {"kind": ")", kind, R"(", "text_encoder": {"weights": "t.pt", "context_dim": 4},
      "tokenizer": {"kind": "words", "vocab": "v.txt"}, "extra": )", extra, "}}");
}

TEST(ManifestReaderTest, ReadsSdxlStyleExtraConditioning) {
  auto m = ParseManifestJson(TextManifestWithExtra(
      R"({"pooled_dim": 16, "size_ids": true, "second_pad_id": 0,
          "zeros_for_empty_negative": true, "default_size": [1024, 768]})"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->text.pooled_dim, 16);
  EXPECT_TRUE(m->text.size_ids);
  EXPECT_EQ(m->text.second_pad_id, 0);
  EXPECT_TRUE(m->text.zeros_for_empty_negative);
  EXPECT_EQ(m->text.default_height, 1024);
  EXPECT_EQ(m->text.default_width, 768);
  // Without default_size the sizes are the image's; without second_pad_id
  // there is no second ids tensor.
  auto plain = ParseManifestJson(TextManifestWithExtra(R"({"size_ids": true})"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->text.default_height, 32);
  EXPECT_EQ(plain->text.second_pad_id, -1);
  EXPECT_EQ(plain->text.pooled_dim, 0);
}

TEST(ManifestReaderTest, RefusesBadExtraConditioningByField) {
  const struct {
    std::string json;
    const char* field;
  } cases[] = {
      {TextManifestWithExtra(R"({"pooled_dim": -1})"), "conditioning.extra.pooled_dim"},
      {TextManifestWithExtra(R"({"second_pad_id": -3})"), "conditioning.extra.second_pad_id"},
      {TextManifestWithExtra(R"({"size_ids": true, "default_size": [1024]})"),
       "conditioning.extra.default_size"},
      {TextManifestWithExtra(R"({"size_ids": true, "default_size": [0, 1024]})"),
       "conditioning.extra.default_size"},
      {TextManifestWithExtra(R"({"default_size": [1024, 1024]})"),
       "conditioning.extra.default_size"},
      {TextManifestWithExtra(R"({"pooled_dim": 4})", "class"), "conditioning.extra"},
  };
  for (const auto& c : cases) {
    auto m = ParseManifestJson(c.json);
    ASSERT_FALSE(m.ok()) << c.field;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(m.status().message().find(absl::StrCat("manifest ", c.field, ":")),
              absl::string_view::npos)
        << m.status();
  }
}

TEST(ManifestReaderTest, ParseErrorsQuoteOnlyAShortEscapedPieceOfTheText) {
  const std::string secret = "root:x:0:0:root:/root:/bin/bash\n\x1b[2J" + std::string(500, 's');
  auto m = ParseManifestJson(secret);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message().find('\x1b'), absl::string_view::npos) << m.status();
  EXPECT_EQ(m.status().message().find(std::string(250, 's')), absl::string_view::npos);
  EXPECT_LT(m.status().message().size(), 300u);
}

// ---- Hostile bundle folders (ReadManifest) ----

namespace fs = std::filesystem;

constexpr char kTextManifest[] = R"({
  "name": "t", "latent_shape": [1, 4, 4], "weights": "unet.pt",
  "schedule": {"beta_start": 0.0001, "beta_end": 0.02, "train_timesteps": 1000},
  "conditioning": {"kind": "text", "text_encoder": {"weights": "enc.pt", "context_dim": 4},
                   "tokenizer": {"kind": "clip_bpe", "vocab": "vocab.json",
                                 "merges": "merges.txt"}}
})";

// A text bundle's folder with every part a small regular file.
std::string TextBundle(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("manifest_reader_test_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "manifest.json") << kTextManifest;
  for (const char* part : {"unet.pt", "enc.pt", "vocab.json", "merges.txt"}) {
    std::ofstream(dir / part) << "x";
  }
  return dir.string();
}

TEST(ManifestReaderTest, ReadsABundleWhosePartsAreRegularFilesInside) {
  const std::string dir = TextBundle("good");
  // A link to another file inside the folder is fine.
  fs::create_directories(dir + "/shared");
  fs::rename(dir + "/vocab.json", dir + "/shared/vocab.json");
  fs::create_symlink("shared/vocab.json", dir + "/vocab.json");
  auto m = ReadManifest(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->text.tokenizer.vocab, "vocab.json");
}

TEST(ManifestReaderTest, AFifoManifestIsRefusedWithoutBlocking) {
  const std::string dir = TextBundle("fifo");
  fs::remove(dir + "/manifest.json");
  ASSERT_EQ(mkfifo((dir + "/manifest.json").c_str(), 0600), 0);
  auto read = std::async(std::launch::async, [&] { return ReadManifest(dir); });
  // The bound only turns a hang into a failure; a passing run never waits.
  if (read.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    ADD_FAILURE() << "ReadManifest blocked on a FIFO";
    close(open((dir + "/manifest.json").c_str(), O_WRONLY | O_NONBLOCK));
  }
  absl::Status status = read.get().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("a FIFO"), absl::string_view::npos) << status;
}

TEST(ManifestReaderTest, AManifestLinkedToADeviceOrTooLargeIsRefusedUnread) {
  const std::string dir = TextBundle("zero");
  fs::remove(dir + "/manifest.json");
  fs::create_symlink("/dev/zero", dir + "/manifest.json");
  EXPECT_EQ(ReadManifest(dir).status().code(), absl::StatusCode::kInvalidArgument);

  // 2 MiB of valid JSON: a manifest is a few KB, and the read is bounded.
  const std::string big = TextBundle("big");
  std::ofstream(big + "/manifest.json") << kTextManifest << std::string(2 << 20, ' ');
  absl::Status status = ReadManifest(big).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("limit"), absl::string_view::npos) << status;
}

TEST(ManifestReaderTest, PartsThatResolveOutsideTheFolderAreRefusedByField) {
  const struct {
    const char* part;
    const char* target;
    const char* field;
  } cases[] = {
      {"vocab.json", "/etc/passwd", "conditioning.tokenizer.vocab"},
      {"merges.txt", "/etc/passwd", "conditioning.tokenizer.merges"},
      {"unet.pt", "../outside.pt", "weights"},
      {"enc.pt", "/dev/zero", "conditioning.text_encoder.weights"},
      {"manifest.json", "../outside.json", "manifest.json"},
  };
  const fs::path outside = fs::path(::testing::TempDir());
  std::ofstream(outside / "outside.pt") << "x";
  std::ofstream(outside / "outside.json") << kTextManifest;
  for (const auto& c : cases) {
    const std::string dir = TextBundle(std::string("escape_") + c.part);
    fs::remove(dir + "/" + c.part);
    fs::create_symlink(c.target, dir + "/" + c.part);
    absl::Status status = ReadManifest(dir).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.part;
    EXPECT_NE(status.message().find(c.field), absl::string_view::npos) << status;
    EXPECT_NE(status.message().find("outside the bundle folder"), absl::string_view::npos)
        << status;
    EXPECT_EQ(status.message().find("root:"), absl::string_view::npos) << status;
  }
}

TEST(ManifestReaderTest, AMissingPartIsNotFoundAndNamed) {
  const std::string dir = TextBundle("missing");
  fs::remove(dir + "/merges.txt");
  absl::Status status = ReadManifest(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(status.message().find("conditioning.tokenizer.merges"), absl::string_view::npos)
      << status;
}

}  // namespace
}  // namespace dgrid

namespace dgrid {
namespace {

std::string WithJudge(const std::string& judge) {
  std::string json = kGood;
  json.insert(json.rfind('}'), absl::StrCat(", \"judge\": ", judge));
  return json;
}

TEST(ManifestReaderTest, ReadsAJudgeWithNamedHeads) {
  auto m = ParseManifestJson(WithJudge(R"({"weights": "judge.pt", "heads": [
      {"name": "subcategory", "output": 0, "labels": ["cat-face", "food-fruit"]},
      {"name": "style", "output": 1, "labels": ["noto", "twemoji", "other"]}]})"));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->judge.present());
  EXPECT_EQ(m->judge.weights, "judge.pt");
  ASSERT_EQ(m->judge.heads.size(), 2u);
  EXPECT_EQ(m->judge.heads[1].name, "style");
  EXPECT_EQ(m->judge.heads[1].output, 1);
  EXPECT_EQ(m->judge.heads[1].labels,
            (std::vector<std::string>{"noto", "twemoji", "other"}));
  EXPECT_FALSE(ParseManifestJson(kGood)->judge.present());
}

TEST(ManifestReaderTest, RefusesABadJudgeByField) {
  const struct {
    const char* judge;
    const char* field;
  } cases[] = {
      {R"({"heads": [{"name": "a", "labels": ["x", "y"]}]})", "judge.weights"},
      {R"({"weights": "../j.pt", "heads": [{"name": "a", "labels": ["x", "y"]}]})",
       "judge.weights"},
      {R"({"weights": "j.pt"})", "judge.heads"},
      {R"({"weights": "j.pt", "heads": [{"labels": ["x", "y"]}]})", "judge.heads[0].name"},
      {R"({"weights": "j.pt", "heads": [{"name": "a", "labels": ["x", "y"]},
                                        {"name": "a", "output": 1, "labels": ["x", "y"]}]})",
       "judge.heads[1].name"},
      {R"({"weights": "j.pt", "heads": [{"name": "a", "output": -1, "labels": ["x", "y"]}]})",
       "judge.heads[0].output"},
      {R"({"weights": "j.pt", "heads": [{"name": "a", "labels": ["x"]}]})",
       "judge.heads[0].labels"},
      {R"({"weights": "j.pt", "heads": [{"name": "a", "labels": ["x", ""]}]})",
       "judge.heads[0].labels[1]: is required"},
      // Shown in ModelInfo and logs as class labels are.
      {R"({"weights": "j.pt", "heads": [{"name": "a\nb", "labels": ["x", "y"]}]})",
       "judge.heads[0].name: holds a control character"},
      {R"({"weights": "j.pt", "heads": [{"name": "a", "labels": ["x", "\u001b[0m"]}]})",
       "judge.heads[0].labels[1]: holds a control character"},
      // Verdicts are reported by name: two alike would read as one.
      {R"({"weights": "j.pt", "heads": [{"name": "a", "labels": ["x", "y", "x"]}]})",
       "judge.heads[0].labels[2]: \"x\" repeats an earlier label"},
  };
  for (const auto& c : cases) {
    auto m = ParseManifestJson(WithJudge(c.judge));
    ASSERT_FALSE(m.ok()) << c.judge;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(c.field), absl::string_view::npos)
        << m.status().message();
  }
}

// Names, versions and class labels were taken as they came: a newline or an
// escape in a name went raw into the log and `dgrid models`, and a class
// label given twice left its second class out of reach.
TEST(ManifestReaderTest, NamesVersionsAndClassLabelsAreShortPlainAndDistinct) {
  const std::pair<std::pair<std::string, std::string>, const char*> cases[] = {
      {{R"("name": "toy")", R"("name": "a\nb")"}, "manifest name: holds a control character"},
      {{R"("name": "toy")", R"("name": "\u001b[31mred")"}, "manifest name: holds a control"},
      {{R"("name": "toy")", absl::StrCat(R"("name": ")", std::string(200, 'n'), "\"")},
       "manifest name: is 200 bytes, more than 128"},
      {{R"("version": "1")", R"("version": "\u0007")"}, "manifest version: holds a control"},
      {{R"(["a", "b"])", R"(["a", "a"])"},
       "manifest conditioning.class_labels[1]: \"a\" repeats an earlier label"},
      {{R"(["a", "b"])", R"(["", "b"])"}, "manifest conditioning.class_labels[0]: is required"},
      // The longer text is shown as it is too: `dgrid models`, the explorer.
      {{R"("name": "toy")", R"("name": "toy", "description": "one\ntwo \u001b[2J")"},
       "manifest description: holds a control character"},
      {{R"("name": "toy")", absl::StrCat(R"("name": "toy", "description": ")",
                                         std::string(5000, 'd'), "\"")},
       "manifest description: is 5000 bytes, more than 4096"},
      {{R"("name": "toy")", R"("name": "toy", "data": {"license": "MIT\r"})"},
       "manifest data.license: holds a control character"},
      // Every file the manifest names lies inside the bundle, the decoder's too.
      {{R"("name": "toy")",
        R"("name": "toy", "decoder": {"kind": "torchscript", "weights": "sub/../d.pt"})"},
       "manifest decoder.weights: must be a file inside the bundle folder"},
  };
  for (const auto& [edit, says] : cases) {
    std::string json = kGood;
    json.replace(json.find(edit.first), edit.first.size(), edit.second);
    auto m = ParseManifestJson(json);
    ASSERT_FALSE(m.ok()) << json;
    EXPECT_NE(m.status().message().find(says), absl::string_view::npos) << m.status().message();
  }
  // Line breaks and tabs are a description's own.
  std::string described = kGood;
  described.replace(described.find(R"("name": "toy")"), 13,
                    R"("name": "toy", "description": "one\r\ntwo\tthree")");
  EXPECT_TRUE(ParseManifestJson(described).ok()) << ParseManifestJson(described).status();
  std::string unversioned = kGood;
  unversioned.replace(unversioned.find(R"("version": "1")"), 14, R"("version": "")");
  EXPECT_TRUE(ParseManifestJson(unversioned).ok());
}

// The evaluation classifier's file was not checked at all: "/etc/passwd"
// and "../x" served.
TEST(ManifestReaderTest, TheClassifierMustBeAFileInsideTheBundle) {
  for (const char* name : {"/etc/passwd", "../../etc/passwd"}) {
    std::string json = kGood;
    json.insert(json.rfind('}'), absl::StrCat(R"(, "classifier": ")", name, "\""));
    auto m = ParseManifestJson(json);
    ASSERT_FALSE(m.ok()) << name;
    EXPECT_NE(m.status().message().find("manifest classifier: must be a file inside"),
              absl::string_view::npos)
        << m.status();
  }
  const std::string dir = TextBundle("classifier");
  std::string json = kTextManifest;
  json.insert(json.rfind('}'), R"(, "classifier": "missing.pt")");
  std::ofstream(dir + "/manifest.json", std::ios::trunc) << json;
  absl::Status missing = ReadManifest(dir).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("classifier"), absl::string_view::npos) << missing;
}

TEST(ManifestReaderTest, AJudgeOutsideTheFolderOrMissingIsRefusedByField) {
  const std::string dir = TextBundle("judge");
  std::string json = kTextManifest;
  json.insert(json.rfind('}'),
              R"(, "judge": {"weights": "judge.pt", "heads": [{"name": "a", "labels": ["x", "y"]}]})");
  std::ofstream(dir + "/manifest.json", std::ios::trunc) << json;
  absl::Status missing = ReadManifest(dir).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("judge.weights"), absl::string_view::npos) << missing;
  fs::create_symlink("/etc/passwd", dir + "/judge.pt");
  absl::Status outside = ReadManifest(dir).status();
  EXPECT_EQ(outside.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(outside.message().find("judge.weights"), absl::string_view::npos) << outside;
}

TEST(ManifestReaderTest, TheShippedBundlesDeclareTheirClassifiersAsJudges) {
  auto fashion = ReadManifest(std::string(DGRID_SOURCE_DIR) + "/models/fashion-mnist");
  ASSERT_TRUE(fashion.ok()) << fashion.status();
  ASSERT_EQ(fashion->judge.heads.size(), 1u);
  EXPECT_EQ(fashion->judge.heads[0].name, "class");
  EXPECT_EQ(fashion->judge.heads[0].labels, fashion->class_labels);
  auto emoji = ReadManifest(std::string(DGRID_SOURCE_DIR) + "/models/emoji");
  ASSERT_TRUE(emoji.ok()) << emoji.status();
  ASSERT_EQ(emoji->judge.heads.size(), 2u);
  EXPECT_EQ(emoji->judge.heads[0].name, "subcategory");
  EXPECT_EQ(emoji->judge.heads[0].labels.size(), 99u);
  EXPECT_EQ(emoji->judge.heads[1].name, "style");
  EXPECT_EQ(emoji->judge.heads[1].labels, (std::vector<std::string>{"noto", "twemoji"}));
}

}  // namespace
}  // namespace dgrid
