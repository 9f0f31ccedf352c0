#include "common/bearer_token.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/tls.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

// A token file is its text less surrounding whitespace, as the Python
// client reads it (a trailing space kept made `dgrid` and Python differ); a
// file of a newline alone is refused: an empty token turned authentication
// off.
TEST(TokenFileTest, SurroundingWhitespaceGoesAndATokenCannotHoldAny) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dgrid-token-" + std::to_string(::getpid()))).string();
  std::ofstream(path) << "s3cret\r\n";
  absl::StatusOr<std::string> token = ReadTokenFile(path, "--auth_token_file");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "s3cret");
  std::ofstream(path, std::ios::trunc) << "\n";
  token = ReadTokenFile(path, "--auth_token_file");
  ASSERT_FALSE(token.ok());
  EXPECT_NE(token.status().message().find("--auth_token_file: "), absl::string_view::npos);
  EXPECT_NE(token.status().message().find("holds no token"), absl::string_view::npos);
  std::ofstream(path, std::ios::trunc) << "  s3cret \t\n";
  token = ReadTokenFile(path, "--auth_token_file");
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

// A key or certificate file is held to holding one PEM block of its kind,
// among any others gRPC skips; without one, gRPC's refusal came only at the
// listen, as "cannot listen (in use by another process?)".
TEST(TlsFilesTest, AKeyAndACertificateAreFoundAmongOtherBlocks) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("dgrid-pem-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  const auto block = [](const std::string& label) {
    return "-----BEGIN " + label + "-----\nAAAA\n-----END " + label + "-----\n";
  };
  const auto file = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const std::string cert = file("cert.pem", block("CERTIFICATE"));
  const std::string chain = file("chain.pem", block("CERTIFICATE") + block("CERTIFICATE"));
  const std::string both_key_first =
      file("both1.pem", block("PRIVATE KEY") + block("CERTIFICATE"));
  const std::string both_cert_first =
      file("both2.pem", block("CERTIFICATE") + block("RSA PRIVATE KEY"));
  // openssl ecparam -genkey writes the curve's parameters first.
  const std::string ec_key = file("ec.key", block("EC PARAMETERS") + block("EC PRIVATE KEY"));
  const std::string not_pem = file("not.pem", "not a certificate\n");
  const std::string cut = file("cut.pem", "-----BEGIN CERTIFICATE");
  for (const auto& [c, k] : std::vector<std::pair<std::string, std::string>>{
           {cert, ec_key}, {chain, both_key_first}, {both_key_first, both_cert_first},
           {both_cert_first, both_key_first}}) {
    EXPECT_TRUE(ServerCredentialsFromFiles({c, k, ""}).ok()) << c << " " << k;
  }
  EXPECT_EQ(ServerCredentialsFromFiles({not_pem, ec_key, ""}).status().message(),
            "--tls_cert: " + not_pem + " holds no PEM certificate");
  EXPECT_EQ(ServerCredentialsFromFiles({cut, ec_key, ""}).status().message(),
            "--tls_cert: " + cut + " holds no PEM certificate");
  EXPECT_EQ(ServerCredentialsFromFiles({cert, chain, ""}).status().message(),
            "--tls_key: " + chain + " holds no PEM private key");
  // A client's CA, certificate and key: gRPC refused a CA that is not PEM
  // only at the first call, with "UNAVAILABLE: empty address list".
  EXPECT_TRUE(ChannelCredentialsFromFiles({chain, cert, ec_key}).ok());
  EXPECT_EQ(ChannelCredentialsFromFiles({not_pem, "", ""}).status().message(),
            "--tls_ca: " + not_pem + " holds no PEM certificate");
  EXPECT_EQ(ChannelCredentialsFromFiles({cert, not_pem, ec_key}).status().message(),
            "--tls_cert: " + not_pem + " holds no PEM certificate");
  EXPECT_EQ(ChannelCredentialsFromFiles({cert, cert, cert, "--denoiser_"}).status().message(),
            "--denoiser_key: " + cert + " holds no PEM private key");
  // And a server's client CA.
  EXPECT_EQ(ServerCredentialsFromFiles({cert, ec_key, not_pem}).status().message(),
            "--tls_client_ca: " + not_pem + " holds no PEM certificate");
  std::filesystem::remove_all(dir);
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
