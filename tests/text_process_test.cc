// A text-to-image latent bundle through the real pair: the fixture's tiny
// CLIP-tokenized model (tests/fixtures/make_text_fixture.py) with a text
// encoder, a cross-attention UNet over 4x8x8 latents and a x4 VAE decoder.
// Grids follow their prompts and negative prompts, reproduce across
// replicas and promotions, and a new model version misses the cache.
#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "tests/support/grids.h"
#include "tests/support/pixel_drift.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::kDriftTolerance;
using testing::MaxPixelDrift;
using testing::Stack;
using testing::StackOptions;

std::string FixtureDir(const std::string& name) {
  const char* dir = std::getenv("DGRID_FIXTURES");
  return absl::StrCat(dir ? dir : "build/fixtures", "/", name);
}

StackOptions TextStack(int denoisers) {
  StackOptions options;
  options.model_dir = FixtureDir("textlatent");
  options.denoisers = denoisers;
  options.orchestrator_flags = {"--cache_mb=0"};
  return options;
}

v1::GridRequest Request(const std::string& prompt) {
  v1::GridRequest r;
  r.set_prompt(prompt);
  r.set_seed(11);
  r.mutable_steps()->set_value(10);
  r.mutable_branches()->set_value(2);
  r.add_branch_steps(0);
  r.add_branch_steps(5);
  return r;
}

grpc::Status Create(const Stack& stack, const v1::GridRequest& request, v1::Grid* grid) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  return stack.Orchestrator()->CreateGrid(&context, request, grid);
}

v1::Grid MustCreate(const Stack& stack, const v1::GridRequest& request) {
  v1::Grid grid;
  const grpc::Status status = Create(stack, request, &grid);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return grid;
}

// The largest drift between the two grids' cells, cell by cell.
int GridDrift(const v1::Grid& a, const v1::Grid& b) {
  int worst = MaxPixelDrift(a.trunk().png(), b.trunk().png());
  for (int r = 0; r < a.rows_size() && r < b.rows_size(); ++r) {
    for (int c = 0; c < a.rows(r).cells_size() && c < b.rows(r).cells_size(); ++c) {
      worst = std::max(worst, MaxPixelDrift(a.rows(r).cells(c).png(), b.rows(r).cells(c).png()));
    }
  }
  return worst;
}

class TextGridTest : public testing::SharedStackTest<TextGridTest> {
 public:
  static constexpr char kName[] = "text";
  static StackOptions Options() { return TextStack(2); }
};

