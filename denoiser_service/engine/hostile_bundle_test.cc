// Bundles that load but would fail later: a vocabulary or class list beyond
// what the model embeds is refused at load, and a request whose input makes
// the text encoder or the denoiser fail ends its own run, not those batched
// beside it (before: one such prompt failed 42 of 48 other clients' runs).
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <unistd.h>

#include "common/manifest_reader.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/engine/field_error.h"
#include "denoiser_service/engine/image_judge.h"
#include "denoiser_service/engine/trajectory_batcher.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

namespace fs = std::filesystem;

std::string Fixtures() {
  const char* dir = std::getenv("DGRID_FIXTURES");
  return dir ? dir : "";
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A copy of the fixture bundle `name` whose file `part` has `from` replaced
// by `to` (once). The copy's folder is named for the running test and
// process: ctest runs each test in its own process, two at a time, and two
// tests (or two build trees' runs) editing one folder read each other's
// half-made copies.
std::string EditedCopy(const std::string& name, const std::string& part, const std::string& from,
                       const std::string& to) {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(::testing::TempDir()) /
                       ("hostile_bundle_test_" + std::to_string(::getpid()) + "_" +
                        std::string(test->name()) + "_" + name);
  fs::remove_all(dir);
  fs::copy(Fixtures() + "/" + name, dir, fs::copy_options::recursive);
  std::string text = ReadText(dir / part);
  const size_t at = text.rfind(from);
  EXPECT_NE(at, std::string::npos) << from << " not in " << part;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  std::ofstream(dir / part, std::ios::binary | std::ios::trunc) << text;
  return dir.string();
}

bool Mentions(const absl::Status& status, absl::string_view text) {
  return status.message().find(text) != absl::string_view::npos;
}

TEST(HostileBundleTest, AVocabularyBeyondTheTextEncoderIsRefusedAtLoad) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  // The encoder embeds CLIP's 49408 ids; one more token, far past them.
  const std::string dir =
      EditedCopy("textlatent", "vocab.json", "}", ", \"zzzzzzzz</w>\": 60000}");
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_FALSE(model.ok()) << "a vocabulary the encoder cannot embed loaded";
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(model.status(), "token id 60000")) << model.status();
  EXPECT_TRUE(Mentions(model.status(), "vocab.json")) << model.status();
  EXPECT_TRUE(Mentions(model.status(), "text_encoder")) << model.status();
}

TEST(HostileBundleTest, AClassListBeyondTheEmbeddingIsRefusedAtLoad) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  // tinyconv embeds 3 rows: classes a, b and the null label 2.
  const std::string dir = EditedCopy("tinyconv", "manifest.json",
                                     "\"b\"\n    ],\n    \"null_label\": 2",
                                     "\"b\", \"c\", \"d\"\n    ],\n    \"null_label\": 4");
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_FALSE(model.ok()) << "class index 3 would fail at request time";
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(model.status(), "probe forward with null_label 4 (4 class_labels) failed"))
      << model.status();
}

TEST(HostileBundleTest, ATextBundleThatDoesNotPadIsRefusedAtLoad) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  // A words tokenizer may leave ids unpadded (pad_id -1); the text encoder
  // takes max_length ids, and a batch of short prompts would be misaligned.
  const std::string dir = EditedCopy("poisoned", "manifest.json", "\"pad_id\": 0", "\"pad_id\": -1");
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_FALSE(model.ok()) << "unpadded prompts would be encoded";
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(model.status(), "conditioning.tokenizer.pad_id")) << model.status();
}

// Example prompts go to clients, which send them back as prompts: one the
// tokenizer would refuse (31 combining marks in a row, past what Unicode's
// stream-safe form allows) is refused at load, as the manifest reader,
// without ICU, cannot.
TEST(HostileBundleTest, AnExamplePromptNoClientCouldSendIsRefusedAtLoad) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  std::string marks;
  for (int i = 0; i < 31; ++i) marks += "\u0301";
  const std::string dir = EditedCopy("textlatent", "manifest.json", "\"example_prompts\": [",
                                     "\"example_prompts\": [\"a" + marks + "\", ");
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_FALSE(model.ok()) << "an example prompt no client could send loaded";
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(model.status(), "manifest conditioning.example_prompts[0]: "))
      << model.status();
}

