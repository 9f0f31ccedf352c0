#include "denoiser_service/text/tokenizer.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "denoiser_service/text/cleanup.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// vocab.json and merges.txt, which tests/fixtures/clip/derive_vocab.py writes
// from OpenAI's bpe_simple_vocab_16e6.txt.gz (ctest fixture clip_vocab).
std::string ClipDir() {
  const char* dir = std::getenv("DGRID_FIXTURES");
  return absl::StrCat(dir ? dir : "build/fixtures", "/clip");
}

TokenizerSpec ClipSpec() {
  TokenizerSpec spec;
  spec.kind = "clip_bpe";
  spec.vocab_path = ClipDir() + "/vocab.json";
  spec.merges_path = ClipDir() + "/merges.txt";
  return spec;
}

class ClipBpeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = LoadTokenizer(ClipSpec());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = loaded->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  static std::vector<int64_t> Ids(absl::string_view text) { return tokenizer_->Encode(text).ids; }

  static const Tokenizer* tokenizer_;
};
const Tokenizer* ClipBpeTest::tokenizer_ = nullptr;

// The usage example at the top of tokenizer.h, as written there.
absl::Status HeaderExample(const std::string& dir, std::vector<int64_t>* out) {
  TokenizerSpec spec;  // the bundle manifest fills it in
  spec.kind = "clip_bpe";
  spec.vocab_path = dir + "/vocab.json";
  spec.merges_path = dir + "/merges.txt";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(spec);
  if (!tokenizer.ok()) return tokenizer.status();
  Tokens tokens = (*tokenizer)->Encode("a photo of a cat");
  // tokens.ids: 49406 320 1125 539 320 2368 49407, tokens.dropped: 0
  std::vector<int64_t> row = (*tokenizer)->Padded(tokens);  // 77 ids
  *out = row;
  return absl::OkStatus();
}

TEST(TokenizerHeader, ExampleRuns) {
  std::vector<int64_t> row;
  ASSERT_TRUE(HeaderExample(ClipDir(), &row).ok());
  ASSERT_EQ(row.size(), 77u);
  EXPECT_THAT(std::vector<int64_t>(row.begin(), row.begin() + 8),
              ElementsAre(49406, 320, 1125, 539, 320, 2368, 49407, 49407));
}

// ---- Published ids ----------------------------------------------------------

// The ids, which match openai/clip-vit-base-patch32 and SD 1.x.
TEST_F(ClipBpeTest, PhotoOfACatPadsWithTheSpecsPadId) {
  const Tokens tokens = tokenizer_->Encode("a photo of a cat");
  EXPECT_THAT(tokens.ids, ElementsAre(49406, 320, 1125, 539, 320, 2368, 49407));
  EXPECT_EQ(tokens.dropped, 0);
  EXPECT_EQ(tokenizer_->vocab_size(), 49408);

  std::vector<int64_t> sd1(77, 49407);  // SD 1.x pads with EOS
  for (int i = 0; i < 7; ++i) sd1[i] = tokens.ids[i];
  EXPECT_EQ(tokenizer_->Padded(tokens), sd1);

  TokenizerSpec spec = ClipSpec();
  spec.pad_id = 0;  // SD 2.x pads with "!"
  auto sd2_tokenizer = LoadTokenizer(spec);
  ASSERT_TRUE(sd2_tokenizer.ok()) << sd2_tokenizer.status();
  std::vector<int64_t> sd2(77, 0);
  for (int i = 0; i < 7; ++i) sd2[i] = tokens.ids[i];
  EXPECT_EQ((*sd2_tokenizer)->Padded((*sd2_tokenizer)->Encode("a photo of a cat")), sd2);
}

TEST_F(ClipBpeTest, QuickBrownFox) {
  EXPECT_THAT(Ids("the quick brown fox jumped over the lazy dog"),
              ElementsAre(49406, 518, 3712, 2866, 3240, 16901, 962, 518, 10753, 1929, 49407));
}

