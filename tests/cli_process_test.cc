// The dgrid CLI against a live stack: grid writes a PNG and a JSON sidecar,
// promote re-runs from the sidecar, models and health answer, and errors are
// one readable line with a non-zero exit code. On the text fixture
// (tests/fixtures/make_text_fixture.py): free-text and negative prompts reach
// the sidecar, and `dgrid tokenize` prints a bundle's token ids with no server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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
using testing::StackOptions;

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

// stdout and stderr apart: tokenize prints ids on one and warnings on the other.
struct RanSplit {
  int code = -1;
  std::string out, err;
};

RanSplit RunCliSplit(const std::vector<std::string>& args, const std::string& dir) {
  const std::string err = dir + "/cli.err";
  std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$@\" 2>\"$0\"", err, BinPath("dgrid")};
  argv.insert(argv.end(), args.begin(), args.end());
  auto child = ChildProcess::Start(argv, dir + "/cli.out");
  if (!child.ok()) return {};
  auto code = (*child)->Wait(absl::Seconds(120));
  return {code.ok() ? *code : -1, (*child)->Log(), ReadFile(err)};
}

std::string FixtureDir(const std::string& name) {
  const char* dir = std::getenv("DGRID_FIXTURES");
  return absl::StrCat(dir ? dir : "build/fixtures", "/", name);
}

size_t LineCount(const std::string& text) {
  return std::vector<std::string>(absl::StrSplit(text, '\n', absl::SkipEmpty())).size();
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
  // Zeros are written, as the curve's sidecar writes them.
  EXPECT_NE(ReadFile(dir + "/grid.json").find("\"branch_step\": 0"), std::string::npos);
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
  // The promoted cell's path is the new trunk, on the grid's model.
  EXPECT_EQ(next.grid().plan().trunk().SerializeAsString(),
            record.grid().rows(1).cells(2).path().SerializeAsString());
  EXPECT_EQ(next.request().model(), record.grid().plan().model());
  // Writing over the record being promoted would lose its other cells.
  const std::string kept = ReadFile(dir + "/grid.json");
  const Ran over = RunCli(
      {"promote", dir + "/grid.json", "--row=2", "--col=3", "-o", dir + "/grid.png", Target()}, dir);
  EXPECT_NE(over.code, 0);
  EXPECT_NE(over.output.find("is the grid being promoted"), std::string::npos) << over.output;
  EXPECT_EQ(ReadFile(dir + "/grid.json"), kept);
}

// A dot in a folder's name is not the file's extension.
TEST_F(CliTest, TheSidecarLiesBesideAnOutputWithoutExtension) {
  const std::string dir = stack_->dir() + "/runs.v2";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  const Ran grid = RunCli({"grid", Target(), "--seed=9", "--branches=1", "--branch_steps=0",
                          "-o", dir + "/grid"},
                         stack_->dir());
  ASSERT_EQ(grid.code, 0) << grid.output;
  EXPECT_NE(grid.output.find("wrote " + dir + "/grid and " + dir + "/grid.json"),
            std::string::npos)
      << grid.output;
  v1::GridRecord record;
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/grid.json"), &record).ok());
}

// A write that fails part-way (here past the file-size limit, as on a full
// disk) is one error line and leaves the previous plot and sidecar whole,
// with no temporary file beside them; a write that succeeds goes through a
// symbolic link to its file, with the umask's permissions.
TEST_F(CliTest, AFailedWriteKeepsThePreviousPlotAndSidecar) {
  const std::string dir = stack_->dir() + "/atomic";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(::symlink("real.png", (dir + "/grid.png").c_str()), 0);
  const std::vector<std::string> args = {"grid",          Target(), "--seed=11", "--branches=1",
                                         "--branch_steps=0", "-o", dir + "/grid.png"};
  const Ran first = RunCli(args, stack_->dir());
  ASSERT_EQ(first.code, 0) << first.output;
  struct stat link {};
  ASSERT_EQ(::lstat((dir + "/grid.png").c_str(), &link), 0);
  EXPECT_TRUE(S_ISLNK(link.st_mode));
  const mode_t mask = ::umask(0);
  ::umask(mask);
  for (const std::string name : {"real.png", "grid.json"}) {
    struct stat file {};
    ASSERT_EQ(::stat((dir + "/" + name).c_str(), &file), 0) << name;
    EXPECT_EQ(file.st_mode & 0777, 0666 & ~mask) << name;
  }
  const std::string png = ReadFile(dir + "/real.png");
  const std::string json = ReadFile(dir + "/grid.json");
  ASSERT_GT(png.size(), 512u);

  // A 512-byte file-size limit for dgrid alone; another seed, so that the
  // files would change. Its output goes through a pipe (cat, unlimited):
  // the limit would cut a log file it wrote itself.
  std::vector<std::string> limited = {
      "/bin/sh", "-c", "(ulimit -f 1; \"$@\"; echo \"dgrid exit $?\") 2>&1 | cat", "sh",
      BinPath("dgrid")};
  limited.insert(limited.end(), args.begin(), args.end());
  std::replace(limited.begin(), limited.end(), std::string("--seed=11"), std::string("--seed=12"));
  auto child = ChildProcess::Start(limited, stack_->dir() + "/limited.log");
  ASSERT_TRUE(child.ok()) << child.status();
  auto code = (*child)->Wait(absl::Seconds(120));
  ASSERT_TRUE(code.ok());
  EXPECT_NE((*child)->Log().find("dgrid exit 1\n"), std::string::npos) << (*child)->Log();
  EXPECT_NE((*child)->Log().find("cannot write " + dir + "/grid.png: File too large"),
            std::string::npos)
      << (*child)->Log();
  EXPECT_TRUE(ReadFile(dir + "/real.png") == png) << "the previous plot changed";
  EXPECT_TRUE(ReadFile(dir + "/grid.json") == json) << "the previous sidecar changed";
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(absl::StrJoin(names, " "), "grid.json grid.png real.png");

  // A plot whose sidecar's name is 254 bytes, one short of the usual limit.
  const std::string longest = dir + "/" + std::string(249, 'g') + ".png";
  const Ran written = RunCli({"grid", Target(), "--seed=11", "--branches=1", "--branch_steps=0",
                              "-o", longest},
                             stack_->dir());
  ASSERT_EQ(written.code, 0) << written.output;
  EXPECT_TRUE(ReadFile(longest) == png);
  EXPECT_FALSE(ReadFile(dir + "/" + std::string(249, 'g') + ".json").empty());
}