TEST_F(TextGridTest, ListModelsDescribesATextModel) {
  grpc::ClientContext context;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stack_->Orchestrator()->ListModels(&context, {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  const v1::ModelInfo& m = models.models(0);
  EXPECT_EQ(m.conditioning(), "text");
  EXPECT_GE(m.example_prompts_size(), 1);
  EXPECT_EQ(m.max_prompt_tokens(), 77);
  EXPECT_EQ(m.image_shape(2), 3);
}

TEST_F(TextGridTest, DifferentPromptsGiveDifferentCells) {
  const v1::Grid cat = MustCreate(*stack_, Request("a photo of a cat"));
  const v1::Grid car = MustCreate(*stack_, Request("a red sports car on a road"));
  ASSERT_EQ(cat.rows_size(), 2);
  const int drift = GridDrift(cat, car);
  std::cout << "cat vs car: max drift " << drift << "/255\n";
  EXPECT_GT(drift, 3 * kDriftTolerance);
  EXPECT_EQ(cat.plan().prompt(), "a photo of a cat");
  EXPECT_EQ(cat.model_evals(), cat.plan().model_evals());
}

TEST_F(TextGridTest, ANegativePromptChangesTheResult) {
  v1::GridRequest with = Request("a photo of a cat");
  with.set_negative_prompt("blurry, dark");
  const v1::Grid plain = MustCreate(*stack_, Request("a photo of a cat"));
  const v1::Grid negative = MustCreate(*stack_, with);
  EXPECT_EQ(negative.plan().negative_prompt(), "blurry, dark");
  const int drift = GridDrift(plain, negative);
  std::cout << "negative prompt: max drift " << drift << "/255\n";
  EXPECT_GT(drift, kDriftTolerance);
}

TEST_F(TextGridTest, APromotedCellReproduces) {
  const v1::Grid grid = MustCreate(*stack_, Request("a photo of a cat"));
  const v1::GridCell& cell = grid.rows(1).cells(1);
  v1::GridRequest promote = Request("a photo of a cat");
  *promote.mutable_trunk() = cell.path();
  const v1::Grid promoted = MustCreate(*stack_, promote);
  const int drift = MaxPixelDrift(cell.png(), promoted.trunk().png());
  std::cout << "promoted cell vs its trunk rerun: max drift " << drift << "/255\n";
  EXPECT_LE(drift, kDriftTolerance);
}

TEST_F(TextGridTest, AnOverLongPromptIsTruncatedAndSaysSo) {
  std::string words;
  for (int i = 0; i < 200; ++i) absl::StrAppend(&words, "cat ");
  const v1::Grid grid = MustCreate(*stack_, Request(words));
  // 77 ids: BOS, 75 words, EOS.
  EXPECT_EQ(grid.plan().prompt_tokens_dropped(), 200 - 75);
  EXPECT_EQ(grid.plan().negative_prompt_tokens_dropped(), 0);
  EXPECT_EQ(grid.plan().unknown_words_size(), 0);  // byte-level BPE knows every word
  // The switch prompts are cut the same way, and say so in their own fields.
  v1::GridRequest switched = Request("a photo of a cat");
  switched.set_switch_prompt(words);
  switched.set_switch_negative_prompt(absl::StrCat(words, "dog dog"));
  const v1::Grid cut = MustCreate(*stack_, switched);
  EXPECT_EQ(cut.plan().prompt_tokens_dropped(), 0);
  EXPECT_EQ(cut.plan().switch_prompt_tokens_dropped(), 200 - 75);
  EXPECT_EQ(cut.plan().switch_negative_prompt_tokens_dropped(), 202 - 75);
}

TEST_F(TextGridTest, AClassIndexForATextModelIsRefused) {
  v1::BranchRequest r;
  r.set_model("textlatent");
  r.mutable_sampler()->set_steps(4);
  r.mutable_sampler()->set_eta(1);
  r.mutable_sampler()->set_guidance(2);
  r.mutable_conditioning()->set_class_index(1);
  v1::Path* p = r.add_trajectories()->mutable_path();
  p->set_init_seed(1);
  p->add_segments()->set_noise_seed(2);
  grpc::ClientContext context;
  auto reader = stack_->Denoiser(0)->Branch(&context, r);
  v1::BranchEvent event;
  while (reader->Read(&event)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("conditioning.class_index"), std::string::npos)
      << status.error_message();
}

// Issue 24, sections 1, 2, 4 and 7: prompts are bounded and checked before
// any normalization; what is refused names its field; model "" is the first
// model on every denoiser RPC.
std::string CombiningMarks(size_t bytes) {
  std::string marks;
  while (marks.size() < bytes) marks += "\xCC\xA7\xCC\x81";  // U+0327 U+0301
  return marks;
}

grpc::Status Tokenize(const Stack& stack, const std::string& model,
                      const std::vector<std::string>& texts, v1::TokenizeResponse* out) {
  v1::TokenizeRequest request;
  request.set_model(model);
  for (const std::string& t : texts) request.add_texts(t);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  return stack.Denoiser(0)->Tokenize(&context, request, out);
}

TEST_F(TextGridTest, HugeAndPathologicalPromptsAreRefusedNamingTheField) {
  struct Case {
    std::string prompt, negative, expected;
  };
  const std::vector<Case> cases = {
      {CombiningMarks(1 << 20), "", "prompt: 1048576 bytes exceeds the limit of 4096"},
      {std::string(1 << 20, 'x'), "", "prompt: 1048576 bytes exceeds the limit of 4096"},
      {"cat", std::string(5000, 'x'), "negative_prompt: 5000 bytes exceeds the limit"},
      // Under the size limit: a run of combining marks past the stream-safe 30.
      {"e" + CombiningMarks(200), "", "prompt: more than 30 combining marks in a row"},
      {"cat", "e" + CombiningMarks(200), "negative_prompt: more than 30 combining marks"},
      // Noncharacters, which Cairo refuses: once the whole grid ran, then
      // failed INTERNAL at the figure.
      {"a cat \xEF\xBF\xBE", "", "prompt: holds the noncharacter U+FFFE"},
      {"a cat", "\xF4\x8F\xBF\xBF", "negative_prompt: holds the noncharacter U+10FFFF"},
  };
  for (const Case& c : cases) {
    v1::GridRequest r = Request(c.prompt);
    r.set_negative_prompt(c.negative);
    v1::Grid grid;
    const grpc::Status status = Create(*stack_, r, &grid);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.expected;
    EXPECT_NE(status.error_message().find(c.expected), std::string::npos)
        << status.error_message();
    EXPECT_LT(status.error_message().size(), 300u);
  }
  // A promoted trunk's segment prompt is held to the same, and refused before
  // the grid runs: the denoiser refused it only at the trunk's job, named
  // "trunk: trajectories[0].path.segments[1]...", counted a failed grid.
  {
    v1::GridRequest r = Request("cat");
    v1::Path* trunk = r.mutable_trunk();
    trunk->set_init_seed(11);
    trunk->add_segments()->set_from_step(0);
    v1::Segment* s = trunk->add_segments();
    s->set_from_step(2);
    s->mutable_conditioning()->set_prompt("e" + CombiningMarks(200));
    auto before = testing::HttpGet(stack_->orchestrator_metrics_port(), "/metrics");
    ASSERT_TRUE(before.ok()) << before.status();
    v1::Grid grid;
    const grpc::Status status = Create(*stack_, r, &grid);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message().rfind(
                  "trunk.segments[1].conditioning.prompt: more than 30 combining marks", 0),
              0u)
        << status.error_message();
    auto after = testing::HttpGet(stack_->orchestrator_metrics_port(), "/metrics");
    ASSERT_TRUE(after.ok()) << after.status();
    for (const char* series : {"dgrid_orchestrator_grids_total{status=\"failed\"}",
                               "dgrid_orchestrator_jobs_total{status=\"failed\"}"}) {
      EXPECT_EQ(testing::MetricValue(*after, series), testing::MetricValue(*before, series))
          << series;
    }
    EXPECT_EQ(testing::MetricValue(*after, "dgrid_orchestrator_grids_total{status=\"invalid\"}"),
              testing::MetricValue(*before, "dgrid_orchestrator_grids_total{status=\"invalid\"}") +
                  1);
  }
  // After a segment that changes nothing (the plan drops it), the field is
  // still the request's: segments[2], not the plan's segments[1].
  {
    v1::GridRequest r = Request("cat");
    v1::Path* trunk = r.mutable_trunk();
    trunk->set_init_seed(11);
    v1::Segment* first = trunk->add_segments();
    first->set_from_step(0);
    first->set_noise_seed(7);
    v1::Segment* same = trunk->add_segments();
    same->set_from_step(1);
    same->set_noise_seed(7);
    v1::Segment* s = trunk->add_segments();
    s->set_from_step(2);
    s->set_noise_seed(7);
    s->mutable_conditioning()->set_prompt("e" + CombiningMarks(200));
    v1::Grid grid;
    const grpc::Status status = Create(*stack_, r, &grid);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message().rfind(
                  "trunk.segments[2].conditioning.prompt: more than 30 combining marks", 0),
              0u)
        << status.error_message();
  }
  // The denoiser refuses the same, by position.
  v1::TokenizeResponse tokens;
  grpc::Status status = Tokenize(*stack_, "textlatent", {"cat", CombiningMarks(1 << 20)}, &tokens);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("texts[1]: 1048576 bytes"), std::string::npos)
      << status.error_message();
  // And a prompt at the limit is served.
  v1::Grid at_limit;
  EXPECT_TRUE(Create(*stack_, Request(std::string(4096, 'a')), &at_limit).ok());
}