TEST(HostileBundleTest, ADecoderOfAnotherImageLayoutIsRefusedAtLoad) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  // The decoder gives [2, 3, 32, 32]; 16 by 64 has as many values, and
  // every image would come out scrambled.
  const std::string dir = EditedCopy("textlatent", "manifest.json",
                                     "\"image_shape\": [\n    32,\n    32,",
                                     "\"image_shape\": [\n    16,\n    64,");
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_FALSE(model.ok()) << "a decoder of another layout loaded";
  EXPECT_TRUE(Mentions(model.status(), "image_shape [16, 64, 3] needs [2, 3, 16, 64]"))
      << model.status();
}

// A decoder or judge that answers one image whatever the batch (a reshape
// to [1, ...]) loaded, probed at batch 1, and failed every request of two
// trajectories or two images, as INTERNAL.
TEST(HostileBundleTest, ADecoderOrJudgeForOneImageAloneIsRefusedAtLoad) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  const fs::path one = fs::path(Fixtures()) / "batch_one";
  std::string dir = EditedCopy("textlatent", "manifest.json", "}", "}");
  fs::copy_file(one / "decoder.pt", fs::path(dir) / "vae_decoder.pt",
                fs::copy_options::overwrite_existing);
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_FALSE(model.ok()) << "a decoder of one image loaded";
  EXPECT_TRUE(Mentions(model.status(), "vae_decoder.pt: probe decode of latents [2, 4, 8, 8]"))
      << model.status();
  dir = EditedCopy("textlatent", "manifest.json", "}",
                   R"(, "judge": {"weights": "judge.pt", "heads": [{"name": "h", "labels": ["a", "b"]}]}})");
  fs::copy_file(one / "judge.pt", fs::path(dir) / "judge.pt");
  auto manifest = ReadManifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  auto judge = ImageJudge::Load(dir, *manifest, "cpu");
  ASSERT_FALSE(judge.ok()) << "a judge of one image loaded";
  EXPECT_TRUE(Mentions(judge.status(), "judge.pt: probe of the judge on two images"))
      << judge.status();
}

// A judge whose logits are NaN for an image answered OK with a
// probability of NaN; it fails, as the replica's fault.
TEST(HostileBundleTest, AJudgesNonFiniteLogitsFailTheCall) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  const std::string dir = EditedCopy(
      "textlatent", "manifest.json", "}",
      R"(, "judge": {"weights": "judge.pt", "heads": [{"name": "h", "labels": ["a", "b"]}]}})");
  fs::copy_file(fs::path(Fixtures()) / "batch_one" / "judge_nan.pt", fs::path(dir) / "judge.pt");
  auto manifest = ReadManifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  auto judge = ImageJudge::Load(dir, *manifest, "cpu");
  ASSERT_TRUE(judge.ok()) << judge.status();
  const size_t image = 32 * 32 * 3;
  std::vector<uint8_t> pixels(2 * image, 0);
  EXPECT_TRUE((*judge)->Judge(pixels, 2).ok());
  std::fill(pixels.begin() + image, pixels.end(), 255);  // the second white
  const auto verdicts = (*judge)->Judge(pixels, 2);
  EXPECT_EQ(verdicts.status().code(), absl::StatusCode::kInternal) << verdicts.status();
  EXPECT_TRUE(Mentions(verdicts.status(), "judge.heads[0] (h): non-finite logits (NaN or Inf) "
                                          "for image 1 of 2"))
      << verdicts.status();
}