// One branch per row has no pair: the summary gives each row's distance to
// the trunk (from the sidecar), not a pairwise 0.
TEST_F(CliTest, OneBranchPerRowSummarizesTheDistanceToTheTrunk) {
  const std::string dir = stack_->dir();
  const Ran grid = RunCli({"grid", Target(), "--seed=8", "--branches=1", "--branch_steps=0,10",
                           "--steps=20", "-o", dir + "/one.png"},
                          dir);
  ASSERT_EQ(grid.code, 0) << grid.output;
  v1::GridRecord record;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/one.json"), &record).ok());
  ASSERT_EQ(record.grid().rows_size(), 2);
  std::string want = "divergence to the trunk by row:";
  for (const v1::GridRow& row : record.grid().rows()) {
    EXPECT_GT(row.divergence_to_trunk(), 0);
    absl::StrAppend(&want, absl::StrFormat(" step %d: %.3f", row.branch_step(),
                                           row.divergence_to_trunk()));
  }
  EXPECT_NE(grid.output.find(want), std::string::npos) << grid.output;
}

// A reader of the progress (stderr) that goes away does not end the grid:
// SIGPIPE killed dgrid at its first progress line, the grid cancelled and
// nothing written. The reader here is gone before dgrid starts.
TEST_F(CliTest, AProgressReaderGoneLosesNothing) {
  const std::string dir = stack_->dir();
  auto run = ChildProcess::Start(
      {"/bin/sh", "-c",
       "{ sleep 1; \"$@\" 2>&1 >/dev/null; echo $? > \"$0/piped.rc\"; } | true", dir,
       BinPath("dgrid"), "grid", Target(), "--seed=7", "--steps=10", "-o", dir + "/piped.png"},
      dir + "/piped.log");
  ASSERT_TRUE(run.ok());
  ASSERT_TRUE((*run)->Wait(absl::Seconds(120)).ok());
  // A shell may return before the group ends (it waits for `true`).
  for (int i = 0; i < 600 && ReadFile(dir + "/piped.rc").empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(ReadFile(dir + "/piped.rc"), "0\n");
  EXPECT_TRUE(std::filesystem::exists(dir + "/piped.png"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/piped.json"));
}

// Issue 25: the switch flags, hyphens or underscores, reach the grid and its
// sidecar, and promoting a switched cell keeps its segment's prompt.
TEST_F(CliTest, GridTakesASwitchPromptAndBranchNoise) {
  const std::string dir = stack_->dir();
  const Ran grid = RunCli({"grid", Target(), "--seed=7", "--prompt=sneaker", "--switch-prompt",
                           "bag", "--branch-noise=trunk", "--steps=10", "-o",
                           dir + "/switch.png"},
                          dir);
  ASSERT_EQ(grid.code, 0) << grid.output;
  v1::GridRecord record;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/switch.json"), &record).ok());
  EXPECT_EQ(record.grid().plan().switch_prompt(), "bag");
  EXPECT_EQ(record.grid().plan().branch_noise(), v1::BRANCH_NOISE_TRUNK);
  ASSERT_GE(record.grid().rows_size(), 2);
  const v1::GridCell& cell = record.grid().rows(1).cells(0);
  ASSERT_TRUE(cell.path().segments(1).has_conditioning());
  const Ran promoted =
      RunCli({"promote", dir + "/switch.json", "--row=2", "--col=1", Target()}, dir);
  ASSERT_EQ(promoted.code, 0) << promoted.output;
  v1::GridRecord next;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/switch-r2c1.json"),
                                                          &next)
                  .ok());
  EXPECT_EQ(next.grid().plan().trunk().SerializeAsString(), cell.path().SerializeAsString());
  EXPECT_EQ(grid.output.find("reads the switch prompt as the prompt"), std::string::npos)
      << grid.output;
  const Ran bad = RunCli({"grid", Target(), "--branch_noise=sideways"}, dir);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.output.find("--branch_noise"), std::string::npos) << bad.output;
  // A switch the model reads as the prompt (the same class) switches
  // nothing: the plan says so, and so does dgrid.
  const Ran same = RunCli({"grid", Target(), "--seed=7", "--prompt=sneaker", "--switch-prompt",
                           "sneaker", "--steps=10", "-o", dir + "/same.png"},
                          dir);
  ASSERT_EQ(same.code, 0) << same.output;
  EXPECT_NE(same.output.find("reads the switch prompt as the prompt in force"), std::string::npos)
      << same.output;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/same.json"), &record).ok());
  EXPECT_TRUE(record.grid().plan().switch_unseen());
}

