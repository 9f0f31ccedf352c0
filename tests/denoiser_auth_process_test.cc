// Issue 24, section 3: a denoiser trusts the fairness ranks its callers
// claim, so it answers only the orchestrator. With --auth_token_file every
// Denoiser call must carry the token (the orchestrator's
// --denoiser_token_file); health checks stay open.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <iterator>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/raw_call.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::Stack;
using testing::StackOptions;

grpc::Status Branch(v1::Denoiser::Stub& stub, const std::string& authorization) {
  v1::BranchRequest r;
  r.mutable_sampler()->set_steps(2);
  r.mutable_sampler()->set_eta(1);
  r.mutable_sampler()->set_guidance(1);
  // Rank 0: what a caller claiming to be first would send.
  r.set_fairness_rank(0);
  v1::Path* p = r.add_trajectories()->mutable_path();
  p->set_init_seed(1);
  p->add_segments()->set_noise_seed(2);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  auto reader = stub.Branch(&context, r);
  v1::BranchEvent event;
  while (reader->Read(&event)) {
  }
  return reader->Finish();
}

// One denoiser that requires `denoiser_token` and an orchestrator that
// sends `orchestrator_token`, each from a file.
absl::StatusOr<std::unique_ptr<Stack>> TokenStack(const std::string& name,
                                                  const std::string& denoiser_token,
                                                  const std::string& orchestrator_token) {
  const std::string dir = testing::TempDir(name + "-tokens");
  std::ofstream(dir + "/denoiser") << denoiser_token << "\n";
  std::ofstream(dir + "/orchestrator") << orchestrator_token << "\n";
  StackOptions options;
  options.denoisers = 1;
  options.denoiser_flags = {"--auth_token_file=" + dir + "/denoiser"};
  options.orchestrator_flags = {"--denoiser_token_file=" + dir + "/orchestrator"};
  return Stack::Start(options, name);
}

TEST(DenoiserAuthTest, OnlyCallersWithTheTokenAreServed) {
  const std::string token = "replica-s3cret";
  auto stack = TokenStack("denoiser-auth", token, token);
  ASSERT_TRUE(stack.ok()) << stack.status();

  // The orchestrator's pool sends the token on every call: a grid works.
  v1::GridRequest grid_request;
  grid_request.set_seed(1);
  grid_request.mutable_steps()->set_value(6);
  grid_request.mutable_branches()->set_value(2);
  grid_request.add_branch_steps(0);
  grid_request.add_branch_steps(3);
  grpc::ClientContext grid_context;
  grid_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  v1::Grid grid;
  const grpc::Status made = (*stack)->Orchestrator()->CreateGrid(&grid_context, grid_request, &grid);
  ASSERT_TRUE(made.ok()) << made.error_message();
  EXPECT_EQ(grid.rows_size(), 2);

  // A caller that reaches the replica directly is refused, whatever it claims.
  auto denoiser = (*stack)->Denoiser(0);
  for (const std::string& wrong : {std::string(), std::string("Bearer nope"),
                                   std::string("Bearer ") + token + "x"}) {
    const grpc::Status refused = Branch(*denoiser, wrong);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED) << wrong;
    EXPECT_EQ(refused.error_message().find(token), std::string::npos);
  }
  v1::GetModelInfoResponse info;
  grpc::ClientContext info_context;
  EXPECT_EQ(denoiser->GetModelInfo(&info_context, {}, &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The token given twice: a proxy in front may read the other one.
  grpc::ClientContext twice_context;
  twice_context.AddMetadata("authorization", "Bearer " + token);
  twice_context.AddMetadata("authorization", "Bearer nope");
  EXPECT_EQ(denoiser->GetModelInfo(&twice_context, {}, &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Without the token, a request that does not parse is refused for the
  // token, not diagnosed field by field (the denoiser parses nothing for it);
  // with the token the same bytes get the field's name.
  std::string wire = v1::StepRequest().SerializeAsString();
  wire += std::string("\x0a\x01\xff", 3);  // field 1 (model): one byte, not UTF-8
  for (const std::string& authorization : {std::string(), "Bearer " + token}) {
    const grpc::Status status = testing::RawCall(
        grpc::CreateChannel((*stack)->denoiser_address(0), grpc::InsecureChannelCredentials()),
        "/dgrid.v1.Denoiser/Step", wire, authorization);
    if (authorization.empty()) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_EQ(status.error_message(), "model: is not valid UTF-8");
    }
  }
  // The scheme is case-insensitive.
  const grpc::Status served = Branch(*denoiser, "bearer " + token);
  EXPECT_TRUE(served.ok()) << served.error_message();

  // Health stays open: Kubernetes probes carry no token.
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel((*stack)->denoiser_address(0), grpc::InsecureChannelCredentials()));
  grpc::ClientContext health_context;
  grpc::health::v1::HealthCheckResponse health_response;
  EXPECT_TRUE(health->Check(&health_context, {}, &health_response).ok());
}

// An orchestrator holding the wrong token (mid-rotation, say) says so: its
// grids used to fail with "no healthy denoiser replica answered
// GetModelInfo" alone, while health checks (no token) passed.
TEST(DenoiserAuthTest, AWrongTokenIsNamedInTheGridsError) {
  auto stack = TokenStack("denoiser-old-token", "replica-s3cret", "replica-0ld");
  ASSERT_TRUE(stack.ok()) << stack.status();
  v1::GridRequest grid_request;
  grid_request.set_seed(1);
  grpc::ClientContext grid_context;
  grid_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  v1::Grid grid;
  const grpc::Status refused =
      (*stack)->Orchestrator()->CreateGrid(&grid_context, grid_request, &grid);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_NE(refused.error_message().find("UNAUTHENTICATED"), std::string::npos)
      << refused.error_message();
  EXPECT_EQ(refused.error_message().find("0ld"), std::string::npos) << "a token was echoed";
}

// Only the orchestrator should reach a denoiser: unless told otherwise it
// listens on loopback (it listened on every interface).
TEST(DenoiserAuthTest, TheDenoiserListensOnLoopbackByDefault) {
  const std::string dir = testing::TempDir("denoiser-listen");
  auto help = testing::ChildProcess::Start({testing::BinPath("dgrid-denoiser"), "--helpfull"},
                                           dir + "/help.log");
  ASSERT_TRUE(help.ok()) << help.status();
  ASSERT_TRUE((*help)->Wait(absl::Seconds(30)).ok());
  std::ifstream log(dir + "/help.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  const size_t flag = text.find("-listen (");
  ASSERT_NE(flag, std::string::npos) << text.substr(0, 500);
  const size_t default_at = text.find("default: \"", flag);
  ASSERT_NE(default_at, std::string::npos);
  EXPECT_EQ(text.substr(default_at, 26), "default: \"127.0.0.1:50051\"");
}

}  // namespace
}  // namespace dgrid