// This stack serves one model: the empty name reaches it on Tokenize,
// Branch and Decode.
TEST_F(TextGridTest, AnEmptyModelNameReachesTheModelOnTokenizeBranchAndDecode) {
  v1::TokenizeResponse tokens;
  const grpc::Status tokenized = Tokenize(*stack_, "", {"a photo of a cat"}, &tokens);
  ASSERT_TRUE(tokenized.ok()) << tokenized.error_message();
  v1::TokenizeResponse named;
  ASSERT_TRUE(Tokenize(*stack_, "textlatent", {"a photo of a cat"}, &named).ok());
  EXPECT_EQ(tokens.texts(0).ids_size(), 7);  // BOS, 5 words, EOS
  EXPECT_EQ(tokens.SerializeAsString(), named.SerializeAsString());

  v1::BranchRequest branch;
  branch.mutable_sampler()->set_steps(2);
  branch.mutable_sampler()->set_eta(1);
  branch.mutable_sampler()->set_guidance(2);
  branch.mutable_conditioning()->set_prompt("a cat");
  v1::Path* p = branch.add_trajectories()->mutable_path();
  p->set_init_seed(1);
  p->add_segments()->set_noise_seed(2);
  grpc::ClientContext branch_context;
  auto reader = stack_->Denoiser(0)->Branch(&branch_context, branch);
  v1::BranchEvent event;
  const v1::Tensor* final_latent = nullptr;
  v1::Tensor latent;
  while (reader->Read(&event)) {
    if (event.has_final()) latent = event.final().latent();
  }
  const grpc::Status branched = reader->Finish();
  ASSERT_TRUE(branched.ok()) << branched.error_message();
  final_latent = &latent;

  v1::DecodeRequest decode;
  *decode.add_latents() = *final_latent;
  v1::DecodeResponse images;
  grpc::ClientContext decode_context;
  const grpc::Status decoded = stack_->Denoiser(0)->Decode(&decode_context, decode, &images);
  ASSERT_TRUE(decoded.ok()) << decoded.error_message();
  EXPECT_EQ(images.images_size(), 1);
}