// Issue 27: --sampler (and its short spelling euler_a) reaches the request
// and the plan the sidecar records and the summary, and promote re-sends it.
TEST_F(CliTest, GridTakesASamplerAndPromoteKeepsIt) {
  const std::string dir = stack_->dir();
  const Ran grid = RunCli({"grid", Target(), "--seed=7", "--sampler=Euler_A", "--steps=10",
                           "--spacing=trailing", "--branch_steps=0,5", "--branches=2", "-o",
                           dir + "/euler.png"},
                          dir);
  ASSERT_EQ(grid.code, 0) << grid.output;
  v1::GridRecord record;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/euler.json"), &record).ok());
  EXPECT_EQ(record.request().sampler(), v1::SAMPLER_EULER_ANCESTRAL);
  EXPECT_EQ(record.request().spacing(), v1::SPACING_TRAILING);
  EXPECT_EQ(record.grid().plan().sampler().spacing(), v1::SPACING_TRAILING);
  EXPECT_EQ(record.grid().plan().sampler().sampler(), v1::SAMPLER_EULER_ANCESTRAL);
  EXPECT_NE(grid.output.find("(Euler ancestral, trailing spacing, 10 steps)"), std::string::npos)
      << grid.output;
  const Ran promoted =
      RunCli({"promote", dir + "/euler.json", "--row=2", "--col=1", Target()}, dir);
  ASSERT_EQ(promoted.code, 0) << promoted.output;
  v1::GridRecord next;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/euler-r2c1.json"),
                                                          &next)
                  .ok());
  EXPECT_EQ(next.request().sampler(), v1::SAMPLER_EULER_ANCESTRAL);
  EXPECT_EQ(next.grid().plan().sampler().sampler(), v1::SAMPLER_EULER_ANCESTRAL);
}

TEST_F(CliTest, ModelsAndHealth) {
  const Ran models = RunCli({"models", Target()}, stack_->dir());
  EXPECT_EQ(models.code, 0) << models.output;
  EXPECT_NE(models.output.find("prompts:"), std::string::npos);
  // Whether a curve can give P(differs): the judge's heads, or none.
  EXPECT_NE(models.output.find("  judge: "), std::string::npos) << models.output;
  // The orchestrator's list says what a denoiser's does: the latent shape
  // and the sampler defaults were left out.
  const Ran direct = RunCli({"models", "--target=" + stack_->denoiser_address(0)}, stack_->dir());
  EXPECT_EQ(direct.code, 0) << direct.output;
  EXPECT_EQ(models.output, direct.output);
  EXPECT_NE(models.output.find(", latent "), std::string::npos) << models.output;
  // fashion-mnist reads float timesteps at leading spacing: neither is said.
  EXPECT_EQ(models.output.find("whole timesteps"), std::string::npos) << models.output;
  EXPECT_EQ(models.output.find(" spacing"), std::string::npos) << models.output;
  {
    // tinyconv's model takes whole timesteps (Euler ancestral at linspace is
    // refused for it), and its default spacing is trailing.
    StackOptions options;
    options.model_dir = FixtureDir("tinyconv");
    options.denoisers = 1;
    auto fixture = Stack::Start(options, "cli-models");
    ASSERT_TRUE(fixture.ok()) << fixture.status();
    const Ran listed =
        RunCli({"models", "--target=" + (*fixture)->orchestrator_address()}, stack_->dir());
    EXPECT_NE(listed.output.find(", guidance 2, trailing spacing, whole timesteps)"),
              std::string::npos)
        << listed.output;
  }
  const Ran health = RunCli({"health", Target()}, stack_->dir());
  EXPECT_EQ(health.code, 0);
  EXPECT_NE(health.output.find("SERVING"), std::string::npos);
  const Ran model_health = RunCli({"health", "--target=" + stack_->denoiser_address(0),
                                   "--service=no-such-model"},
                                  stack_->dir());
  EXPECT_NE(model_health.code, 0);
  // Each server answers to its gRPC service's name.
  const Ran denoiser_health = RunCli(
      {"health", "--target=" + stack_->denoiser_address(0), "--service=dgrid.v1.Denoiser"},
      stack_->dir());
  EXPECT_EQ(denoiser_health.code, 0) << denoiser_health.output;
  const Ran orchestrator_health =
      RunCli({"health", Target(), "--service=dgrid.v1.Orchestrator"}, stack_->dir());
  EXPECT_EQ(orchestrator_health.code, 0) << orchestrator_health.output;
}