TEST(HostileBundleTest, ASecondPadIdBeyondTheVocabularyIsRefusedAtLoad) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  const std::string text = ReadText(fs::path(Fixtures()) / "textxl" / "manifest.json");
  const size_t at = text.find("\"second_pad_id\": ");
  ASSERT_NE(at, std::string::npos);
  const size_t end = text.find_first_of(",\n}", at + 17);
  const std::string dir = EditedCopy("textxl", "manifest.json", text.substr(at, end - at),
                                     "\"second_pad_id\": 60000");
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_FALSE(model.ok()) << "the second encoder would embed id 60000";
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(model.status(), "conditioning.extra.second_pad_id 60000 is outside the"))
      << model.status();
}

TEST(HostileBundleTest, TheFixtureBundlesPassTheRangeProbes) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  for (const char* name : {"gaussian", "tinyconv", "textlatent", "poisoned"}) {
    auto model = DenoiserModel::Load(Fixtures() + "/" + name, {"cpu"});
    EXPECT_TRUE(model.ok()) << name << ": " << model.status();
  }
}

// Holds the batcher in its first forward pass until Open(), so that runs
// started meanwhile are admitted and batched together.
class Gate : public BatcherObserver {
 public:
  void OnForward(int, int, absl::Duration) override {
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = true;
    changed_.notify_all();
    changed_.wait(lock, [this] { return open_; });
  }
  void AwaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [this] { return entered_; });
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool entered_ = false, open_ = false;
};

RunRequest TextRun(const std::string& prompt) {
  RunRequest r;
  r.sampler = {5, 0.0f, Spacing::kLeading, 1.0f};
  r.prompt = prompt;
  r.trajectories = {{Path{7, {{0, 8}}}, {}}};
  return r;
}

struct Outcome {
  absl::Status status;
  std::vector<float> final_latent;
  std::vector<uint8_t> final_pixels;  // when the run decodes
};

Outcome Drain(Run& run) {
  Outcome outcome;
  RunEvent e;
  for (Run::Wait w; (w = run.Next(absl::Seconds(30), &e)) != Run::Wait::kDone;) {
    if (w == Run::Wait::kEvent && e.kind == RunEvent::Kind::kFinal) {
      outcome.final_latent = e.latent;
      outcome.final_pixels = e.pixels;
    }
  }
  outcome.status = run.status();
  return outcome;
}

// The poisoned fixture: its encoder raises on "poison", and "venom" encodes
// to a context its denoiser raises on.
TEST(HostileBundleTest, APromptTheModelFailsOnEndsOnlyItsOwnRun) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  SetTorchThreads(1);
  auto model = DenoiserModel::Load(Fixtures() + "/poisoned", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();

  // What "dog" gives alone: its neighbours' failures must not change it.
  std::vector<float> alone;
  {
    TrajectoryBatcher batcher(model->get(), {});
    auto run = batcher.Start(TextRun("dog"));
    ASSERT_TRUE(run.ok()) << run.status();
    Outcome outcome = Drain(**run);
    ASSERT_TRUE(outcome.status.ok()) << outcome.status;
    alone = outcome.final_latent;
  }

  Gate gate;
  TrajectoryBatcher::Options options;
  options.text_cache_entries = 0;  // every admission encodes
  TrajectoryBatcher batcher(model->get(), options, &gate);
  auto first = batcher.Start(TextRun("cat"));
  ASSERT_TRUE(first.ok()) << first.status();
  gate.AwaitEntered();
  // Admitted together: one encoder pass for the three prompts, then one
  // forward batch with "cat".
  std::map<std::string, std::shared_ptr<dgrid::Run>> runs = {{"cat", *first}};
  for (const char* prompt : {"poison", "dog", "venom"}) {
    auto run = batcher.Start(TextRun(prompt));
    ASSERT_TRUE(run.ok()) << run.status();
    runs[prompt] = *run;
  }
  gate.Open();
  std::map<std::string, Outcome> outcomes;
  for (auto& [prompt, run] : runs) outcomes[prompt] = Drain(*run);

  EXPECT_TRUE(outcomes["cat"].status.ok()) << outcomes["cat"].status;
  EXPECT_TRUE(outcomes["dog"].status.ok()) << outcomes["dog"].status;
  EXPECT_EQ(outcomes["dog"].final_latent, alone);
  const absl::Status poison = outcomes["poison"].status;
  EXPECT_FALSE(poison.ok());
  EXPECT_EQ(ErrorField(poison), "prompt") << poison;  // the wire's conditioning.prompt
  EXPECT_TRUE(Mentions(poison, "poisoned token")) << poison;
  const absl::Status venom = outcomes["venom"].status;
  EXPECT_FALSE(venom.ok());
  EXPECT_TRUE(Mentions(venom, "poisoned context")) << venom;
  EXPECT_EQ(batcher.outstanding(), 0);
}