TEST(TextReplicaTest, OneAndTwoReplicasGiveTheSameCells) {
  auto one = Stack::Start(TextStack(1), "text-one");
  ASSERT_TRUE(one.ok()) << one.status();
  const v1::Grid a = MustCreate(**one, Request("a watercolor of a lighthouse"));
  one->reset();
  auto two = Stack::Start(TextStack(2), "text-two");
  ASSERT_TRUE(two.ok()) << two.status();
  const v1::Grid b = MustCreate(**two, Request("a watercolor of a lighthouse"));
  const int drift = GridDrift(a, b);
  std::cout << "1 vs 2 replicas: max drift " << drift << "/255\n";
  EXPECT_LE(drift, kDriftTolerance);
}

// Copies the fixture bundle with another version in its manifest.
std::string VersionedCopy(const std::string& dir, const std::string& version) {
  namespace fs = std::filesystem;
  const std::string to = absl::StrCat(dir, "-v", version);
  fs::remove_all(to);
  fs::copy(FixtureDir("textlatent"), to, fs::copy_options::recursive);
  std::ifstream in(to + "/manifest.json");
  std::stringstream text;
  text << in.rdbuf();
  std::string json = text.str();
  const std::string from = "\"version\": \"1\"";
  EXPECT_NE(json.find(from), std::string::npos) << "fixture manifest layout changed";
  json = absl::StrReplaceAll(json, {{from, absl::StrCat("\"version\": \"", version, "\"")}});
  std::ofstream(to + "/manifest.json") << json;
  return to;
}