TEST_F(CliTest, ErrorsAreOneReadableLine) {
  const struct {
    std::vector<std::string> args;
    std::string says;
  } cases[] = {
      {{"grid", "--prompt=zebra"}, "prompt: unknown prompt"},
      {{"grid", "--branch_steps=9,3"}, "branch_steps[1]"},
      {{"grid", "--steps=-1"}, "steps"},
      {{"grid", "--sampler=heun"}, "--sampler: ddim or euler_ancestral"},
      {{"grid", "--spacing=karras"}, "--spacing: leading, trailing or linspace, got \"karras\""},
      {{"branch", "--target=127.0.0.1:1", "--spacing=karras"},
       "--spacing: leading, trailing or linspace"},
      // Read before connecting: no server is needed to hear of the flag.
      {{"branch", "--target=127.0.0.1:1", "--sampler=Euler"},
       "--sampler: ddim or euler_ancestral"},
      {{"promote", "/nonexistent.json", "--row=1", "--col=1"}, "cannot read"},
      {{"grid", "-o", "/nonexistent/g.png"}, "-o /nonexistent/g.png: no folder /nonexistent"},
      {{"grid", "-o", "/tmp/g.json"}, "-o /tmp/g.json: the JSON sidecar's name"},
      {{"grid", "-o", "/tmp/g.svg"}, "-o /tmp/g.svg: only a curve's plot can be SVG"},
      {{"branch", "--target=127.0.0.1:1", "-o", "b.SVG"}, "-o b.SVG: only a curve's plot"},
      // PNG bytes under another image type's name.
      {{"curve", "--target=127.0.0.1:1", "-o", "c.jpg"}, "-o c.jpg: dgrid writes PNG or SVG"},
      {{"branch", "--target=127.0.0.1:1", "-o", "b.jpeg"}, "-o b.jpeg: dgrid writes PNG;"},
      // Checked before connecting: a curve's results are not lost at its end.
      {{"curve", "--target=127.0.0.1:1", "-o", "/nonexistent/c.png"}, "no folder /nonexistent"},
      // A branch too: a long trajectory is not lost at its end.
      {{"branch", "--target=127.0.0.1:1", "-o", "/nonexistent/b.png"}, "no folder /nonexistent"},
      {{"branch", "--target=127.0.0.1:1", "-o", "b.json"}, "-o b.json: dgrid writes a PNG here"},
      {{"grid", "--timeout_s=-5"}, "--timeout_s: -5 is negative"},
      // NaN compares as neither negative nor not: it ran the default.
      {{"grid", "--guidance=nan"}, "--guidance: not a number"},
      {{"curve", "--target=127.0.0.1:1", "--eta=-nan"}, "--eta: not a number"},
      {{"branch", "--target=127.0.0.1:1", "--guidance=nan"}, "--guidance: not a number"},
      {{"frobnicate"}, "unknown command \"frobnicate\"; the commands are grid"},
      // A prompt without --prompt once ran an unprompted grid.
      {{"grid", "ghost, twemoji"}, "unexpected argument \"ghost, twemoji\""},
      {{"promote", "/tmp/a.json", "/tmp/b.json", "--row=1", "--col=1"}, "usage: dgrid promote"},
      // A flag the command does not read: promote re-ran the recorded grid
      // as if the switch had been taken.
      {{"promote", "/tmp/a.json", "--row=1", "--col=1", "--switch-prompt=ghost"},
       "--switch_prompt has no effect on dgrid promote"},
      {{"branch", "--target=127.0.0.1:1", "--switch_prompt=bag", "--trunks=3"},
       "--switch_prompt, --trunks have no effect on dgrid branch"},
      // Given as its default, still not read.
      {{"promote", "/tmp/a.json", "--row=1", "--col=1", "--branch-noise", "new"},
       "--branch_noise has no effect on dgrid promote"},
      // protobuf logged an error line of its own before the server's refusal.
      {{"grid", "--prompt=bad\xff"}, "--prompt: not valid UTF-8"},
      {{"curve", "--target=127.0.0.1:1", "--negative=\xc3("}, "--negative: not valid UTF-8"},
      // A folder no one may write: access() says yes to root, so it was
      // found only when the results were written.
      {{"curve", "--target=127.0.0.1:1", "-o", "/sys/c.png"}, "-o /sys/c.png: cannot write in /sys"},
      {{"curve", "--target=127.0.0.1:1", "-o", "c.json"}, "give the plot's (e.g. curve.png)"},
  };
  // A hand-edited sidecar's mistake is named.
  std::ofstream(stack_->dir() + "/edited.json") << R"({"request": {"sampler": "euler_a"}})";
  // A PNG's bytes were echoed into the error, over several lines.
  std::ofstream(stack_->dir() + "/grid-as.png") << "\x89PNG\r\n\x1a\n";
  std::ofstream(stack_->dir() + "/empty.json") << "{}";
  std::ofstream(stack_->dir() + "/no-rows.json") << R"({"request": {}})";
  std::ofstream(stack_->dir() + "/no-request.json")
      << R"({"grid": {"rows": [{"cells": [{"path": {"init_seed": "7"}}]}]}})";
  // Flags from a file are flags too: promote ran the recorded grid and
  // ignored them.
  std::ofstream(stack_->dir() + "/flags") << "--steps=5\n";
  // A pipe given as the output was replaced by a plain file (and /dev/null
  // would have been, run as root).
  const std::string fifo = stack_->dir() + "/pipe.png";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const struct {
    std::vector<std::string> args;
    std::string says;
  } more[] = {
      {{"promote", stack_->dir() + "/edited.json", "--row=1", "--col=1"},
       "is not a grid sidecar written by dgrid grid: "},
      {{"models", "--target=127.0.0.1:1", "--tls_name=dgrid.example"}, "needs --tls_ca"},
      {{"promote", stack_->dir() + "/grid-as.png", "--row=1", "--col=1"},
       "grid-as.png is not a grid sidecar written by dgrid grid: \""},
      // It said "--row must be in [1, 0], got 1".
      {{"promote", stack_->dir() + "/no-rows.json", "--row=1", "--col=1"}, "it has no grid rows"},
      // It ran a default grid, not the recorded one.
      {{"promote", stack_->dir() + "/empty.json", "--row=1", "--col=1"}, "has no \"request\""},
      {{"promote", stack_->dir() + "/no-request.json", "--row=1", "--col=1"},
       "no-request.json has no \"request\": promote re-runs the request"},
      // gRPC logged four lines, then "UNAVAILABLE: empty address list".
      {{"models", "--target=127.0.0.1:1", "--tls_ca=" + stack_->dir() + "/empty.json"},
       "--tls_ca: " + stack_->dir() + "/empty.json holds no PEM certificate"},
      {{"step", "--target=" + stack_->denoiser_address(0), "--step=-1"},
       "--step must be in [0, "},
      // gRPC wrapped the port round: 115586 reached 50050.
      {{"models", "--target=127.0.0.1:115586"},
       "--target: expected host:port with a port in [1, 65535], got \"127.0.0.1:115586\""},
      {{"health", "--target=localhost"}, "--target: expected host:port"},
      // Before the run: the allocation threw std::bad_alloc after it.
      {{"branch", "--target=" + stack_->denoiser_address(0), "--scale=100000"},
       "--scale: 100000 is out of range; "},
      {{"branch", "--target=" + stack_->denoiser_address(0), "--scale=0"},
       "--scale: 0 is out of range; "},
      {{"promote", "/tmp/a.json", "--row=1", "--col=1", "--flagfile=" + stack_->dir() + "/flags"},
       "--steps has no effect on dgrid promote"},
      {{"grid", "-o", fifo}, "pipe.png is not a regular file (a device or a pipe)"},
      // protobuf logged an error line of its own before the server's refusal.
      {{"health", "--target=127.0.0.1:1", "--service=bad\xff"}, "--service: not valid UTF-8"},
      // A flag's name with one dash and hyphens, as with two.
      {{"promote", "/tmp/a.json", "--row=1", "--col=1", "-branch-noise", "new"},
       "--branch_noise has no effect on dgrid promote"},
      // A value given apart keeps its hyphens: the prompt reached the server
      // as "--sne_aker".
      {{"grid", "--prompt", "--sne-aker"}, "unknown prompt \"--sne-aker\""},
      {{"grid", "--branch_steps=0,,5"}, "--branch_steps: an empty item"},
      {{"grid", "--branch_steps=99999999999"}, "--branch_steps: \"99999999999\" is out of range"},
      {{"promote", stack_->dir(), "--row=1", "--col=1"}, "is a folder; give the grid's sidecar"},
  };
  std::vector<std::pair<std::vector<std::string>, std::string>> all;
  for (const auto& c : cases) all.push_back({c.args, c.says});
  for (const auto& c : more) all.push_back({c.args, c.says});
  for (const auto& [case_args, says] : all) {
    const struct {
      const std::vector<std::string>& args;
      const std::string& says;
    } c{case_args, says};
    std::vector<std::string> args = c.args;
    if (args[0] == "grid") args.push_back(Target());
    const Ran ran = RunCli(args, stack_->dir());
    EXPECT_NE(ran.code, 0) << c.says;
    std::vector<std::string> lines = absl::StrSplit(ran.output, '\n', absl::SkipEmpty());
    EXPECT_EQ(lines.size(), 1u) << ran.output;
    EXPECT_NE(ran.output.find(c.says), std::string::npos) << ran.output;
  }
  struct stat fifo_stat{};
  EXPECT_TRUE(::stat(fifo.c_str(), &fifo_stat) == 0 && S_ISFIFO(fifo_stat.st_mode))
      << "the pipe was replaced";
  // The default output's name, not an -o the user never gave.
  std::filesystem::create_directories(stack_->dir() + "/cwd/grid.png");
  auto in_cwd = ChildProcess::Start({"/bin/sh", "-c", "cd \"$0\" && exec \"$@\"",
                                     stack_->dir() + "/cwd", BinPath("dgrid"), "grid", Target()},
                                    stack_->dir() + "/cwd.log");
  ASSERT_TRUE(in_cwd.ok());
  const absl::StatusOr<int> default_code = (*in_cwd)->Wait(absl::Seconds(60));
  EXPECT_TRUE(default_code.ok() && *default_code != 0);
  EXPECT_NE((*in_cwd)->Log().find("the output grid.png (the default; -o names another): "
                                  "grid.png is a folder"),
            std::string::npos)
      << (*in_cwd)->Log();
  // This client's own deadline, said to be it (after the progress lines).
  const Ran slow = RunCli({"grid", Target(), "--steps=999", "--timeout_s=1", "-o",
                           stack_->dir() + "/slow.png"},
                          stack_->dir());
  EXPECT_NE(slow.code, 0);
  EXPECT_NE(slow.output.find("StreamGrid: DEADLINE_EXCEEDED: not done within this client's 1 s "
                             "(--timeout_s); give a longer one"),
            std::string::npos)
      << slow.output;
  // A denoiser has no curves: the error says which server does.
  const Ran wrong = RunCli({"curve", "--target=" + stack_->denoiser_address(0), "--trunks=2",
                            "-o", stack_->dir() + "/wrong.png"},
                           stack_->dir());
  EXPECT_NE(wrong.code, 0);
  EXPECT_NE(wrong.output.find("does not serve it (grid, curve and promote talk to an orchestrator"),
            std::string::npos)
      << wrong.output;
  // Nothing listens there.
  const Ran down = RunCli({"models", "--target=127.0.0.1:1"}, stack_->dir());
  EXPECT_NE(down.code, 0);
  EXPECT_NE(down.output.find("UNAVAILABLE"), std::string::npos);
}

