// Starts the real dgrid-denoiser binary on a free loopback port and talks to
// it as a client would: gRPC, reflection, health, Prometheus metrics, and a
// clean shutdown on SIGTERM.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"

#include "tests/support/child_process.h"

namespace dgrid {
namespace {

using testing::BinPath;
using testing::ChildProcess;

// Scrapes the metrics at `port` until `series` counts one, or `limit`
// passes; the last page scraped.
std::string ScrapeUntilCounted(int port, const std::string& series, absl::Duration limit) {
  std::string text;
  for (const absl::Time give_up = absl::Now() + limit; absl::Now() < give_up;
       absl::SleepFor(absl::Milliseconds(100))) {
    absl::StatusOr<std::string> scraped = testing::HttpGet(port, "/metrics");
    if (!scraped.ok()) {
      ADD_FAILURE() << scraped.status();
      break;
    }
    text = *scraped;
    if (testing::MetricValue(text, series) >= 1) break;
  }
  return text;
}

TEST(DenoiserProcessTest, ServesBranchMetricsReflectionAndStopsOnSigterm) {
  const std::string dir = testing::TempDir("denoiser-process");
  const std::string fixtures = std::getenv("DGRID_FIXTURES");
  auto child = ChildProcess::Start(
      {BinPath("dgrid-denoiser"), "--model_dir=" + fixtures + "/gaussian",
       "--listen=127.0.0.1:0", "--metrics_addr=127.0.0.1:0", "--threads=1",
       "--port_file=" + dir + "/ports"},
      dir + "/denoiser.log");
  ASSERT_TRUE(child.ok()) << child.status();
  auto ports = (*child)->WaitForPorts(dir + "/ports", absl::Seconds(60));
  ASSERT_TRUE(ports.ok()) << ports.status();
  const int port = (*ports)["grpc"], metrics = (*ports)["metrics"];
  ASSERT_GT(port, 0);
  ASSERT_GT(metrics, 0);

  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto stub = v1::Denoiser::NewStub(channel);
  v1::BranchRequest request;
  request.set_model("gaussian");
  request.mutable_sampler()->set_steps(25);
  request.mutable_sampler()->set_eta(1.0f);
  request.mutable_sampler()->set_guidance(1.0f);
  for (int i = 0; i < 4; ++i) {
    v1::Path* p = request.add_trajectories()->mutable_path();
    p->set_init_seed(i);
    p->add_segments()->set_noise_seed(i + 100);
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = stub->Branch(&context, request);
  v1::BranchEvent event;
  int finals = 0;
  while (reader->Read(&event)) finals += event.has_final();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(finals, 4);

  // Reflection: what grpcurl's "list" uses.
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext reflection_context;
  auto stream = reflection->ServerReflectionInfo(&reflection_context);
  grpc::reflection::v1alpha::ServerReflectionRequest list;
  list.set_list_services("");
  ASSERT_TRUE(stream->Write(list));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse listed;
  ASSERT_TRUE(stream->Read(&listed));
  std::set<std::string> services;
  for (const auto& s : listed.list_services_response().service()) services.insert(s.name());
  EXPECT_TRUE(services.count("dgrid.v1.Denoiser"));
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));
  stream->Finish();

