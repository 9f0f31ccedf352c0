// TLS, mutual TLS, bearer-token auth and per-client limits, with real
// processes and certificates generated at test time with openssl.
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/tls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/support/raw_call.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::Stack;
using testing::StackOptions;

// A CA, a server certificate for localhost / 127.0.0.1 and a client
// certificate signed by it; and a second, untrusted CA with its own server
// certificate.
class Certificates {
 public:
  static const Certificates& Get() {
    static const Certificates* certs = new Certificates();
    return *certs;
  }
  std::string dir;
  std::string path(const std::string& name) const { return dir + "/" + name; }

 private:
  Certificates() {
    dir = testing::TempDir("certs");
    const std::string script = absl::StrCat(
        "set -e; cd ", dir, "\n",
        "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1 "
        "2>/dev/null; }\n",
        "ca() { key $1.key; openssl req -x509 -new -key $1.key -out $1.pem -days 2 "
        "-subj /CN=$1; }\n",
        "leaf() { key $1.key; openssl req -new -key $1.key -out $1.csr -subj /CN=$1; "
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > $1.ext; "
        "openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem "
        "-days 2 -extfile $1.ext 2>/dev/null; }\n",
        "ca ca; ca rogue-ca\n", "leaf server ca; leaf client ca; leaf rogue rogue-ca\n");
    std::ofstream(dir + "/make.sh") << script;
    EXPECT_EQ(std::system(("bash " + dir + "/make.sh").c_str()), 0) << "openssl failed";
  }
};

v1::GridRequest SmallGrid() {
  v1::GridRequest request;
  request.set_seed(1);
  request.mutable_steps()->set_value(10);
  request.mutable_branches()->set_value(2);
  request.add_branch_steps(0);
  request.add_branch_steps(5);
  return request;
}

grpc::Status Create(v1::Orchestrator::Stub& stub, const v1::GridRequest& request,
                    const std::string& token = "") {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::Grid grid;
  grpc::Status status = stub.CreateGrid(&context, request, &grid);
  if (status.ok()) EXPECT_EQ(grid.rows_size(), 2);
  return status;
}

std::vector<std::string> DenoiserTls(const Certificates& c, const std::string& leaf) {
  return {"--tls_cert=" + c.path(leaf + ".pem"), "--tls_key=" + c.path(leaf + ".key"),
          "--tls_client_ca=" + c.path("ca.pem")};
}

TEST(SecurityTest, OrchestratorTalksMutualTlsToDenoisers) {
  const Certificates& c = Certificates::Get();
  StackOptions options;
  options.denoiser_flags = DenoiserTls(c, "server");
  options.orchestrator_flags = {"--denoiser_ca=" + c.path("ca.pem"),
                                "--denoiser_cert=" + c.path("client.pem"),
                                "--denoiser_key=" + c.path("client.key")};
  auto stack = Stack::Start(options, "mtls");
  ASSERT_TRUE(stack.ok()) << stack.status();
  const grpc::Status status = Create(*(*stack)->Orchestrator(), SmallGrid());
  EXPECT_TRUE(status.ok()) << status.error_message();
  // A plaintext client cannot call a TLS denoiser.
  grpc::ClientContext context;
  v1::GetModelInfoResponse info;
  EXPECT_FALSE((*stack)->Denoiser(0)->GetModelInfo(&context, {}, &info).ok());
}

TEST(SecurityTest, OrchestratorRefusesADenoiserItsCaDidNotSign) {
  const Certificates& c = Certificates::Get();
  StackOptions options;
  options.denoiser_flags = DenoiserTls(c, "rogue");
  options.orchestrator_flags = {"--denoiser_ca=" + c.path("ca.pem"),
                                "--denoiser_cert=" + c.path("client.pem"),
                                "--denoiser_key=" + c.path("client.key")};
  auto stack = Stack::Start(options, "rogue");
  ASSERT_TRUE(stack.ok()) << stack.status();
  const grpc::Status status = Create(*(*stack)->Orchestrator(), SmallGrid());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("no healthy denoiser"), std::string::npos)
      << status.error_message();
}