// --step past 0 said "needs a start latent", though the help offered it:
// the denoiser now runs the steps before it first.
TEST_F(CliTest, StepRunsAnyStepOfTheTrajectory) {
  const std::string denoiser = "--target=" + stack_->denoiser_address(0);
  const Ran first = RunCli({"step", denoiser, "--seed=7", "--steps=20"}, stack_->dir());
  EXPECT_EQ(first.code, 0) << first.output;
  EXPECT_NE(first.output.find("step 0 (DDIM) ran timestep"), std::string::npos) << first.output;
  // Which model ran: the denoiser's first, as none was named.
  v1::GetModelInfoResponse served;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stack_->Denoiser(0)->GetModelInfo(&context, {}, &served).ok());
  }
  ASSERT_GT(served.models_size(), 0);
  EXPECT_NE(first.output.find(" of " + served.models(0).name() + "\n"), std::string::npos)
      << first.output;
  const Ran later = RunCli({"step", denoiser, "--seed=7", "--steps=20", "--step=10"}, stack_->dir());
  EXPECT_EQ(later.code, 0) << later.output;
  EXPECT_NE(later.output.find("step 10 (DDIM) ran timestep"), std::string::npos) << later.output;
  // Its x_next is the trajectory's latent after step 10, as a Branch to
  // step 11 gives it (the same seeds: the model's defaults, noise seed 1).
  auto stub = stack_->Denoiser(0);
  v1::GetModelInfoResponse info;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
  }
  v1::BranchRequest branch;
  branch.set_model(info.models(0).name());
  *branch.mutable_sampler() = info.models(0).defaults();
  branch.mutable_sampler()->set_steps(20);
  branch.mutable_conditioning()->set_negative_prompt("");
  branch.set_end_step(11);
  v1::Path* path = branch.add_trajectories()->mutable_path();
  path->set_init_seed(7);
  path->add_segments()->set_noise_seed(1);
  grpc::ClientContext context;
  auto reader = stub->Branch(&context, branch);
  v1::BranchEvent event;
  std::string latent;
  while (reader->Read(&event)) {
    if (event.has_final()) latent = event.final().latent().raw_contents();
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_FALSE(latent.empty());
  std::vector<float> values(latent.size() / sizeof(float));
  std::memcpy(values.data(), latent.data(), latent.size());
  double sum = 0, squares = 0;
  for (const float v : values) {
    sum += v;
    squares += double(v) * v;
  }
  const double mean = sum / values.size();
  const double deviation = std::sqrt(squares / values.size() - mean * mean);
  double printed_mean = 0, printed_deviation = 0;
  const size_t at = later.output.find("x_next: mean ");
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(std::sscanf(later.output.c_str() + at, "x_next: mean %lf std %lf", &printed_mean,
                        &printed_deviation),
            2)
      << later.output;
  EXPECT_NEAR(printed_mean, mean, 1e-4);
  EXPECT_NEAR(printed_deviation, deviation, 1e-4);
  // Not step 0's.
  EXPECT_NE(first.output.substr(first.output.find("x_next")),
            later.output.substr(later.output.find("x_next")));
  const Ran past = RunCli({"step", denoiser, "--steps=20", "--step=20"}, stack_->dir());
  EXPECT_EQ(past.code, 1);
  EXPECT_NE(past.output.find("--step must be in [0, 19] (20 steps), got 20"), std::string::npos)
      << past.output;
}