  auto text = testing::HttpGet(metrics, "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(testing::MetricValue(*text, "dgrid_denoiser_model_evals_total"), 100);
  EXPECT_EQ(testing::MetricValue(
                *text, R"(dgrid_denoiser_requests_total{code="OK",method="Branch"})"),
            1);
  // Before any failure, its series is there at 0 (-1: absent), so that
  // rate() counts the first failures.
  EXPECT_EQ(testing::MetricValue(
                *text, R"(dgrid_denoiser_requests_total{code="UNAVAILABLE",method="Branch"})"),
            0);
  EXPECT_GT(testing::MetricValue(*text, "dgrid_denoiser_batch_size_count"), 0);
  EXPECT_NE(text->find("dgrid_denoiser_queue_seconds_bucket"), std::string::npos);
  // A Branch call without batch_work is interactive; the batch series is
  // there at 0.
  EXPECT_GT(testing::MetricValue(*text, R"(dgrid_denoiser_queue_seconds_count{work="interactive"})"),
            0);
  EXPECT_EQ(testing::MetricValue(*text, R"(dgrid_denoiser_queue_seconds_count{work="batch"})"), 0);
  EXPECT_NE(text->find("dgrid_denoiser_forward_seconds_bucket"), std::string::npos);
  EXPECT_NE(text->find("dgrid_denoiser_active_trajectories"), std::string::npos);

  // A second server on a port in use fails to start, naming the address:
  // it once bound beside this one (SO_REUSEPORT) and took part of its calls.
  const struct {
    std::string listen, metrics, says;
  } taken[] = {
      {absl::StrCat("127.0.0.1:", port), "", absl::StrCat("cannot listen on 127.0.0.1:", port)},
      {"127.0.0.1:0", absl::StrCat("127.0.0.1:", metrics),
       absl::StrCat("cannot listen for metrics on 127.0.0.1:", metrics)},
  };
  for (const auto& t : taken) {
    auto second = ChildProcess::Start(
        {BinPath("dgrid-denoiser"), "--model_dir=" + fixtures + "/gaussian",
         "--listen=" + t.listen, "--metrics_addr=" + t.metrics, "--threads=1"},
        dir + "/second.log");
    ASSERT_TRUE(second.ok()) << second.status();
    auto second_code = (*second)->Wait(absl::Seconds(60));
    ASSERT_TRUE(second_code.ok()) << t.says << ": still running";
    EXPECT_EQ(*second_code, 1) << (*second)->Log();
    EXPECT_NE((*second)->Log().find(t.says + " (in use by another process?)"), std::string::npos)
        << (*second)->Log();
  }

  (*child)->Signal(SIGTERM);
  auto code = (*child)->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << (*child)->Log();
}

// A loopback port free a moment ago (the kernel's pick), or 0.
int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

// The gaussian fixture's denoiser, each forward pass 200 ms, with `flags`
// beside; its ports and a stub for it.
struct SlowDenoiser {
  std::unique_ptr<ChildProcess> child;
  std::map<std::string, int> ports;
  std::unique_ptr<v1::Denoiser::Stub> stub;
};

absl::StatusOr<SlowDenoiser> StartSlowDenoiser(const std::string& name,
                                               const std::vector<std::string>& flags) {
  const std::string dir = testing::TempDir(name);
  std::vector<std::string> argv = {
      BinPath("dgrid-denoiser"), std::string("--model_dir=") + std::getenv("DGRID_FIXTURES") +
                                     "/gaussian",
      "--listen=127.0.0.1:0", "--threads=1", "--debug_step_delay_ms=200",
      "--port_file=" + dir + "/ports"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  SlowDenoiser slow;
  ASSIGN_OR_RETURN(slow.child, ChildProcess::Start(argv, dir + "/denoiser.log"));
  ASSIGN_OR_RETURN(slow.ports, slow.child->WaitForPorts(dir + "/ports", absl::Seconds(60)));
  slow.stub = v1::Denoiser::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", slow.ports["grpc"]), grpc::InsecureChannelCredentials()));
  return slow;
}

// A call past its deadline counted as CANCELLED (gRPC marks it cancelled
// then, and the batcher asked that first): overload read as callers
// leaving, which the error-ratio alert leaves out.
TEST(DenoiserProcessTest, ACallPastItsDeadlineCountsAsDeadlineExceeded) {
  absl::StatusOr<SlowDenoiser> slow =
      StartSlowDenoiser("denoiser-deadline", {"--metrics_addr=127.0.0.1:0"});
  ASSERT_TRUE(slow.ok()) << slow.status();
  v1::Denoiser::Stub* stub = slow->stub.get();
  std::map<std::string, int>* ports = &slow->ports;
  v1::BranchRequest request;
  request.set_model("gaussian");
  request.mutable_sampler()->set_steps(25);
  request.mutable_sampler()->set_eta(1.0f);
  request.mutable_sampler()->set_guidance(1.0f);
  request.add_trajectories()->mutable_path()->add_segments()->set_noise_seed(1);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  auto reader = stub->Branch(&context, request);
  v1::BranchEvent event;
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server ends the call a moment after the client gives up on it.
  const std::string exceeded =
      R"(dgrid_denoiser_requests_total{code="DEADLINE_EXCEEDED",method="Branch"})";
  const std::string text = ScrapeUntilCounted((*ports)["metrics"], exceeded, absl::Seconds(10));
  EXPECT_EQ(testing::MetricValue(text, exceeded), 1) << text;
  EXPECT_LE(testing::MetricValue(
                text, R"(dgrid_denoiser_requests_total{code="CANCELLED",method="Branch"})"),
            0);
}

// A Branch stream its client never reads is ended once a write has waited
// past --max_write_stall_s: before, its handler blocked in Write for as long
// as the client kept the connection, holding a server thread (1,000 such
// streams refused every other call) and its events.
TEST(DenoiserProcessTest, AStreamNobodyReadsEndsAfterTheWriteStallBound) {
  const std::string dir = testing::TempDir("denoiser-unread");
  const std::string fixtures = std::getenv("DGRID_FIXTURES");
  auto child = ChildProcess::Start(
      {BinPath("dgrid-denoiser"), "--model_dir=" + fixtures + "/textlatent",
       "--listen=127.0.0.1:0", "--metrics_addr=127.0.0.1:0", "--threads=1",
       "--max_write_stall_s=1", "--port_file=" + dir + "/ports"},
      dir + "/denoiser.log");
  ASSERT_TRUE(child.ok()) << child.status();
  auto ports = (*child)->WaitForPorts(dir + "/ports", absl::Seconds(60));
  ASSERT_TRUE(ports.ok()) << ports.status();
  // BDP probing off: the unread stream's flow-control window stays small.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto stub = v1::Denoiser::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", (*ports)["grpc"]), grpc::InsecureChannelCredentials(), args));
  // 640 events of a few KiB each (latent, x0 and two PNGs): megabytes.
  v1::BranchRequest request;
  request.set_model("textlatent");
  request.mutable_sampler()->set_steps(10);
  request.mutable_sampler()->set_eta(1.0f);
  request.set_decode(true);
  request.set_previews(true);
  for (int k = 0; k < 10; ++k) request.add_capture_steps(k);
  for (int i = 0; i < 64; ++i) {
    v1::Path* p = request.add_trajectories()->mutable_path();
    p->set_init_seed(i);
    p->add_segments()->set_noise_seed(i + 100);
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(90));
  auto reader = stub->Branch(&context, request);

  const std::string cancelled =
      R"(dgrid_denoiser_requests_total{code="CANCELLED",method="Branch"})";
  const std::string text = ScrapeUntilCounted((*ports)["metrics"], cancelled, absl::Seconds(40));
  EXPECT_EQ(testing::MetricValue(text, cancelled), 1) << text;
  // The client, reading at last, gets what was sent and then the end.
  v1::BranchEvent event;
  int events = 0;
  while (reader->Read(&event)) ++events;
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(events, 640);
  // Every other client is served.
  grpc::ClientContext info_context;
  info_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetModelInfoResponse info;
  EXPECT_TRUE(stub->GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info).ok());
}

// A large model loads for minutes on a GPU: a replica whose metrics port
// opened only after its bundles had loaded read as down (up == 0) all that
// time. Its metrics answer at once now, saying it is not ready.
TEST(DenoiserProcessTest, MetricsAnswerWhileTheBundlesLoad) {
  const std::string dir = testing::TempDir("denoiser-loading");
  const int metrics = FreeLoopbackPort();
  ASSERT_GT(metrics, 0);
  const std::string models = std::string(DGRID_SOURCE_DIR) + "/models";
  auto child = ChildProcess::Start(
      {BinPath("dgrid-denoiser"), "--model_dir=" + models + "/emoji," + models + "/fashion-mnist",
       "--listen=127.0.0.1:0", absl::StrCat("--metrics_addr=127.0.0.1:", metrics), "--threads=1",
       "--port_file=" + dir + "/ports"},
      dir + "/denoiser.log");
  ASSERT_TRUE(child.ok()) << child.status();
  // The first scrape that answers, while the two shipped bundles load
  // (0.7 s here).
  absl::StatusOr<std::string> first = absl::UnavailableError("not yet");
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!first.ok() && absl::Now() < give_up) {
    first = testing::HttpGet(metrics, "/metrics");
    if (!first.ok()) absl::SleepFor(absl::Milliseconds(2));
  }
  ASSERT_TRUE(first.ok()) << first.status() << (*child)->Log();
  EXPECT_EQ(testing::MetricValue(*first, "dgrid_denoiser_ready"), 0) << (*child)->Log();
  auto ports = (*child)->WaitForPorts(dir + "/ports", absl::Seconds(60));
  ASSERT_TRUE(ports.ok()) << ports.status() << (*child)->Log();
  EXPECT_EQ((*ports)["metrics"], metrics);
  auto serving = testing::HttpGet(metrics, "/metrics");
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(testing::MetricValue(*serving, "dgrid_denoiser_ready"), 1);
  // Health over plain HTTP beside the metrics, for probes of a denoiser
  // whose gRPC port speaks TLS (kubelet's gRPC probes cannot): it had none.
  auto health = testing::HttpGet(metrics, "/healthz");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "ok\n");
}

