#include "grid_orchestrator/server/request_head.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using testing::HasSubstr;

constexpr char kLine[] = "GET /api/v1/models HTTP/1.1\r\n";

TEST(RequestHeadTest, FieldsComeAsSentWithoutTheWhitespaceAroundValues) {
  auto fields = ParseHeadFields(absl::StrCat(kLine,
                                             "Host: 127.0.0.1:8080\r\n"
                                             "Authorization:Bearer a%41b\r\n"
                                             "X-Empty:\r\n"
                                             "X-Padded: \t  two  words \t\r\n"
                                             "X-Bytes: caf\xc3\xa9\r\n"
                                             "\r\n"));
  ASSERT_TRUE(fields.ok()) << fields.status();
  ASSERT_EQ(fields->size(), 5u);
  EXPECT_EQ((*fields)[0].name, "Host");
  EXPECT_EQ((*fields)[0].value, "127.0.0.1:8080");
  EXPECT_EQ((*fields)[1].value, "Bearer a%41b");  // not percent-decoded
  EXPECT_EQ((*fields)[2].name, "X-Empty");        // kept with its empty value
  EXPECT_EQ((*fields)[2].value, "");
  EXPECT_EQ((*fields)[3].value, "two  words");
  EXPECT_EQ((*fields)[4].value, "caf\xc3\xa9");
  auto none = ParseHeadFields(absl::StrCat(kLine, "\r\n"));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

TEST(RequestHeadTest, LinesOutsideTheFieldGrammarAreRefusedByNumber) {
  const std::pair<const char*, const char*> cases[] = {
      {"Host : evil.example\r\n", "header line 1 (\"Host \") has space before its colon"},
      {"Content-Length\t: 42\r\n", "has space before its colon"},
      {"Host: a\r\nNo colon here\r\n", "header line 2 (\"No colon here\") has no colon"},
      {": value\r\n", "has no field name"},
      {"Bad(name): 1\r\n", "field name that is not a token"},
      {"X-A: 1\r\n folded\r\n", "header line 2 (\" folded\") is folded"},
      {"Transfer-Encoding: chunked\nHost: a\r\n", "bare CR or LF"},
      {"X-A: 1\r2\r\n", "bare CR or LF"},
      {"X-A: a\x01z\r\n", "control byte in its value"},
      {"X-A: a\x7fz\r\n", "control byte in its value"},
  };
  for (const auto& [lines, problem] : cases) {
    auto fields = ParseHeadFields(absl::StrCat(kLine, lines, "\r\n"));
    ASSERT_FALSE(fields.ok()) << lines;
    EXPECT_EQ(fields.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(fields.status().message(), HasSubstr(problem)) << lines;
  }
}

TEST(RequestHeadTest, AValueIsNotEchoed) {
  auto fields = ParseHeadFields(absl::StrCat(kLine, "Authorization : Bearer secret\r\n\r\n"));
  ASSERT_FALSE(fields.ok());
  EXPECT_THAT(fields.status().message(), testing::Not(HasSubstr("secret")));
}

TEST(RequestHeadTest, AHeadThatDoesNotEndWellIsRefused) {
  EXPECT_FALSE(ParseHeadFields("GET / HTTP/1.1").ok());
  EXPECT_FALSE(ParseHeadFields(absl::StrCat(kLine, "Host: a\r\n")).ok());
  EXPECT_FALSE(ParseHeadFields(absl::StrCat(kLine, "Host: a\r\n\r\nmore")).ok());
}

TEST(RequestHeadTest, AcceptedCodingsReadWeightsAndNames) {
  EXPECT_EQ(AcceptedCodings("gzip, deflate, br"), "br, gzip");
  EXPECT_EQ(AcceptedCodings("br;q=0, gzip"), "gzip");
  EXPECT_EQ(AcceptedCodings("gzip;q=0"), "");
  EXPECT_EQ(AcceptedCodings("GZIP ; Q=0.5"), "gzip");
  EXPECT_EQ(AcceptedCodings("nobrotli, x-gzip-not"), "");  // read as br and gzip
  EXPECT_EQ(AcceptedCodings("x-gzip"), "gzip");
  EXPECT_EQ(AcceptedCodings("*"), "br, gzip");
  EXPECT_EQ(AcceptedCodings("*;q=0, gzip"), "gzip");
  EXPECT_EQ(AcceptedCodings("br;q=0, *"), "gzip");
  EXPECT_EQ(AcceptedCodings("identity"), "");
  EXPECT_EQ(AcceptedCodings("gzip;q=abc, br;q=2"), "");  // weights that are no weight
  EXPECT_EQ(AcceptedCodings(""), "");
}

// The whole body at once, and a byte at a time, as httplib reads a size line.
std::string FramingProblem(absl::string_view body) {
  ChunkedFraming whole;
  const bool took = whole.Take(body);
  ChunkedFraming bytes;
  bool each = true;
  for (const char c : body) each = each && bytes.Take(absl::string_view(&c, 1));
  EXPECT_EQ(took, each) << body;
  EXPECT_EQ(whole.problem(), bytes.problem()) << body;
  EXPECT_EQ(whole.done(), bytes.done()) << body;
  if (took && !whole.done()) return "unfinished";
  return whole.problem();
}

TEST(RequestHeadTest, ChunkedFramingTakesTheGrammar) {
  EXPECT_EQ(FramingProblem("5\r\nhello\r\n0\r\n\r\n"), "");
  EXPECT_EQ(FramingProblem("5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n"), "");
  EXPECT_EQ(FramingProblem("1a \t;x\r\n" + std::string(26, 'z') + "\r\n0\r\n\r\n"), "");
  EXPECT_EQ(FramingProblem("00000000000000005 \t\r\nhello\r\n0\r\n\r\n"), "");
  EXPECT_EQ(FramingProblem("5\r\nhel"), "unfinished");
  EXPECT_EQ(FramingProblem("0\r\n"), "unfinished");
}

TEST(RequestHeadTest, ChunkedFramingRefusesWhatHttplibReadAnyway) {
  const std::pair<std::string, const char*> cases[] = {
      {" 5\r\nhello\r\n0\r\n\r\n", "a chunk size starts with \" \", not a hex digit"},
      {"0x5\r\nhello\r\n0\r\n\r\n", "a chunk size has \"x\" after its hex digits"},
      {"+5\r\nhello\r\n0\r\n\r\n", "not a hex digit"},
      {"5\r\nhelloXY0\r\n\r\n", "a chunk's data runs past its size"},
      {"5\r\nhello\rX0\r\n\r\n", "a chunk's data runs past its size"},
      {"5\rhello", "a chunk size line ends in a CR without LF"},
      {"5;a\x01\r\nhello", "a control byte in a chunk extension"},
      {"0\r\nX-Trailer: 1\r\n\r\n", "a trailer section after the last chunk"},
      {"0\r\n\rX", "the last chunk's empty line ends in a CR without LF"},
      {"0\r\n\r\nGET", "bytes after the last chunk"},
      {"1000000000000000\r\n", "more than 15 hex digits"},
      {"5 6\r\nhello", "a chunk size has \"6\" after its hex digits"},
  };
  for (const auto& [body, problem] : cases) {
    EXPECT_THAT(FramingProblem(body), HasSubstr(problem)) << body;
  }
}

}  // namespace
}  // namespace dgrid