// An imported bundle's default eta is DDIM's 0: `--sampler euler_ancestral`
// took it and ran plain Euler. It takes Euler ancestral's 1 unless --eta
// says otherwise.
TEST(CliSamplerTest, EulerAncestralAskedOfADdimModelAddsItsNoise) {
  const std::string bundle = testing::TempDir("cli-eta-bundle") + "/tinyconv";
  std::filesystem::create_directories(bundle);
  std::filesystem::copy(FixtureDir("tinyconv"), bundle,
                        std::filesystem::copy_options::recursive |
                            std::filesystem::copy_options::overwrite_existing);
  std::string manifest;
  {
    std::ifstream in(bundle + "/manifest.json");
    manifest.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string one = "\"eta\": 1.0";
  const size_t at = manifest.find(one);
  ASSERT_NE(at, std::string::npos) << manifest;
  manifest.replace(at, one.size(), "\"eta\": 0.0");
  std::ofstream(bundle + "/manifest.json", std::ios::trunc) << manifest;
  StackOptions options;
  options.model_dir = bundle;
  options.denoisers = 1;
  auto stack = Stack::Start(options, "cli-eta-zero");
  ASSERT_TRUE(stack.ok()) << stack.status();
  auto x_next = [&](std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"step", "--target=" + (*stack)->denoiser_address(0), "--seed=7",
                                 "--step=4", "--sampler=euler_ancestral"});
    const Ran ran = RunCli(flags, (*stack)->dir());
    EXPECT_EQ(ran.code, 0) << ran.output;
    const size_t line = ran.output.find("x_next: ");
    return line == std::string::npos ? ran.output : ran.output.substr(line);
  };
  const std::string asked = x_next({});
  EXPECT_EQ(asked, x_next({"--eta=1"}));
  EXPECT_NE(asked, x_next({"--eta=0"}));
}