// Hugging Face transformers' integration test: the input string of
// tests/test_tokenization_common.py and the ids that
// tests/models/clip/test_tokenization_clip.py publishes for
// openai/clip-vit-base-patch32 (integration_expected_token_ids, without
// special tokens; BOS and EOS added here). It covers digits, "falsé",
// Chinese, Thai, an emoji, "<s>" and whitespace runs with newlines.
TEST_F(ClipBpeTest, TransformersIntegrationString) {
  const std::string input =
      "This is a test 😊\nI was born in 92000, and this is falsé.\n"
      "生活的真谛是\n"
      "Hi  Hello\nHi   Hello\n\n \n  \n Hello\n<s>\nhi<s>there\n"
      "The following string should be properly encoded: Hello.\n"
      "But ird and ปี   ird   ด\nHey how are you doing";
  const std::vector<int64_t> published = {
      589,  533, 320,  1628,  3020,  328,  739,   2683,  530,   280,  273,   271, 271,  271,  267,
      537,  589, 533,  2778,  82,    4166, 269,   33375, 162,   112,  119,   163, 248,  226,  41570,
      164,  108, 249,  42891, 363,   1883, 3306,  1883,  3306,  3306, 283,   338, 285,  1883, 283,
      338,  285, 997,  518,   3473,  9696, 1535,  655,   12560, 524,  33703, 281, 3306, 269,  767,
      2770, 537, 1777, 505,   20278, 2770, 38825, 2189,  829,   631,  592,   1960};
  std::vector<int64_t> expected = {49406};
  expected.insert(expected.end(), published.begin(), published.end());
  expected.push_back(49407);
  EXPECT_EQ(Ids(input), expected);
}

// ---- Ids from the Python reference ----------------------------------------
// No public test publishes ids for these prompts. The expected ids were
// printed by tests/fixtures/clip/reference_tokenizer.py, an independent
// Python transcription of OpenAI's simple_tokenizer (html.unescape, Python's
// str.lower, the `regex` module's \p{L}), which reproduces the published ids
// above: `reference_tokenizer.py --json "1234 apples" ...`.

TEST_F(ClipBpeTest, DigitsAreOneTokenEach) {
  EXPECT_THAT(Ids("1234 apples"), ElementsAre(49406, 272, 273, 274, 275, 14032, 49407));
  EXPECT_THAT(Ids("½ ² ٣"),  // other numerics
              ElementsAre(49406, 33613, 41175, 149, 352, 49407));
}

TEST_F(ClipBpeTest, Apostrophes) {
  EXPECT_THAT(Ids("it's"), ElementsAre(49406, 585, 568, 49407));
  EXPECT_THAT(Ids("don't"), ElementsAre(49406, 847, 713, 49407));
  EXPECT_THAT(Ids("I'LL BE BACK"), ElementsAre(49406, 328, 1342, 655, 893, 49407));
  EXPECT_THAT(Ids("rock'n'roll"), ElementsAre(49406, 2172, 262, 333, 262, 3341, 49407));
}

TEST_F(ClipBpeTest, PunctuationRuns) {
  EXPECT_THAT(Ids("wow!!!"), ElementsAre(49406, 2781, 995, 49407));
  EXPECT_THAT(Ids("wait..."), ElementsAre(49406, 1885, 678, 49407));
  EXPECT_THAT(Ids("?!?"), ElementsAre(49406, 11395, 49407));
}

TEST_F(ClipBpeTest, NonAsciiLetters) {
  EXPECT_THAT(Ids("café"), ElementsAre(49406, 15304, 49407));
  // "café" with a combining acute: NFC makes it the same word.
  EXPECT_THAT(Ids("cafe\u0301"), ElementsAre(49406, 15304, 49407));
  EXPECT_THAT(Ids("Ünïcödé"), ElementsAre(49406, 6522, 77, 35689, 66, 7255, 67, 4166, 49407));
  EXPECT_THAT(Ids("日本語"), ElementsAre(49406, 39121, 44353, 34002, 508, 49407));
  // Lower-casing picks the final sigma.
  EXPECT_THAT(Ids("ΟΔΟΣ"), ElementsAre(49406, 138, 123, 138, 112, 138, 123, 139, 480, 49407));
  // İ lower-cases to i and a combining dot, in any locale.
  EXPECT_THAT(Ids("İstanbul"), ElementsAre(49406, 328, 16384, 11231, 49407));
  EXPECT_THAT(Ids("straße"), ElementsAre(49406, 1894, 127, 253, 324, 49407));
}

