// Clients that misbehave against the real pair: streams that are never read,
// and large grids beside a small one. Each case once starved every other
// client (issue: two unread streams held all 64 + 64 in-flight slots, and two
// maximal grids pushed a 10-step grid into a 30 s timeout).
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/support/child_process.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::Stack;
using testing::StackOptions;

// A channel of its own (another client), with HTTP/2 BDP probing off so
// that an unread stream's flow-control window stays small, as in the attack.
std::unique_ptr<v1::Orchestrator::Stub> OwnChannel(const Stack& stack, int id) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt("grpc.test_only_channel_id", id);  // never share a subchannel
  return v1::Orchestrator::NewStub(grpc::CreateCustomChannel(
      stack.orchestrator_address(), grpc::InsecureChannelCredentials(), args));
}

v1::GridRequest Large(uint64_t seed) {
  v1::GridRequest r;
  r.set_seed(seed);
  r.mutable_steps()->set_value(50);
  r.mutable_branches()->set_value(8);
  for (int k : {0, 5, 10, 15, 20, 25, 30, 35}) r.add_branch_steps(k);
  return r;
}

v1::GridRequest Small() {
  v1::GridRequest r;
  r.set_seed(99);
  r.mutable_steps()->set_value(10);
  r.mutable_branches()->set_value(2);
  r.add_branch_steps(0);
  r.add_branch_steps(5);
  return r;
}

// Runs the small grid from a fresh channel and returns how long it took.
absl::Duration TimeSmallGrid(const Stack& stack, grpc::Status* status) {
  auto stub = OwnChannel(stack, 1000);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::Grid grid;
  const absl::Time start = absl::Now();
  *status = stub->CreateGrid(&context, Small(), &grid);
  return absl::Now() - start;
}

StackOptions Options() {
  StackOptions options;
  options.denoisers = 1;
  options.denoiser_threads = 2;
  // Small enough that two large grids' jobs exceed it, as 64 did for the
  // attack's grids.
  options.orchestrator_flags = {"--replica_max_inflight=16", "--cache_mb=0",
                                "--max_write_stall_s=3"};
  return options;
}

TEST(HostileClientTest, TwoUnreadStreamsDoNotStarveAFreshSmallGrid) {
  auto stack = Stack::Start(Options(), "unread-streams");
  ASSERT_TRUE(stack.ok()) << stack.status();
  // Two clients open a stream each and never read it.
  std::vector<std::unique_ptr<v1::Orchestrator::Stub>> stubs;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GridEvent>>> readers;
  for (int i = 0; i < 2; ++i) {
    stubs.push_back(OwnChannel(**stack, i));
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    readers.push_back(stubs.back()->StreamGrid(contexts.back().get(), Large(10 + i)));
  }
  // Let them fill their windows and (before the fix) every replica slot.
  absl::SleepFor(absl::Seconds(2));
  grpc::Status status;
  const absl::Duration took = TimeSmallGrid(**stack, &status);
  std::cout << "small grid beside two unread streams: " << absl::FormatDuration(took) << "\n";
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(took, absl::Seconds(5));
  // The unread grids end by themselves (write stall) and free everything:
  // the orchestrator counts them abandoned.
  const absl::Time until = absl::Now() + absl::Seconds(60);
  while (absl::Now() < until &&
         (*stack)->Metric(-1, "dgrid_orchestrator_grids_total{status=\"abandoned\"}") < 2) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ((*stack)->Metric(-1, "dgrid_orchestrator_grids_total{status=\"abandoned\"}"), 2);
  for (auto& c : contexts) c->TryCancel();
  for (auto& r : readers) r->Finish();
}

TEST(HostileClientTest, TwoLargeGridsDoNotStarveASmallOneFromAnotherClient) {
  auto stack = Stack::Start(Options(), "large-beside-small");
  ASSERT_TRUE(stack.ok()) << stack.status();
  auto big = OwnChannel(**stack, 7);
  std::vector<std::thread> large;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  }
  for (int i = 0; i < 2; ++i) {
    large.emplace_back([&, i] {
      v1::Grid grid;
      big->CreateGrid(contexts[i].get(), Large(20 + i), &grid);
    });
  }
  absl::SleepFor(absl::Seconds(2));
  grpc::Status status;
  const absl::Duration took = TimeSmallGrid(**stack, &status);
  std::cout << "small grid beside two large grids: " << absl::FormatDuration(took) << "\n";
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(took, absl::Seconds(5));
  for (auto& c : contexts) c->TryCancel();
  for (auto& t : large) t.join();
}

// A bundle can come from anywhere. Each of these once loaded (or hung
// start-up): now the denoiser exits at once, naming what is wrong, and quotes
// none of a file outside the bundle.
TEST(HostileBundleTest, TheDenoiserRefusesHostileBundlesAtStartUp) {
  namespace fs = std::filesystem;
  auto replace = [](const fs::path& file, const std::string& from, const std::string& to) {
    std::stringstream text;
    text << std::ifstream(file).rdbuf();
    std::string s = text.str();
    ASSERT_NE(s.find(from), std::string::npos) << from;
    s.replace(s.find(from), from.size(), to);
    std::ofstream(file, std::ios::trunc) << s;
  };
  const struct {
    const char* name;
    std::function<void(const fs::path&)> spoil;
    const char* named;
  } cases[] = {
      {"fifo", [](const fs::path& dir) {
         fs::remove(dir / "manifest.json");
         mkfifo((dir / "manifest.json").c_str(), 0600);
       }, "a FIFO"},
      {"passwd", [](const fs::path& dir) {
         fs::remove(dir / "vocab.txt");
         fs::create_symlink("/etc/passwd", dir / "vocab.txt");
       }, "conditioning.tokenizer.vocab"},
      {"guidance", [&](const fs::path& dir) {
         replace(dir / "manifest.json", "\"guidance\": 4.0", "\"guidance\": \"NaN\"");
       }, "defaults.guidance"},
      {"scale", [&](const fs::path& dir) {
         replace(dir / "manifest.json", "\"latent_scale\": 0.489254", "\"latent_scale\": 1e-300");
       }, "decoder.latent_scale"},
  };
  for (const auto& c : cases) {
    const fs::path dir = fs::path(testing::TempDir(std::string("hostile-bundle-") + c.name)) / "emoji";
    fs::copy(std::string(DGRID_SOURCE_DIR) + "/models/emoji", dir, fs::copy_options::recursive);
    c.spoil(dir);
    const std::string log = dir.parent_path().string() + "/denoiser.log";
    auto denoiser = testing::ChildProcess::Start(
        {testing::BinPath("dgrid-denoiser"), "--model_dir=" + dir.string(),
         "--listen=127.0.0.1:0", "--metrics_addr=",
         "--port_file=" + dir.parent_path().string() + "/ports"},
        log);
    ASSERT_TRUE(denoiser.ok()) << denoiser.status();
    // Generous: a refusal takes milliseconds, a hang or a served bundle never ends.
    absl::StatusOr<int> exit_code = (*denoiser)->Wait(absl::Seconds(60));
    ASSERT_TRUE(exit_code.ok()) << c.name << ": still running: " << (*denoiser)->Log();
    EXPECT_NE(*exit_code, 0) << c.name;
    const std::string text = (*denoiser)->Log();
    EXPECT_NE(text.find(c.named), std::string::npos) << c.name << ": " << text;
    EXPECT_EQ(text.find("root:"), std::string::npos) << c.name << ": " << text;
  }
}

}  // namespace
}  // namespace dgrid