// absl's --help listed every flag of every command, with this file's path,
// and exited 1; -h was an unknown flag.
TEST_F(CliTest, HelpListsACommandsFlagsAndExitsZero) {
  const Ran all = RunCli({"--help"}, stack_->dir());
  EXPECT_EQ(all.code, 0);
  EXPECT_NE(all.output.find("usage: dgrid COMMAND"), std::string::npos) << all.output;
  const Ran curve = RunCli({"curve", "-h"}, stack_->dir());
  EXPECT_EQ(curve.code, 0);
  EXPECT_NE(curve.output.find("--trunks  dgrid curve: trunks"), std::string::npos) << curve.output;
  EXPECT_NE(curve.output.find("(default: 20)"), std::string::npos) << curve.output;
  EXPECT_EQ(curve.output.find("--row"), std::string::npos) << curve.output;  // promote's
  EXPECT_EQ(curve.output.find("dgrid.cc"), std::string::npos) << curve.output;
  // A connection flag on promote is not told to edit the sidecar.
  const Ran promote =
      RunCli({"promote", "/tmp/a.json", "--row=1", "--col=1", "--silence_s=3"}, stack_->dir());
  EXPECT_EQ(promote.code, 1);
  EXPECT_NE(promote.output.find("--silence_s has no effect on dgrid promote\n"), std::string::npos)
      << promote.output;
}

// Token ids lost to a full disk exited 0.
TEST_F(CliTest, AFailedWriteToStandardOutputIsAnError) {
  const std::string dir = stack_->dir();
  auto child = ChildProcess::Start(
      {"/bin/sh", "-c", "exec \"$@\" >/dev/full", "sh", BinPath("dgrid"), "models", Target()},
      dir + "/full.log");
  ASSERT_TRUE(child.ok()) << child.status();
  auto code = (*child)->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_NE((*child)->Log().find("dgrid models: cannot write to standard output"),
            std::string::npos)
      << (*child)->Log();
}

// --silence_s counted only once the call had started, which waits for the
// connection: a listener that never speaks gRPC held dgrid curve 20 s.
TEST_F(CliTest, ACurveGivesUpOnAListenerThatNeverSpeaks) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener, 8), 0);  // the kernel completes connections; no one answers
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size), 0);
  const std::string target = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));
  const absl::Time start = absl::Now();
  const Ran ran = RunCli({"curve", "--target=" + target, "--trunks=2", "--silence_s=2", "-o",
                          stack_->dir() + "/never.png"},
                         stack_->dir());
  const absl::Duration took = absl::Now() - start;
  ::close(listener);
  EXPECT_EQ(ran.code, 1) << ran.output;
  EXPECT_LT(took, absl::Seconds(15)) << ran.output;
  EXPECT_NE(ran.output.find("no word from " + target + " for 2 s"), std::string::npos)
      << ran.output;
}

// A curve has no deadline; when the orchestrator falls silent mid-curve (here
// stopped with SIGSTOP, its connection open), dgrid curve gives up after
// --silence_s with one line saying so instead of waiting for ever.
TEST_F(CliTest, ACurveGivesUpOnASilentOrchestrator) {
  const std::string log = stack_->dir() + "/silent.log";
  auto child = ChildProcess::Start({BinPath("dgrid"), "curve", Target(), "--trunks=200",
                                    "--silence_s=3", "-o", stack_->dir() + "/silent.png"},
                                   log);
  ASSERT_TRUE(child.ok()) << child.status();
  // Stopped once the curve runs: its plan is out.
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while ((*child)->Log().find("plan: 200 trunks") == std::string::npos && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_NE((*child)->Log().find("plan: 200 trunks"), std::string::npos) << (*child)->Log();
  stack_->orchestrator().Signal(SIGSTOP);
  const absl::Time stopped = absl::Now();
  auto code = (*child)->Wait(absl::Seconds(60));
  const absl::Duration waited = absl::Now() - stopped;
  stack_->orchestrator().Signal(SIGCONT);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1) << (*child)->Log();
  // Silence counts from the last event, which came before the stop (the
  // plan's line was read a poll later, on a machine that may be busy).
  EXPECT_GE(waited, absl::Seconds(1));
  EXPECT_NE((*child)->Log().find("DecisionCurve: no word from " + stack_->orchestrator_address() +
                                 " for 3 s (--silence_s"),
            std::string::npos)
      << (*child)->Log();
  // Under the 15 s keepalive a healthy curve may be given up: it warns.
  EXPECT_NE((*child)->Log().find("warning: --silence_s 3 is under 20"), std::string::npos)
      << (*child)->Log();
  // The orchestrator serves again once it runs (the cancelled curve is gone).
  const Ran models = RunCli({"models", Target()}, stack_->dir());
  EXPECT_EQ(models.code, 0) << models.output;
}

// ---- text models ----

// `dgrid tokenize` reads the bundle itself: no server runs here.
TEST(CliTokenizeTest, PrintsEachPromptsIdsOnALine) {
  const std::string dir = testing::TempDir("cli-tokenize");
  const RanSplit ran = RunCliSplit({"tokenize", "--model_dir=" + FixtureDir("textlatent"),
                                    "a photo of a cat",
                                    "the quick brown fox jumped over the lazy dog"},
                                   dir);
  ASSERT_EQ(ran.code, 0) << ran.err;
  // CLIP's published ids: BOS ... EOS, no padding.
  EXPECT_EQ(ran.out,
            "49406 320 1125 539 320 2368 49407\n"
            "49406 518 3712 2866 3240 16901 962 518 10753 1929 49407\n");
  EXPECT_EQ(ran.err, "");
}