TEST_F(ClipBpeTest, HtmlEntitiesAreUnescapedTwice) {
  EXPECT_THAT(Ids("&amp;amp;"), ElementsAre(49406, 261, 49407));  // "&"
  EXPECT_EQ(Ids("&amp;amp;"), Ids("&"));
  EXPECT_THAT(Ids("fish &amp; chips"), ElementsAre(49406, 2759, 261, 8855, 49407));
  EXPECT_THAT(Ids("&lt;3 &#39;s"), ElementsAre(49406, 283, 274, 568, 49407));
  // "&amp" without ';' and "&not" inside a longer name, as browsers read them.
  EXPECT_THAT(Ids("&ampx &notit; &#x1F600;"),
              ElementsAre(49406, 261, 343, 126, 361, 585, 282, 7334, 49407));
}

TEST_F(ClipBpeTest, EmptyPromptIsBosEos) {
  EXPECT_THAT(Ids(""), ElementsAre(49406, 49407));
  EXPECT_THAT(Ids("  \t \n "), ElementsAre(49406, 49407));
}

TEST_F(ClipBpeTest, WhitespaceRunsCollapse) {
  // Tabs, newlines, an ideographic space (U+3000) and a trailing no-break space.
  EXPECT_THAT(Ids("a   photo\tof\n\na\u3000cat\u00A0 "),
              ElementsAre(49406, 320, 1125, 539, 320, 2368, 49407));
}

TEST_F(ClipBpeTest, SpecialTokenInTheTextKeepsItsId) {
  EXPECT_THAT(Ids("a <|endoftext|> cat"), ElementsAre(49406, 320, 49407, 2368, 49407));
}

// Callers reject invalid UTF-8; should some slip through, it is read as
// U+FFFD rather than crashing or leaking raw bytes into the ids.
TEST_F(ClipBpeTest, InvalidUtf8ReadsAsReplacementCharacter) {
  EXPECT_EQ(Ids("caf\xFF \xC3"), Ids("caf\uFFFD \uFFFD"));
  EXPECT_EQ(Ids("&#x41\xE2\x82"), Ids("a\uFFFD"));
}

// ---- Truncation --------------------------------------------------------------

TEST_F(ClipBpeTest, TwoHundredWordsKeepSeventyFiveAndEos) {
  std::vector<std::string> words;
  std::vector<int64_t> content;
  for (int i = 0; i < 40; ++i) {
    for (const char* w : {"a", "photo", "of", "a", "cat"}) words.push_back(w);
    for (int64_t id : {320, 1125, 539, 320, 2368}) content.push_back(id);
  }
  const Tokens tokens = tokenizer_->Encode(absl::StrJoin(words, " "));
  std::vector<int64_t> expected = {49406};
  expected.insert(expected.end(), content.begin(), content.begin() + 75);
  expected.push_back(49407);
  EXPECT_EQ(tokens.ids, expected);
  EXPECT_EQ(tokens.dropped, 125);
  EXPECT_EQ(tokenizer_->Padded(tokens), expected);
}

// One loaded tokenizer serves every RPC thread at once.
TEST_F(ClipBpeTest, EncodesFromManyThreadsAtOnce) {
  const std::vector<int64_t> cat = Ids("a photo of a cat");
  const std::vector<int64_t> fox = Ids("the quick brown fox jumped over the lazy dog");
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const bool odd = (i + t) % 2;
        wrong[t] += Ids(odd ? "a photo of a cat"
                            : "the quick brown fox jumped over the lazy dog") != (odd ? cat : fox);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(wrong, ElementsAre(0, 0, 0, 0));
}

