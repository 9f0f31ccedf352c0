#include "common/bearer_token.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/tls.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

// A token file's newline goes; a file of a newline alone is refused: an
// empty token turned authentication off.
TEST(TokenFileTest, ANewlineIsNoToken) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dgrid-token-" + std::to_string(::getpid()))).string();
  std::ofstream(path) << "s3cret\r\n";
  absl::StatusOr<std::string> token = ReadTokenFile(path, "--auth_token_file");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret");
  std::ofstream(path, std::ios::trunc) << "\n";
  token = ReadTokenFile(path, "--auth_token_file");
  std::remove(path.c_str());
  ASSERT_FALSE(token.ok());
  EXPECT_NE(token.status().message().find("--auth_token_file: "), absl::string_view::npos);
  EXPECT_NE(token.status().message().find("holds no token"), absl::string_view::npos);
}

// The token is the file's text less surrounding whitespace, as the Python
// client reads it: a trailing space kept here made `dgrid` and Python differ.
TEST(TokenFileTest, SurroundingWhitespaceGoesAndATokenCannotHoldAny) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dgrid-token-space-" + std::to_string(::getpid()))).string();
  std::ofstream(path) << "  s3cret \t\n";
  absl::StatusOr<std::string> token = ReadTokenFile(path, "--auth_token_file");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret");
  for (const char* bad : {"s3 cret\n", "s3\x01cret", "s3cr\xc3\xa9t"}) {
    std::ofstream(path, std::ios::trunc) << bad;
    token = ReadTokenFile(path, "--auth_token_file");
    ASSERT_FALSE(token.ok()) << bad;
    EXPECT_NE(token.status().message().find("holds a space, a control character or non-ASCII"),
              absl::string_view::npos);
    EXPECT_EQ(token.status().message().find("s3"), absl::string_view::npos);  // not echoed
  }
  std::remove(path.c_str());
  // A folder is not a file (it read as empty).
  token = ReadTokenFile(std::filesystem::temp_directory_path().string(), "--auth_token_file");
  ASSERT_FALSE(token.ok());
  EXPECT_NE(token.status().message().find("is a folder, not a file"), absl::string_view::npos)
      << token.status();
}

TEST(BearerTokenTest, TheSchemeIsCaseInsensitiveAndTheTokenExact) {
  EXPECT_TRUE(BearerTokenMatches("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("bearer s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("BEARER s3cret", "s3cret"));
  EXPECT_TRUE(BearerTokenMatches(BearerAuthorization("s3cret"), "s3cret"));
  EXPECT_TRUE(BearerTokenMatches("Bearer   s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer S3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3crett", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Basic  s3cret", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearers3cret ", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("", "s3cret"));
  EXPECT_FALSE(BearerTokenMatches("Bearer", ""));
  EXPECT_FALSE(BearerTokenMatches("Bearer s3cret ", "s3cret"));
}

}  // namespace
}  // namespace dgrid