// Tells the rows and evaluations of each forward pass, and holds the first
// as Gate.
class PassLog : public Gate {
 public:
  void OnForward(int trajectories, int rows, absl::Duration took) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      passes_.push_back({rows, trajectories});
    }
    Gate::OnForward(trajectories, rows, took);
  }
  std::vector<std::pair<int, int>> passes() {
    std::lock_guard<std::mutex> lock(mu_);
    return passes_;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<int, int>> passes_;  // rows, evaluations
};

// When a batch's pass fails, each member's pass alone is a pass the
// metrics count (forward rows, batch size, seconds): they went uncounted.
TEST(HostileBundleTest, ThePassesRunAloneAfterAFailedBatchAreCounted) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  SetTorchThreads(1);
  auto model = DenoiserModel::Load(Fixtures() + "/poisoned", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  PassLog log;
  TrajectoryBatcher batcher(model->get(), {}, &log);
  auto cat = batcher.Start(TextRun("cat"));
  ASSERT_TRUE(cat.ok()) << cat.status();
  log.AwaitEntered();
  auto dog = batcher.Start(TextRun("dog"));
  auto venom = batcher.Start(TextRun("venom"));
  ASSERT_TRUE(dog.ok() && venom.ok());
  log.Open();
  EXPECT_TRUE(Drain(**cat).status.ok());
  EXPECT_TRUE(Drain(**dog).status.ok());
  EXPECT_FALSE(Drain(**venom).status.ok());
  // The failed pass of three rows, counting no evaluation, then each
  // member's alone, one evaluation each (they counted nothing; then the
  // failed pass's members were counted twice).
  using Passes = std::vector<std::pair<int, int>>;
  const Passes passes = log.passes();
  const auto failed = std::find(passes.begin(), passes.end(), std::make_pair(3, 0));
  ASSERT_NE(failed, passes.end()) << ::testing::PrintToString(passes);
  ASSERT_GE(passes.end() - failed, 4) << ::testing::PrintToString(passes);
  const std::pair<int, int> alone = {1, 1};
  EXPECT_EQ(Passes(failed + 1, failed + 4), Passes({alone, alone, alone}))
      << ::testing::PrintToString(passes);
  EXPECT_EQ(batcher.forwards(), static_cast<int64_t>(passes.size()));
}

// A switch to a prompt the encoder fails on names the segment that
// switches, not the request's prompt, which encodes well.
TEST(HostileBundleTest, ASwitchedPromptTheModelFailsOnNamesItsSegment) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  SetTorchThreads(1);
  auto model = DenoiserModel::Load(Fixtures() + "/poisoned", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  TrajectoryBatcher batcher(model->get(), {});
  RunRequest request = TextRun("dog");
  request.trajectories[0].path.segments.push_back({2, 8, SegmentConditioning{"poison", "", -1}});
  auto run = batcher.Start(request);
  ASSERT_TRUE(run.ok()) << run.status();
  const absl::Status status = Drain(**run).status;
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(ErrorField(status), "trajectories[0].path.segments[1].conditioning.prompt") << status;
  EXPECT_TRUE(Mentions(status, "poisoned token")) << status;
  EXPECT_TRUE(Drain(**batcher.Start(TextRun("dog"))).status.ok());
}

