#include "common/short_text.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(ShortQuoteTest, QuotesAShortValueWhole) {
  EXPECT_EQ(ShortQuote("sneaker"), "\"sneaker\"");
  EXPECT_EQ(ShortQuote(""), "\"\"");
}

TEST(ShortQuoteTest, CutsALongValueAndGivesItsSize) {
  const std::string quoted = ShortQuote(std::string(8000, 'a'));
  EXPECT_TRUE(absl::StartsWith(quoted, "\"" + std::string(kMaxEchoBytes, 'a') + "\"")) << quoted;
  EXPECT_TRUE(absl::EndsWith(quoted, "(8000 bytes)")) << quoted;
  EXPECT_LT(quoted.size(), kMaxEchoBytes + 30);
  // A value of exactly the limit is not cut.
  EXPECT_EQ(ShortQuote(std::string(kMaxEchoBytes, 'a')),
            "\"" + std::string(kMaxEchoBytes, 'a') + "\"");
}

TEST(ShortQuoteTest, CutsOnACharacterBoundary) {
  std::string value;
  for (int i = 0; i < 100; ++i) value += "\xC3\xA9";  // é, two bytes each
  // 101 falls inside the 51st é: the cut backs up to 50 whole characters.
  const std::string quoted = ShortQuote(value, 101);
  std::string fifty;
  for (int i = 0; i < 50; ++i) fifty += "\xC3\xA9";
  EXPECT_TRUE(absl::StartsWith(quoted, "\"" + fifty + "\"")) << quoted;
  EXPECT_TRUE(absl::EndsWith(quoted, "(200 bytes)")) << quoted;
  EXPECT_TRUE(IsValidUtf8(quoted));
}

TEST(ShortQuoteTest, EscapesControlBytes) {
  const std::string quoted = ShortQuote("a\nb\"c");
  EXPECT_EQ(quoted.find('\n'), std::string::npos) << quoted;
  EXPECT_EQ(quoted, "\"a\\nb\\\"c\"");
  // A C1 control (U+009B starts a terminal command, as ESC [ does) and a
  // right-to-left override, which would reorder what a terminal shows.
  EXPECT_EQ(ShortQuote("\xC2\x9B" "2J"), "\"\\u{009B}2J\"");
  EXPECT_EQ(ShortQuote("ab\xE2\x80\xAE" "cd"), "\"ab\\u{202E}cd\"");
  EXPECT_EQ(ShortQuote("caf\xC3\xA9"), "\"caf\xC3\xA9\"");  // other letters stay
}

TEST(ShortQuoteTest, EscapesInvalidUtf8) {
  // What comes back goes into a status message and onto terminals: it must
  // be valid UTF-8 whatever the client sent.
  for (const char* value : {"a\xFF!", "\xC3", "\xED\xA0\x80", "\x80\x80"}) {
    const std::string quoted = ShortQuote(value);
    EXPECT_TRUE(IsValidUtf8(quoted)) << absl::CHexEscape(quoted);
  }
  const std::string cut = ShortQuote(std::string(8000, '\xFF'));
  EXPECT_TRUE(IsValidUtf8(cut)) << absl::CHexEscape(cut);
}

TEST(IsValidUtf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("Ankle boot"));
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9"));          // é
  EXPECT_TRUE(IsValidUtf8("\xE2\x80\xA6"));      // …
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x91\x9F"));  // 👟
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF
  EXPECT_TRUE(IsValidUtf8(std::string("a\0b", 3)));
}

TEST(IsValidUtf8Test, RejectsMalformedSequences) {
  const struct {
    const char* name;
    std::string bytes;
  } bad[] = {
      {"0xFF", "\xFF"},
      {"lone continuation", "a\x80"},
      {"truncated 2-byte", "\xC3"},
      {"truncated 3-byte", "x\xE2\x80"},
      {"truncated 4-byte", "\xF0\x9F\x91"},
      {"bad continuation", "\xC3\x28"},
      {"overlong /", "\xC0\xAF"},
      {"overlong 3-byte", "\xE0\x80\xAF"},
      {"surrogate", "\xED\xA0\x80"},
      {"past U+10FFFF", "\xF4\x90\x80\x80"},
      {"5-byte lead", "\xF8\x88\x80\x80\x80"},
  };
  for (const auto& c : bad) EXPECT_FALSE(IsValidUtf8(c.bytes)) << c.name;
}

TEST(CheckClientTextTest, RefusesALongValueBeforeReadingIt) {
  const absl::Status s = CheckClientText("prompt", std::string(1 << 20, 'a'), kMaxPromptBytes);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "prompt: 1048576 bytes exceeds the limit of 4096");
  EXPECT_TRUE(CheckClientText("prompt", std::string(kMaxPromptBytes, 'a'), kMaxPromptBytes).ok());
}

