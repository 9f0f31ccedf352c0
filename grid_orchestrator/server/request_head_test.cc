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

}  // namespace
}  // namespace dgrid