// Encoding is on the request path: a full 77-token prompt costs
// microseconds. The figure is printed, not asserted: a shared machine's
// clock is no test oracle (the bench owns timings).
TEST_F(ClipBpeTest, EncodingAFullPromptRepeatsItsIds) {
  const std::string prompt =
      "A breathtaking hyper-detailed matte painting of an ancient overgrown temple at dawn, "
      "volumetric god rays, mist, intricate carvings, moss-covered statues, cinematic lighting, "
      "ultra wide angle, 8k, trending on ArtStation, by Greg Rutkowski and Thomas Kinkade, "
      "golden hour, dramatic sky, photorealistic, octane render, highly detailed, sharp focus, "
      "concept art, unreal engine 5";
  ASSERT_EQ(tokenizer_->Encode(prompt).ids.size(), 77u);
  constexpr int kRuns = 200;
  const auto start = std::chrono::steady_clock::now();
  size_t total = 0;
  for (int i = 0; i < kRuns; ++i) total += tokenizer_->Encode(prompt).ids.size();
  const double micros =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
      kRuns;
  EXPECT_EQ(total, 77u * kRuns);
  std::cout << "clip_bpe: " << micros << " us per 77-token prompt\n";
}

// A letter run has no length of its own in CLIP's pattern, and merging one
// costs the square of its length: runs longer than 128 bytes are merged as
// pieces of at most 128 bytes, as if spaces stood between them.
TEST_F(ClipBpeTest, LongLetterRunsAreMergedInBoundedPieces) {
  const std::string run(300, 'q');
  EXPECT_EQ(Ids(run), Ids(std::string(128, 'q') + " " + std::string(128, 'q') + " " +
                          std::string(44, 'q')));
  // The cut never splits a character: 100 two-byte letters cut after 64.
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xC3\xA9";
  std::string cut_by_hand;
  for (int i = 0; i < 64; ++i) cut_by_hand += "\xC3\xA9";
  cut_by_hand += " ";
  for (int i = 0; i < 36; ++i) cut_by_hand += "\xC3\xA9";
  EXPECT_EQ(Ids(accents), Ids(cut_by_hand));
  // Words of ordinary length are untouched.
  EXPECT_EQ(Ids("antidisestablishmentarianism"), Ids(" antidisestablishmentarianism "));
}

TEST(CheckPromptTextTest, RefusesHugeAndPathologicalTextNamingTheField) {
  std::string marks;
  while (marks.size() < (1 << 20)) marks += "\xCC\xA7\xCC\x81";  // U+0327 U+0301
  absl::Status s = CheckPromptText("conditioning.prompt", marks);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("conditioning.prompt: 1048576 bytes"));
  s = CheckPromptText("texts[1]", std::string(1 << 20, 'x'));
  EXPECT_THAT(std::string(s.message()), HasSubstr("texts[1]: 1048576 bytes exceeds the limit"));

  // Within the size limit, a run of combining marks longer than the
  // stream-safe 30 is refused; 30 pass.
  s = CheckPromptText("prompt", "e" + marks.substr(0, 31 * 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("prompt: more than 30 combining marks"));
  EXPECT_TRUE(CheckPromptText("prompt", "e" + marks.substr(0, 30 * 2) + "e" +
                                            marks.substr(0, 30 * 2)).ok());
  EXPECT_TRUE(CheckPromptText("prompt", "cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e, a photo").ok());
  // Marks are counted once decomposed: U+0F73 is a starter, but two marks
  // (U+0F71 U+0F72) to NFC, which sorted 2,730 of them in one run.
  std::string tibetan = "a";
  for (int i = 0; i < 16; ++i) tibetan += "\xE0\xBD\xB3";  // U+0F73
  s = CheckPromptText("prompt", tibetan);
  EXPECT_THAT(std::string(s.message()), HasSubstr("prompt: more than 30 combining marks"));
  EXPECT_TRUE(CheckPromptText("prompt", tibetan.substr(0, 1 + 15 * 3)).ok());
  // A Hangul syllable decomposes into starters alone.
  std::string hangul;
  for (int i = 0; i < 100; ++i) hangul += "\xED\x95\x9C";  // U+D55C
  EXPECT_TRUE(CheckPromptText("prompt", hangul).ok());
  EXPECT_EQ(CheckPromptText("prompt", "a \xEF\xBF\xBF").code(), absl::StatusCode::kInvalidArgument);
}