TEST(CheckClientTextTest, RefusesNoncharactersNamingTheField) {
  for (const char* bad : {"a\xEF\xBF\xBE", "\xEF\xBF\xBF", "x\xEF\xB7\x90y", "\xF4\x8F\xBF\xBF",
                          "\xF0\x9F\xBF\xBE"}) {
    const absl::Status s = CheckClientText("negative_prompt", bad, kMaxPromptBytes);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << absl::CEscape(bad);
    EXPECT_TRUE(absl::StartsWith(s.message(), "negative_prompt: holds the noncharacter U+"))
        << s.message();
  }
  // U+FFFD and U+FDCF/U+FDF0 beside the range are characters.
  EXPECT_TRUE(CheckClientText("prompt", "\xEF\xBF\xBD \xEF\xB7\x8F \xEF\xB7\xB0", 100).ok());
  EXPECT_EQ(CheckClientText("model", "a\xC3", 100).message(),
            "model: is not valid UTF-8 (at byte 1)");
}

TEST(ShortListTest, ListsWhatFitsThenCountsTheRest) {
  EXPECT_EQ(ShortList(std::vector<std::string>{"bag", "boot"}), "bag, boot");
  EXPECT_EQ(ShortList(std::vector<std::string>{}), "");
  std::vector<std::string> many;
  for (int i = 0; i < 2000; ++i) many.push_back("label" + std::to_string(i));
  const std::string listed = ShortList(many);
  EXPECT_LE(listed.size(), 420u);
  EXPECT_EQ(listed.rfind("label0, label1, ", 0), 0u);
  EXPECT_NE(listed.find(", and 19"), std::string::npos) << listed;  // "and 19xx more"
  EXPECT_EQ(listed.substr(listed.size() - 5), " more");
  // One name longer than the room: only the count.
  EXPECT_EQ(ShortList(std::vector<std::string>{std::string(500, 'x')}), "and 1 more");
}

TEST(DrawableTextTest, ReplacesWhatARendererRefuses) {
  EXPECT_EQ(DrawableText("ok \xEF\xBF\xBE \xC3\xA9 \xFF"), "ok \xEF\xBF\xBD \xC3\xA9 \xEF\xBF\xBD");
  EXPECT_EQ(DrawableText("plain"), "plain");
}

TEST(Utf8PrefixTest, CutsOnACharacterBoundary) {
  EXPECT_EQ(Utf8Prefix("plain", 10), "plain");
  EXPECT_EQ(Utf8Prefix("plain", 3), "pla");
  // "é" is 2 bytes: a cut inside it keeps none of it.
  EXPECT_EQ(Utf8Prefix("a\xC3\xA9" "b", 2), "a");
  EXPECT_EQ(Utf8Prefix("a\xC3\xA9" "b", 3), "a\xC3\xA9");
  EXPECT_EQ(Utf8Prefix("\xE2\x86\x92", 2), "");
}

}  // namespace
}  // namespace dgrid

namespace dgrid {
namespace {

TEST(FoundInResamplesTest, RoundsDownAndSaysNothingForAll) {
  EXPECT_EQ(FoundInResamples(1), "");
  EXPECT_EQ(FoundInResamples(0.996), " (found in 99% of resamples)");
  EXPECT_EQ(FoundInResamples(0.29), " (found in 29% of resamples)");  // 28.999... in double
  EXPECT_EQ(FoundInResamples(0), " (found in 0% of resamples)");
}

TEST(DescribeHalfStepTest, SaysWhenTheIntervalRunsPastTheLastRow) {
  HalfStepWords h;
  EXPECT_EQ(DescribeHalfStep(h), "never differs at the first row, so has no half step");
  h.differs_at_first_row = true;
  h.last_step = 12;
  h.found_fraction = 0.343;
  EXPECT_EQ(DescribeHalfStep(h),
            "not half its row-0 value by the last row, step 12 (found in 34% of resamples)");
  h.found = true;
  h.step = 11.25;
  h.standard_error = 1.8;
  h.lo = 9.45;
  h.found_fraction = 1;
  EXPECT_EQ(DescribeHalfStep(h), "half its row-0 value at step 11.2 ± 1.8");
  h.hi_after_last_row = true;
  h.found_fraction = 0.79;
  EXPECT_EQ(DescribeHalfStep(h),
            "half its row-0 value at step 11.2, 68% from 9.4 to past step 12 (found in 79% of "
            "resamples)");
}

// A prompt switch of the negative prompt alone once read as a switch to the
// same prompt.
TEST(SwitchedNegativeNoteTest, SaysTheNegativePromptOnlyWhereItChanges) {
  EXPECT_EQ(SwitchedNegativeNote("ghost", "ghost"), "");
  EXPECT_EQ(SwitchedNegativeNote("", ""), "");
  EXPECT_EQ(SwitchedNegativeNote("", "ghost"), ", no negative prompt");
  EXPECT_EQ(SwitchedNegativeNote("red apple", ""), ", negative \xE2\x80\x9Cred apple\xE2\x80\x9D");
  EXPECT_EQ(SwitchedNegativeNote(std::string(80, 'a'), "", 10),
            ", negative \xE2\x80\x9C" "aaaaaaa...\xE2\x80\x9D");
}

}  // namespace
}  // namespace dgrid