// A call under way on SIGTERM may finish within --shutdown_grace_s: the
// denoiser cancelled every call after a fixed 5 s, whatever the pod's
// termination grace left.
TEST(DenoiserProcessTest, ACallUnderWayFinishesWithinTheShutdownGrace) {
  absl::StatusOr<SlowDenoiser> slow =
      StartSlowDenoiser("denoiser-grace", {"--metrics_addr=", "--shutdown_grace_s=30"});
  ASSERT_TRUE(slow.ok()) << slow.status();
  ChildProcess* child = slow->child.get();
  v1::Denoiser::Stub* stub = slow->stub.get();
  // 60 steps at 200 ms each: 12 s, well past the old fixed 5 s, well
  // within the 30 s grace.
  v1::BranchRequest request;
  request.mutable_sampler()->set_steps(60);
  request.mutable_sampler()->set_eta(1.0f);
  request.add_capture_steps(1);  // an event once under way
  v1::Path* path = request.add_trajectories()->mutable_path();
  path->set_init_seed(1);
  path->add_segments()->set_noise_seed(2);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Branch(&context, request);
  v1::BranchEvent event;
  ASSERT_TRUE(reader->Read(&event)) << child->Log();  // under way
  const absl::Time signalled = absl::Now();
  child->Signal(SIGTERM);
  while (reader->Read(&event)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(absl::Now() - signalled, absl::Seconds(5));
  auto code = child->Wait(absl::Seconds(40));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << child->Log();
}

TEST(DenoiserProcessTest, BadFlagsExitWithOneReadableLine) {
  const std::string dir = testing::TempDir("denoiser-bad");
  auto child = ChildProcess::Start({BinPath("dgrid-denoiser"), "--model_dir=/nonexistent",
                                    "--listen=127.0.0.1:0", "--metrics_addr="},
                                   dir + "/log");
  ASSERT_TRUE(child.ok());
  auto code = (*child)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_NE((*child)->Log().find("/nonexistent/manifest.json"), std::string::npos)
      << (*child)->Log();
  // A queue smaller than one request could never hold it.
  const std::string fixtures = std::getenv("DGRID_FIXTURES");
  auto small_queue = ChildProcess::Start(
      {BinPath("dgrid-denoiser"), "--model_dir=" + fixtures + "/gaussian", "--listen=127.0.0.1:0",
       "--metrics_addr=", "--max_queue=10", "--max_trajectories_per_request=20"},
      dir + "/queue.log");
  ASSERT_TRUE(small_queue.ok());
  code = (*small_queue)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_NE((*small_queue)->Log().find(
                "--max_queue (10) must be at least --max_trajectories_per_request (20)"),
            std::string::npos)
      << (*small_queue)->Log();
}

// The orchestrator's limits out of range stop it at start, naming the
// flag: --curve_concurrent_grids=-1 used to hang every curve, and the
// orchestrator then on SIGTERM.
TEST(DenoiserProcessTest, OrchestratorLimitsOutOfRangeExitNamingTheFlag) {
  const std::string dir = testing::TempDir("orchestrator-bad");
  for (const char* flag : {"--curve_concurrent_grids=-1", "--max_curve_trunks=1", "--cache_mb=-5",
                           "--max_rows=0", "--max_message_bytes=0",
                           "--max_message_bytes=-2"}) {
    auto child = ChildProcess::Start({BinPath("dgrid-orchestrator"), "--listen=127.0.0.1:0",
                                      "--denoisers=127.0.0.1:1", "--metrics_addr=", flag},
                                     dir + "/log");
    ASSERT_TRUE(child.ok());
    auto code = (*child)->Wait(absl::Seconds(30));
    ASSERT_TRUE(code.ok()) << flag << " still running";
    EXPECT_EQ(*code, 1) << flag;
    const std::string name(flag, std::string(flag).find('='));
    EXPECT_NE((*child)->Log().find(name + " must be at least"), std::string::npos)
        << (*child)->Log();
  }
}

// Settings that could never serve stop either server at start, naming the
// flag. Each of these started: a port past 65535 wrapped round (99999 bound
// 34463, and a replica's reached another process), a cache of 2^44 MiB
// overflowed to none, and a request limit of 0 refused every grid as the
// client's fault.
TEST(DenoiserProcessTest, SettingsThatCannotServeExitNamingTheFlag) {
  const std::string dir = testing::TempDir("settings-bad");
  const std::string model = "--model_dir=" + std::string(std::getenv("DGRID_FIXTURES")) +
                            "/gaussian";
  const std::string cert = dir + "/not-a-cert.pem";
  std::ofstream(cert) << "not a certificate\n";
  const struct {
    std::vector<std::string> args;
    std::string expected;
  } cases[] = {
      {{"dgrid-orchestrator", "--denoisers=127.0.0.1:1", "--listen=127.0.0.1:0",
        "--metrics_addr=", "--http_addr=127.0.0.1:99999"},
       "--http_addr: expected host:port with a port in [0, 65535], got \"127.0.0.1:99999\""},
      {{"dgrid-orchestrator", "--denoisers=127.0.0.1:1", "--listen=127.0.0.1:65536",
        "--metrics_addr="},
       "--listen: expected host:port"},
      {{"dgrid-orchestrator", "--denoisers=127.0.0.1:1,127.0.0.1:100673",
        "--listen=127.0.0.1:0", "--metrics_addr="},
       "--denoisers: expected host:port with a port in [1, 65535], got \"127.0.0.1:100673\""},
      {{"dgrid-orchestrator", "--denoisers=127.0.0.1", "--listen=127.0.0.1:0", "--metrics_addr="},
       "--denoisers: expected host:port"},
      {{"dgrid-orchestrator", "--denoisers=127.0.0.1:1", "--listen=127.0.0.1:0",
        "--metrics_addr=127.0.0.1:70000"},
       "--metrics_addr: expected host:port"},
      {{"dgrid-orchestrator", "--denoisers=127.0.0.1:1", "--listen=127.0.0.1:0", "--metrics_addr=",
        "--cache_mb=17592186044416"},
       "--cache_mb must be at most 1048576"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:99999", "--metrics_addr="},
       "--listen: expected host:port"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:0", "--metrics_addr=",
        "--max_trajectories_per_request=0"},
       "--max_trajectories_per_request must be >= 1"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:0", "--metrics_addr=", "--threads=-3"},
       "--threads must be >= 0 (0: one per core), got -3"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:0", "--metrics_addr=",
        "--max_write_stall_s=0"},
       "--max_write_stall_s must be >= 1"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:0", "--metrics_addr=",
        "--shutdown_grace_s=-1"},
       "--shutdown_grace_s must be >= 0"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:0", "--metrics_addr=", "--min_chunk_rows=-4"},
       "--min_chunk_rows must be >= 0 (0: whole passes), got -4"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:0", "--metrics_addr=",
        "--debug_step_delay_ms=-100"},
       "--debug_step_delay_ms must be >= 0, got -100"},
      {{"dgrid-denoiser", model, "--listen=127.0.0.1:0", "--metrics_addr=", "--tls_cert=" + cert,
        "--tls_key=" + cert},
       "--tls_cert: " + cert + " holds no PEM certificate"},
  };
  int i = 0;
  for (const auto& c : cases) {
    std::vector<std::string> args = c.args;
    args[0] = BinPath(args[0]);
    auto child = ChildProcess::Start(args, absl::StrCat(dir, "/", i++, ".log"));
    ASSERT_TRUE(child.ok());
    auto code = (*child)->Wait(absl::Seconds(30));
    ASSERT_TRUE(code.ok()) << c.expected << ": still running";
    EXPECT_EQ(*code, 1) << c.expected;
    EXPECT_NE((*child)->Log().find(c.expected), std::string::npos) << (*child)->Log();
  }
  // -1 is gRPC's "no limit", and serves.
  auto unlimited = ChildProcess::Start(
      {BinPath("dgrid-orchestrator"), "--denoisers=127.0.0.1:1", "--listen=127.0.0.1:0",
       "--metrics_addr=", "--max_message_bytes=-1", "--port_file=" + dir + "/unlimited.ports"},
      dir + "/unlimited.log");
  ASSERT_TRUE(unlimited.ok());
  EXPECT_TRUE((*unlimited)->WaitForPorts(dir + "/unlimited.ports", absl::Seconds(30)).ok())
      << (*unlimited)->Log();
}