// ---- Clean-up steps against Python --------------------------------------------
// Expected strings are Python 3.11's html.unescape and str.lower outputs.

TEST(CleanupTest, UnescapeHtmlMatchesPython) {
  const std::pair<const char*, const char*> cases[] = {
      {"&amp;", "&"},
      {"&AMP", "&"},
      {"&ampx", "&x"},
      {"&notit;", "¬it;"},
      {"&#0;", "\uFFFD"},
      {"&#128;", "€"},
      {"&#x110000;", "\uFFFD"},
      {"&#xD800;", "\uFFFD"},
      {"&#99999999999999999999;", "\uFFFD"},
      {"&#1;", ""},
      {"&#xFFFE;x", "x"},
      {"&#13;", "\r"},
      {"&#65", "A"},
      {"&#x41;b", "Ab"},
      {"&#x0000000041;", "A"},
      {"&#x80;&#x9F;", "€Ÿ"},
      {"&#;", "&#;"},
      {"&#x;", "&#x;"},
      {"& amp;", "& amp;"},
      {"&;", "&;"},
      {"&amp;amp;", "&amp;"},
      {"&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;", "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;"},
      {"&lt&gt", "<>"},
      {"caf&eacute;", "café"},
      {"&Eacute", "É"},
      {"&nbsp;", "\u00A0"},
      {"&NotNestedLessLess;", "\u2AA1\u0338"},
      {"&fjlig;", "fj"},
      {"&ampé;", "&é;"},
  };
  for (const auto& [input, python] : cases) EXPECT_EQ(UnescapeHtml(input), python) << input;
}

TEST(CleanupTest, WhitespaceAndCaseMatchPython) {
  EXPECT_EQ(CollapseWhitespace(" \t a\x1F\u0085 b\u2028\n"), "a b");
  EXPECT_EQ(CollapseWhitespace("a\u200Bb"), "a\u200Bb");  // a zero-width space is no space
  EXPECT_EQ(ToLowerCase("ΟΔΟΣ ΟΔΟΣ."), "οδος οδος.");     // final sigmas: ς
  EXPECT_EQ(ToLowerCase("İSTANBUL"), "i\u0307stanbul");
}

// ---- The words kind -----------------------------------------------------------

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

constexpr char kWords[] = "<unk>\na\nphoto\nof\ncat\n12\n!\nété\n<s>\n</s>\n";

TEST(WordTokenizerTest, LooksUpLowerCasedWords) {
  TokenizerSpec spec;
  spec.kind = "words";
  spec.vocab_path = WriteFile("words.txt", kWords);
  spec.bos_id = spec.eos_id = spec.pad_id = -1;
  spec.max_length = 8;
  auto tokenizer = LoadTokenizer(spec);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 10);
  const Tokens tokens = (*tokenizer)->Encode("A  photo of a DOG!  ÉTÉ 12");
  EXPECT_THAT(tokens.ids, ElementsAre(1, 2, 3, 1, 0, 6, 7, 5));
  EXPECT_EQ(tokens.dropped, 0);
  EXPECT_THAT(tokens.unknown, ElementsAre("dog"));
  // Each unknown word once, in order; none past the cut.
  EXPECT_THAT((*tokenizer)->Encode("zebra cat zebra gnu a a a a yak").unknown,
              ElementsAre("zebra", "gnu"));
  EXPECT_EQ((*tokenizer)->Padded(tokens), tokens.ids);  // no pad id: unpadded

  const Tokens cut = (*tokenizer)->Encode("a a a a a a a a a cat");
  EXPECT_THAT(cut.ids, ElementsAreArray(std::vector<int64_t>(8, 1)));
  EXPECT_EQ(cut.dropped, 2);
}