// "toxin" drives its latent far out, and the decoder raises on it: its run
// ends, while the run decoded in the same batch gets its image, the one it
// gets alone (before, one failed decode ended every run of the batch).
TEST(HostileBundleTest, ALatentTheDecoderFailsOnEndsOnlyItsOwnRun) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  SetTorchThreads(1);
  auto model = DenoiserModel::Load(Fixtures() + "/poisoned", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  auto decoded = [](const std::string& prompt) {
    RunRequest r = TextRun(prompt);
    r.decode = true;
    r.decode_finals_only = true;
    return r;
  };
  Outcome alone;
  {
    TrajectoryBatcher batcher(model->get(), {});
    auto run = batcher.Start(decoded("dog"));
    ASSERT_TRUE(run.ok()) << run.status();
    alone = Drain(**run);
    ASSERT_TRUE(alone.status.ok()) << alone.status;
    ASSERT_FALSE(alone.final_pixels.empty());
  }
  // "cat" holds the first pass; "dog" and "toxin" join at the next, step
  // for step, so their finals go through the decoder in one batch.
  Gate gate;
  TrajectoryBatcher batcher(model->get(), {}, &gate);
  auto first = batcher.Start(decoded("cat"));
  ASSERT_TRUE(first.ok()) << first.status();
  gate.AwaitEntered();
  auto dog = batcher.Start(decoded("dog"));
  auto toxin = batcher.Start(decoded("toxin"));
  ASSERT_TRUE(dog.ok() && toxin.ok());
  gate.Open();
  const Outcome cat_outcome = Drain(**first);
  const Outcome dog_outcome = Drain(**dog);
  const Outcome toxin_outcome = Drain(**toxin);
  EXPECT_TRUE(cat_outcome.status.ok()) << cat_outcome.status;
  EXPECT_TRUE(dog_outcome.status.ok()) << dog_outcome.status;
  EXPECT_EQ(dog_outcome.final_pixels, alone.final_pixels);
  EXPECT_FALSE(toxin_outcome.status.ok());
  EXPECT_TRUE(Mentions(toxin_outcome.status, "poisoned latent")) << toxin_outcome.status;
  EXPECT_EQ(batcher.outstanding(), 0);
}

// A latent whose image the decoder turns to NaN (vae_decoder_nan.pt, not
// raising) is blamed as a step's failure is: on the caller only for a start
// latent past any sampler's scale. "toxin" grows its own latent from the
// seed's x_T: the replica misbehaved (INTERNAL, which the orchestrator
// retries elsewhere), whatever that latent's size (before: INVALID_ARGUMENT
// naming a latent the caller never sent).
TEST(HostileBundleTest, ALatentDecodedToNanIsBlamedOnTheCallerOnlyForItsOwn) {
  ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
  SetTorchThreads(1);
  auto model = DenoiserModel::Load(
      EditedCopy("poisoned", "manifest.json", "vae_decoder.pt", "vae_decoder_nan.pt"), {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  TrajectoryBatcher batcher(model->get(), {});

  RunRequest grown = TextRun("toxin");
  grown.decode = true;
  grown.decode_finals_only = true;
  const absl::Status engine = Drain(**batcher.Start(grown)).status;
  EXPECT_EQ(engine.code(), absl::StatusCode::kInternal) << engine;
  EXPECT_FALSE(ErrorField(engine).has_value()) << engine;
  EXPECT_TRUE(Mentions(engine, "non-finite pixels")) << engine;

  // The caller's own far-out latent, sent back as the capture at step 0.
  RunRequest given = TextRun("dog");
  given.decode = true;
  given.capture_steps = {0};
  given.trajectories[0].latent.assign(model->get()->latent_numel(), 2.0e4f);
  const absl::Status caller = Drain(**batcher.Start(given)).status;
  EXPECT_EQ(caller.code(), absl::StatusCode::kInvalidArgument) << caller;
  EXPECT_EQ(ErrorField(caller), "trajectories[0].latent") << caller;

  EXPECT_TRUE(Drain(**batcher.Start(TextRun("dog"))).status.ok());
  EXPECT_EQ(batcher.outstanding(), 0);
}

}  // namespace
}  // namespace dgrid
