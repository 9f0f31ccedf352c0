#include "grid_orchestrator/server/cors_policy.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(CorsPolicyTest, TheHostAloneDecidesWhatIsCrossOrigin) {
  EXPECT_FALSE(CorsPolicy::CrossOrigin("", "localhost:8080"));  // no Origin: not a page
  EXPECT_FALSE(CorsPolicy::CrossOrigin("http://localhost:8080", "localhost:8080"));
  EXPECT_FALSE(CorsPolicy::CrossOrigin("https://LOCALHOST:8080", "localhost:8080"));  // TLS proxy
  EXPECT_TRUE(CorsPolicy::CrossOrigin("http://evil.example", "localhost:8080"));
  EXPECT_TRUE(CorsPolicy::CrossOrigin("http://localhost:9999", "localhost:8080"));
  EXPECT_TRUE(CorsPolicy::CrossOrigin("null", "localhost:8080"));  // a sandboxed page
}

TEST(CorsPolicyTest, AllowsTheNamedOriginsInAnyCaseOrAll) {
  auto none = CorsPolicy::Create({});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->Allows("https://app.example"));
  auto some = CorsPolicy::Create({"https://App.Example", "http://localhost:3000"});
  ASSERT_TRUE(some.ok()) << some.status();
  EXPECT_TRUE(some->Allows("https://app.example"));
  EXPECT_TRUE(some->Allows("HTTP://LOCALHOST:3000"));
  EXPECT_FALSE(some->Allows("http://app.example"));  // another scheme is another origin
  EXPECT_EQ(some->AllowOriginHeader("https://app.example"), "https://app.example");
  auto any = CorsPolicy::Create({"*"});
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE(any->Allows("http://anything.example"));
  EXPECT_EQ(any->AllowOriginHeader("http://anything.example"), "*");
}

TEST(CorsPolicyTest, MalformedOriginsAreRefusedNamingTheFlag) {
  for (const char* bad : {"app.example", "ftp://app.example", "https://", "https://a.example/path",
                          "https://a b"}) {
    const auto policy = CorsPolicy::Create({bad});
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(policy.status().message().substr(0, 20), "--http_cors_origins:") << bad;
  }
}

}  // namespace
}  // namespace dgrid