TEST(SecurityTest, DenoiserRefusesAClientWithoutACertificate) {
  const Certificates& c = Certificates::Get();
  StackOptions options;
  options.denoiser_flags = DenoiserTls(c, "server");
  options.orchestrator_flags = {"--denoiser_ca=" + c.path("ca.pem")};
  auto stack = Stack::Start(options, "nocert");
  ASSERT_TRUE(stack.ok()) << stack.status();
  EXPECT_EQ(Create(*(*stack)->Orchestrator(), SmallGrid()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(SecurityTest, TlsApiWithBearerTokenAndOpenHealth) {
  const Certificates& c = Certificates::Get();
  const std::string token = "s3cret-token-for-test";
  const std::string token_file = c.path("token");
  std::ofstream(token_file) << token << "\n";
  StackOptions options;
  options.denoisers = 1;
  options.orchestrator_flags = {"--tls_cert=" + c.path("server.pem"),
                                "--tls_key=" + c.path("server.key"),
                                "--auth_token_file=" + token_file};
  auto stack = Stack::Start(options, "auth");
  ASSERT_TRUE(stack.ok()) << stack.status();
  auto credentials = ChannelCredentialsFromFiles({c.path("ca.pem"), "", ""});
  ASSERT_TRUE(credentials.ok());
  auto channel = grpc::CreateChannel((*stack)->orchestrator_address(), *credentials);
  auto stub = v1::Orchestrator::NewStub(channel);

  const grpc::Status missing = Create(*stub, SmallGrid());
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const grpc::Status wrong = Create(*stub, SmallGrid(), "guess");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message().find("guess"), std::string::npos);
  const grpc::Status right = Create(*stub, SmallGrid(), token);
  EXPECT_TRUE(right.ok()) << right.error_message();
  {
    // The token twice, one wrong: the check read the first alone, and a
    // proxy in front may read the other.
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    context.AddMetadata("authorization", "Bearer guess");
    v1::ListModelsResponse models;
    const grpc::Status twice = stub->ListModels(&context, {}, &models);
    EXPECT_EQ(twice.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(twice.error_message(), "authorization: given 2 times");
  }
  {
    grpc::ClientContext context;
    v1::ListModelsResponse models;
    EXPECT_EQ(stub->ListModels(&context, {}, &models).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Without the token, a request that does not parse is refused for the
  // token, not diagnosed (the prompt's bytes are not UTF-8); with it, the
  // field is named.
  std::string wire = v1::GridRequest().SerializeAsString();
  wire += std::string("\x12\x01\xff", 3);  // field 2 (prompt): one byte, not UTF-8
  for (const std::string& authorization : {std::string(), "Bearer " + token}) {
    const grpc::Status status =
        testing::RawCall(channel, "/dgrid.v1.Orchestrator/CreateGrid", wire, authorization);
    if (authorization.empty()) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_EQ(status.error_message(), "prompt: is not valid UTF-8");
    }
  }
  // Health stays open, for probes.
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse health;
  ASSERT_TRUE(grpc::health::v1::Health::NewStub(channel)->Check(&context, {}, &health).ok());
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  // A plaintext client gets nowhere; dgrid says what may be missing.
  auto plain = (*stack)->Orchestrator();
  EXPECT_EQ(Create(*plain, SmallGrid(), token).error_code(), grpc::StatusCode::UNAVAILABLE);
  auto cli = testing::ChildProcess::Start({testing::BinPath("dgrid"), "models",
                                  "--target=" + (*stack)->orchestrator_address(), "--timeout_s=10"},
                                 (*stack)->dir() + "/plain-dgrid.log");
  ASSERT_TRUE(cli.ok());
  const absl::StatusOr<int> cli_code = (*cli)->Wait(absl::Seconds(30));
  EXPECT_TRUE(cli_code.ok() && *cli_code != 0);
  EXPECT_NE((*cli)->Log().find("(a TLS server? give --tls_ca)"), std::string::npos)
      << (*cli)->Log();
  // Logs never hold the token or key material.
  const std::string log = (*stack)->orchestrator().Log();
  EXPECT_EQ(log.find(token), std::string::npos);
  EXPECT_EQ(log.find("PRIVATE KEY"), std::string::npos);
}

TEST(SecurityTest, PerClientGridLimit) {
  StackOptions options;
  // Slow enough (about 6 s a grid) that the first still runs when the
  // second, on a fresh channel, is asked for on a busy machine.
  options.denoiser_flags = {"--debug_step_delay_ms=300"};
  options.orchestrator_flags = {"--max_grids_per_client=1"};
  auto stack = Stack::Start(options, "per-client");
  ASSERT_TRUE(stack.ok()) << stack.status();
  grpc::Status first;
  std::thread slow([&] { first = Create(*(*stack)->Orchestrator(), SmallGrid()); });
  // The first grid runs on a replica before the second is asked for.
  for (const absl::Time until = absl::Now() + absl::Seconds(30);
       (*stack)->Metric(0, "dgrid_denoiser_active_trajectories") +
               (*stack)->Metric(1, "dgrid_denoiser_active_trajectories") ==
           0 &&
       absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const grpc::Status second = Create(*(*stack)->Orchestrator(), SmallGrid());
  slow.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(second.error_message().find("from this client"), std::string::npos);
  // Once the first grid is done the client may start another.
  EXPECT_TRUE(Create(*(*stack)->Orchestrator(), SmallGrid()).ok());
}


// Sends `requests` one after another on one HTTPS connection to
// 127.0.0.1:port, trusting `ca`, and returns all that came back until the
// server closed the connection (or 10 s passed); "" when TLS failed.
std::string HttpsExchange(int port, const std::string& ca,
                          const std::vector<std::string>& requests) {
  SSL_CTX* context = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(context, ca.c_str(), nullptr);
  SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nullptr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  SSL* ssl = SSL_new(context);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      SSL_connect(ssl) == 1) {
    for (const std::string& request : requests) {
      SSL_write(ssl, request.data(), static_cast<int>(request.size()));
    }
    char buffer[4096];
    for (int n; (n = SSL_read(ssl, buffer, sizeof(buffer))) > 0;) answer.append(buffer, n);
  }
  SSL_free(ssl);
  ::close(fd);
  SSL_CTX_free(context);
  return answer;
}

TEST(SecurityTest, HttpGatewaySpeaksTlsWithTheApiCertificate) {
  const Certificates& c = Certificates::Get();
  const std::string token_file = c.path("http-token");
  std::ofstream(token_file) << "http-s3cret\n";
  StackOptions options;
  options.denoisers = 1;
  options.orchestrator_flags = {"--tls_cert=" + c.path("server.pem"),
                                "--tls_key=" + c.path("server.key"),
                                "--auth_token_file=" + token_file, "--http_addr=127.0.0.1:0",
                                "--web_dir="};
  auto stack = Stack::Start(options, "https");
  ASSERT_TRUE(stack.ok()) << stack.status();
  const int port = (*stack)->orchestrator_http_port();
  ASSERT_GT(port, 0);
  // Two requests on one connection, the second with a lowercase scheme.
  const std::string answer = HttpsExchange(
      port, c.path("ca.pem"),
      {"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
       "GET /api/v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: bearer http-s3cret\r\n"
       "Connection: close\r\n\r\n"});
  EXPECT_EQ(answer.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << answer.substr(0, 300);
  const size_t second = answer.find("HTTP/1.1 ", 1);
  ASSERT_NE(second, std::string::npos) << answer.substr(0, 300);
  EXPECT_EQ(answer.compare(second, 15, "HTTP/1.1 200 OK"), 0) << answer.substr(second, 300);
  EXPECT_NE(answer.find("\"models\""), std::string::npos) << answer.substr(0, 300);
  // Without the token: 401 over TLS as over gRPC.
  const std::string refused = HttpsExchange(
      port, c.path("ca.pem"),
      {"GET /api/v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"});
  EXPECT_EQ(refused.rfind("HTTP/1.1 401", 0), 0u) << refused.substr(0, 300);
}

}  // namespace
}  // namespace dgrid