TEST(TextVersionTest, ANewModelVersionMissesTheCacheAndGridsStayOnOneVersion) {
  StackOptions options = TextStack(2);
  options.orchestrator_flags = {"--cache_mb=64"};
  const std::string scratch =
      absl::StrCat(std::filesystem::temp_directory_path().string(), "/dgrid-version-", getpid());
  options.per_denoiser_flags[1] = {"--model_dir=" + VersionedCopy(scratch, "2")};
  auto stack = Stack::Start(options, "text-version");
  ASSERT_TRUE(stack.ok()) << stack.status();
  // Mid-rollout: replica 0 serves version 1, replica 1 version 2. A grid is
  // pinned to the version it was planned with.
  const v1::Grid first = MustCreate(**stack, Request("a photo of a cat"));
  const std::string used = first.trunk().source();
  for (const auto& row : first.rows()) {
    for (const auto& cell : row.cells()) {
      EXPECT_EQ(cell.source(), used) << "a grid mixed replicas of two versions";
    }
  }
  // The same request again is all cache hits.
  const v1::Grid again = MustCreate(**stack, Request("a photo of a cat"));
  EXPECT_EQ(again.model_evals(), 0);
  EXPECT_EQ(again.trunk().source(), "cache");
  for (const auto& row : again.rows()) {
    for (const auto& cell : row.cells()) EXPECT_EQ(cell.source(), "cache");
  }
  // Roll the version the grid used out: the other version misses the cache.
  (*stack)->KillDenoiser(used == (*stack)->denoiser_address(0) ? 0 : 1);
  absl::SleepFor(absl::Seconds(2));
  const v1::Grid rolled = MustCreate(**stack, Request("a photo of a cat"));
  EXPECT_EQ(rolled.cache_hits(), 0);
  for (const auto& row : rolled.rows()) {
    for (const auto& cell : row.cells()) EXPECT_NE(cell.source(), used);
  }
  std::filesystem::remove_all(scratch + "-v2");
}

TEST(TextBundleTest, PartsThatDisagreeFailAtLoadNamingTheFileAndShapes) {
  StackOptions options;
  options.model_dir = FixtureDir("textlatent_bad");
  options.denoisers = 1;
  auto stack = Stack::Start(options, "text-bad");
  ASSERT_FALSE(stack.ok());
  const std::string message(stack.status().message());
  EXPECT_NE(message.find("text_encoder.pt"), std::string::npos) << message;
  EXPECT_NE(message.find("context_dim"), std::string::npos) << message;
}

// A word vocabulary reads a word it lacks as its unknown token: the plan
// names such words and dgrid warns, where the grid once ran in silence on
// less than the prompt said. (CLIP's byte-level BPE has no unknown words.)
TEST(WordVocabularyTest, UnknownWordsAreNamedInThePlanAndByDgrid) {
  StackOptions options;
  options.model_dir = FixtureDir("poisoned");  // words: cat, dog, plain, ...
  options.denoisers = 1;
  options.orchestrator_flags = {"--cache_mb=0"};
  auto stack = Stack::Start(options, "unknown-words");
  ASSERT_TRUE(stack.ok()) << stack.status();
  v1::GridRequest request = Request("plain cat xyzzy dog qux xyzzy");
  request.set_negative_prompt("zzz cat");
  const v1::Grid grid = MustCreate(**stack, request);
  EXPECT_EQ(std::vector<std::string>(grid.plan().unknown_words().begin(),
                                     grid.plan().unknown_words().end()),
            (std::vector<std::string>{"xyzzy", "qux", "zzz"}));
  EXPECT_EQ(MustCreate(**stack, Request("plain cat")).plan().unknown_words_size(), 0);

  const std::string dir = (*stack)->dir();
  auto cli = testing::ChildProcess::Start(
      {testing::BinPath("dgrid"), "grid", "--target=" + (*stack)->orchestrator_address(),
       "--prompt=cat xyzzy", "--steps=2", "--branches=1", "--branch_steps=0",
       "-o", dir + "/unknown.png"},
      dir + "/cli.log");
  ASSERT_TRUE(cli.ok()) << cli.status();
  absl::StatusOr<int> code = (*cli)->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok() && *code == 0) << (*cli)->Log();
  EXPECT_NE((*cli)->Log().find("warning: poisoned does not know \"xyzzy\""), std::string::npos)
      << (*cli)->Log();
  // The same, read from the bundle with no server.
  auto local = testing::ChildProcess::Start(
      {testing::BinPath("dgrid"), "tokenize", "--model_dir=" + FixtureDir("poisoned"),
       "cat xyzzy"},
      dir + "/tokenize.log");
  ASSERT_TRUE(local.ok());
  code = (*local)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok() && *code == 0) << (*local)->Log();
  EXPECT_NE((*local)->Log().find("not in the vocabulary, read as unknown: \"xyzzy\""),
            std::string::npos)
      << (*local)->Log();
}

}  // namespace
}  // namespace dgrid