TEST(WordTokenizerTest, FramesWithBosEosAndPads) {
  TokenizerSpec spec;
  spec.kind = "words";
  spec.vocab_path = WriteFile("words_framed.txt", kWords);
  spec.bos_id = 8;
  spec.eos_id = 9;
  spec.pad_id = 0;
  spec.max_length = 5;
  auto tokenizer = LoadTokenizer(spec);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT((*tokenizer)->Padded((*tokenizer)->Encode("cat")), ElementsAre(8, 4, 9, 0, 0));
  const Tokens cut = (*tokenizer)->Encode("a photo of a cat");
  EXPECT_THAT(cut.ids, ElementsAre(8, 1, 2, 3, 9));
  EXPECT_EQ(cut.dropped, 2);
}

// ---- Load errors name what is wrong -----------------------------------------

absl::Status LoadError(const TokenizerSpec& spec) {
  auto tokenizer = LoadTokenizer(spec);
  return tokenizer.ok() ? absl::OkStatus() : tokenizer.status();
}

TEST(LoadTokenizerTest, ErrorsNameTheFileAndLine) {
  TokenizerSpec spec = ClipSpec();
  spec.vocab_path = ::testing::TempDir() + "/missing.json";
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("missing.json"));
  EXPECT_EQ(LoadError(spec).code(), absl::StatusCode::kNotFound);

  spec.vocab_path = WriteFile("bad.json", "{\"a\": 0,\n \"b\" 1}\n");
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("bad.json:2: "));
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("expected ':'"));
  spec.vocab_path = WriteFile("negative.json", "{\"a\": 0,\n\"b\": -1}");
  EXPECT_THAT(LoadError(spec).message(),
              HasSubstr("negative.json:1: token \"b\": expected a non-negative integer id"));
  spec.vocab_path = WriteFile("list.json", "[1, 2]");
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("list.json:1: expected '{'"));
  spec.vocab_path = WriteFile("number.json", "7\n");
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("number.json:1: expected '{'"));
  spec.vocab_path = WriteFile("twice.json", "{\"a\": 0,\n\"b\": 1,\n\"a\": 2}");
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("twice.json:3: token \"a\" appears twice"));

  spec = ClipSpec();
  spec.merges_path = WriteFile("merges.txt", "#version: 0.2\ni n\nt h e\n");
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("merges.txt:3: expected two symbols"));

  spec = ClipSpec();
  spec.bos_id = 49408;
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("bos_id: 49408 is outside the 49408 ids"));
  spec = ClipSpec();
  spec.pad_id = -1;  // clip_bpe always pads
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("pad_id"));

  spec = ClipSpec();
  spec.kind = "sentencepiece";
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("kind: \"sentencepiece\""));
  spec = ClipSpec();
  spec.max_length = 2;
  EXPECT_THAT(LoadError(spec).message(), HasSubstr("max_length: 2"));
  // A setting's error names where the settings came from, so that one
  // bundle among several is known.
  spec.settings_from = "bundles/x/manifest.json";
  EXPECT_EQ(LoadError(spec).message(),
            "bundles/x/manifest.json: tokenizer max_length: 2 leaves no room for a token");

  TokenizerSpec words;
  words.kind = "words";
  words.vocab_path = WriteFile("dup_words.txt", "<unk>\ncat\ndog\ncat\n");
  words.bos_id = words.eos_id = words.pad_id = -1;
  EXPECT_THAT(LoadError(words).message(),
              HasSubstr("dup_words.txt:4: word \"cat\" is also on line 2"));
}

}  // namespace
}  // namespace dgrid