TEST(CliTokenizeTest, ALongPromptKeepsTheContextAndSaysHowManyTokensWereDropped) {
  const std::string dir = testing::TempDir("cli-tokenize-long");
  std::vector<std::string> words;
  for (int i = 0; i < 200; ++i) words.push_back(i % 2 ? "cat" : "photo");
  const RanSplit ran = RunCliSplit(
      {"tokenize", "--model_dir=" + FixtureDir("textlatent"), absl::StrJoin(words, " ")}, dir);
  ASSERT_EQ(ran.code, 0) << ran.err;
  EXPECT_EQ(LineCount(ran.out), 1u);
  std::vector<std::string> ids = absl::StrSplit(absl::StripAsciiWhitespace(ran.out), ' ');
  ASSERT_EQ(ids.size(), 77u) << ran.out;
  EXPECT_EQ(ids.front(), "49406");
  EXPECT_EQ(ids.back(), "49407");
  // 200 one-token words, 75 kept between BOS and EOS.
  EXPECT_NE(ran.err.find("125 tokens dropped"), std::string::npos) << ran.err;
  EXPECT_EQ(LineCount(ran.err), 1u) << ran.err;
}

TEST(CliTokenizeTest, AClassBundleOrNoBundleIsAOneLineError) {
  const std::string dir = testing::TempDir("cli-tokenize-errors");
  const struct {
    std::vector<std::string> args;
    const char* says;
  } cases[] = {
      {{"tokenize", "--model_dir=" + testing::ModelDir(), "sneaker"},
       "has no tokenizer: a class model"},
      {{"tokenize", "--model_dir=/nonexistent-bundle", "a cat"}, "/nonexistent-bundle"},
      {{"tokenize", "--model_dir=" + FixtureDir("textlatent")}, "usage: dgrid tokenize"},
  };
  for (const auto& c : cases) {
    const RanSplit ran = RunCliSplit(c.args, dir);
    EXPECT_NE(ran.code, 0) << c.says;
    EXPECT_EQ(ran.out, "") << c.says;
    EXPECT_EQ(LineCount(ran.err), 1u) << ran.err;
    EXPECT_NE(ran.err.find(c.says), std::string::npos) << ran.err;
  }
}

// grid, promote and models on a stack that serves the text fixture.
class CliTextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    StackOptions options;
    options.model_dir = FixtureDir("textlatent");
    options.denoisers = 1;
    auto stack = Stack::Start(options, "cli-text");
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  std::string Target() const { return "--target=" + stack_->orchestrator_address(); }
  static std::vector<std::string> SmallGrid(const std::string& out) {
    return {"--steps=10", "--branch_steps=0,5", "--branches=2", "-o", out};
  }
  static Stack* stack_;
};

Stack* CliTextTest::stack_ = nullptr;

TEST_F(CliTextTest, ModelsSayTextWithExamplesAndTheTokenLimit) {
  const Ran models = RunCli({"models", Target()}, stack_->dir());
  ASSERT_EQ(models.code, 0) << models.output;
  EXPECT_NE(models.output.find("conditioning: text"), std::string::npos) << models.output;
  EXPECT_NE(models.output.find("max prompt tokens: 77"), std::string::npos) << models.output;
  EXPECT_NE(models.output.find("example prompts:\n    "), std::string::npos) << models.output;
}

TEST_F(CliTextTest, TheSidecarRecordsTheTextAndPromoteKeepsIt) {
  const std::string dir = stack_->dir();
  std::vector<std::string> args = {"grid", Target(), "--seed=5", "--prompt=a photo of a cat",
                                   "--negative=blurry, low quality"};
  for (const std::string& a : SmallGrid(dir + "/text.png")) args.push_back(a);
  const Ran grid = RunCli(args, dir);
  ASSERT_EQ(grid.code, 0) << grid.output;
  EXPECT_EQ(grid.output.find("tokens dropped"), std::string::npos) << grid.output;
  v1::GridRecord record;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/text.json"), &record).ok());
  EXPECT_EQ(record.request().prompt(), "a photo of a cat");
  EXPECT_EQ(record.request().negative_prompt(), "blurry, low quality");
  EXPECT_EQ(record.grid().plan().negative_prompt(), "blurry, low quality");

  const Ran promoted = RunCli({"promote", dir + "/text.json", "--row=2", "--col=1", Target()}, dir);
  ASSERT_EQ(promoted.code, 0) << promoted.output;
  v1::GridRecord next;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(dir + "/text-r2c1.json"), &next).ok());
  EXPECT_EQ(next.request().negative_prompt(), "blurry, low quality");
  EXPECT_EQ(next.grid().plan().negative_prompt(), "blurry, low quality");
  EXPECT_EQ(next.grid().plan().trunk().SerializeAsString(),
            record.grid().rows(1).cells(0).path().SerializeAsString());
}

TEST_F(CliTextTest, ALongPromptWarnsThatTokensWereDropped) {
  const std::string dir = stack_->dir();
  std::vector<std::string> words(200, "cat");
  std::vector<std::string> args = {"grid", Target(), "--seed=6",
                                   "--prompt=" + absl::StrJoin(words, " ")};
  for (const std::string& a : SmallGrid(dir + "/long.png")) args.push_back(a);
  const Ran grid = RunCli(args, dir);
  ASSERT_EQ(grid.code, 0) << grid.output;
  EXPECT_NE(grid.output.find("warning: the prompt is too long for textlatent: 125 tokens dropped"),
            std::string::npos)
      << grid.output;
}

}  // namespace
}  // namespace dgrid
