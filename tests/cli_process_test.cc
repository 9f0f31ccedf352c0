// The dgrid CLI against a live stack: grid writes a PNG and a JSON sidecar,
// promote re-runs from the sidecar, models and health answer, and errors are
// one readable line with a non-zero exit code.
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "common/png_image.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/support/stack.h"

namespace dgrid {
namespace {

using testing::BinPath;
using testing::ChildProcess;
using testing::Stack;

struct Ran {
  int code = -1;
  std::string output;
};

Ran RunCli(const std::vector<std::string>& args, const std::string& dir) {
  std::vector<std::string> argv = {BinPath("dgrid")};
  argv.insert(argv.end(), args.begin(), args.end());
  auto child = ChildProcess::Start(argv, dir + "/cli.log");
  if (!child.ok()) return {};
  auto code = (*child)->Wait(absl::Seconds(120));
  return {code.ok() ? *code : -1, (*child)->Log()};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto stack = Stack::Start({}, "cli");
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  std::string Target() const { return "--target=" + stack_->orchestrator_address(); }
  static Stack* stack_;
};

Stack* CliTest::stack_ = nullptr;

TEST_F(CliTest, GridWritesPngAndSidecarAndPromoteReRuns) {
  const std::string dir = stack_->dir();
  const Ran grid = RunCli({"grid", Target(), "--seed=7", "-o", dir + "/grid.png"}, dir);
  ASSERT_EQ(grid.code, 0) << grid.output;
  // Not a terminal: plain progress lines, then a summary.
  EXPECT_NE(grid.output.find("plan: 25 cells"), std::string::npos) << grid.output;
  EXPECT_NE(grid.output.find("wrote " + dir + "/grid.png"), std::string::npos);
  const std::string png = ReadFile(dir + "/grid.png");
  ASSERT_TRUE(DecodePng({reinterpret_cast<const uint8_t*>(png.data()), png.size()}).ok());

  v1::GridRecord record;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/grid.json"), &record).ok());
  ASSERT_EQ(record.grid().rows_size(), 6);
  EXPECT_EQ(record.request().seed(), 7u);
  for (const auto& row : record.grid().rows()) {
    EXPECT_GT(row.divergence(), 0);
    for (const auto& cell : row.cells()) EXPECT_GE(cell.path().segments_size(), 1);
  }

  const Ran promoted =
      RunCli({"promote", dir + "/grid.json", "--row=2", "--col=3", Target()}, dir);
  ASSERT_EQ(promoted.code, 0) << promoted.output;
  v1::GridRecord next;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/grid-r2c3.json"),
                                                          &next)
                  .ok());
  // The promoted cell's path is the new trunk.
  EXPECT_EQ(next.grid().plan().trunk().SerializeAsString(),
            record.grid().rows(1).cells(2).path().SerializeAsString());
}

TEST_F(CliTest, ModelsAndHealth) {
  const Ran models = RunCli({"models", Target()}, stack_->dir());
  EXPECT_EQ(models.code, 0) << models.output;
  EXPECT_NE(models.output.find("prompts:"), std::string::npos);
  const Ran health = RunCli({"health", Target()}, stack_->dir());
  EXPECT_EQ(health.code, 0);
  EXPECT_NE(health.output.find("SERVING"), std::string::npos);
  const Ran model_health = RunCli({"health", "--target=" + stack_->denoiser_address(0),
                                   "--service=no-such-model"},
                                  stack_->dir());
  EXPECT_NE(model_health.code, 0);
}

TEST_F(CliTest, ErrorsAreOneReadableLine) {
  const struct {
    std::vector<std::string> args;
    const char* says;
  } cases[] = {
      {{"grid", "--prompt=zebra"}, "prompt: unknown prompt"},
      {{"grid", "--branch_steps=9,3"}, "branch_steps[1]"},
      {{"grid", "--steps=-1"}, "steps"},
      {{"promote", "/nonexistent.json", "--row=1", "--col=1"}, "cannot read"},
      {{"frobnicate"}, "expected a command"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = c.args;
    if (args[0] == "grid") args.push_back(Target());
    const Ran ran = RunCli(args, stack_->dir());
    EXPECT_NE(ran.code, 0) << c.says;
    std::vector<std::string> lines = absl::StrSplit(ran.output, '\n', absl::SkipEmpty());
    EXPECT_EQ(lines.size(), 1u) << ran.output;
    EXPECT_NE(ran.output.find(c.says), std::string::npos) << ran.output;
  }
  // Nothing listens there.
  const Ran down = RunCli({"models", "--target=127.0.0.1:1"}, stack_->dir());
  EXPECT_NE(down.code, 0);
  EXPECT_NE(down.output.find("UNAVAILABLE"), std::string::npos);
}

}  // namespace
}  // namespace dgrid