// Abseil's --help lists only the flags of a file named after the program:
// each binary once answered "No flags matched".
TEST(DenoiserProcessTest, HelpListsEachBinarysFlags) {
  const std::string dir = testing::TempDir("help");
  const struct {
    const char* binary;
    const char* flag;
  } binaries[] = {{"dgrid-denoiser", "--model_dir"},
                  {"dgrid-orchestrator", "--denoisers"},
                  {"dgrid-bench", "--load_seconds"}};
  for (const auto& b : binaries) {
    auto child = ChildProcess::Start({BinPath(b.binary), "--help"}, dir + "/" + b.binary + ".log");
    ASSERT_TRUE(child.ok());
    ASSERT_TRUE((*child)->Wait(absl::Seconds(30)).ok()) << b.binary;
    EXPECT_NE((*child)->Log().find(b.flag), std::string::npos) << (*child)->Log();
    EXPECT_EQ((*child)->Log().find("No flags matched"), std::string::npos) << b.binary;
  }
}

TEST(DenoiserProcessTest, ARepeatedModelDirServesEveryBundleInOrder) {
  // absl alone would keep only the last --model_dir.
  const std::string dir = testing::TempDir("denoiser-two-models");
  const std::string fixtures = std::getenv("DGRID_FIXTURES");
  auto child = ChildProcess::Start(
      {BinPath("dgrid-denoiser"), "--model_dir=" + fixtures + "/tinyconv", "--model_dir",
       fixtures + "/gaussian", "--listen=127.0.0.1:0", "--metrics_addr=", "--threads=1",
       "--port_file=" + dir + "/ports"},
      dir + "/denoiser.log");
  ASSERT_TRUE(child.ok()) << child.status();
  auto ports = (*child)->WaitForPorts(dir + "/ports", absl::Seconds(60));
  ASSERT_TRUE(ports.ok()) << ports.status() << (*child)->Log();
  auto stub = v1::Denoiser::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*ports)["grpc"]), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::GetModelInfoResponse info;
  ASSERT_TRUE(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  ASSERT_EQ(info.models_size(), 2) << info.DebugString();
  EXPECT_EQ(info.models(0).name(), "tinyconv");
  EXPECT_EQ(info.models(1).name(), "gaussian");
  // One folder twice is two bundles of one name: the refusal says which
  // folders (it said only "two bundles are named gaussian").
  auto twice = ChildProcess::Start(
      {BinPath("dgrid-denoiser"), "--model_dir=" + fixtures + "/gaussian",
       "--model_dir=" + fixtures + "/gaussian", "--listen=127.0.0.1:0", "--metrics_addr=",
       "--threads=1"},
      dir + "/twice.log");
  ASSERT_TRUE(twice.ok()) << twice.status();
  auto code = (*twice)->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_NE((*twice)->Log().find(absl::StrCat("two bundles are named \"gaussian\": ", fixtures,
                                              "/gaussian and ", fixtures,
                                              "/gaussian (the same folder given twice)")),
            std::string::npos)
      << (*twice)->Log();
}

}  // namespace
}  // namespace dgrid
