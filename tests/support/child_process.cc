#include "tests/support/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace dgrid::testing {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (log < 0) return absl::InternalError(absl::StrCat("cannot open ", log_path));
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    ::dup2(log, 1);
    ::dup2(log, 2);
    // Die with the test process, even if it is killed.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::execv(args[0], args.data());
    std::_Exit(127);
  }
  ::close(log);
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->pid_ = pid;
  child->log_path_ = log_path;
  return child;
}

ChildProcess::~ChildProcess() {
  if (Running()) {
    Signal(SIGKILL);
    (void)Wait(absl::Seconds(10));
  }
}

bool ChildProcess::Running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

void ChildProcess::Signal(int signal) {
  if (Running()) ::kill(pid_, signal);
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (Running()) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " still running"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return exit_code_;
}

absl::StatusOr<std::map<std::string, int>> ChildProcess::WaitForPorts(
    const std::string& port_file, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    auto ports = WaitForPortFile(port_file, absl::Milliseconds(100));
    if (ports.ok()) return ports;
    if (!Running()) {
      return absl::FailedPreconditionError(
          absl::StrCat("process exited with code ", exit_code_, " before serving:\n", Log()));
    }
  }
  return absl::DeadlineExceededError(absl::StrCat("no port file at ", port_file, "\n", Log()));
}

std::string ChildProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string BinPath(const std::string& name) { return std::string(DGRID_BIN_DIR) + "/" + name; }

namespace {

std::mutex temp_dirs_mu;
// Leaked: read at exit, after static destructors may have run.
std::vector<std::string>* const temp_dirs = new std::vector<std::string>;

// At exit, when every test passed: a failed run keeps its logs to read.
void RemoveTempDirs() {
  if (!::testing::UnitTest::GetInstance()->Passed() || std::getenv("DGRID_KEEP_TMP")) return;
  std::lock_guard<std::mutex> lock(temp_dirs_mu);
  for (const std::string& dir : *temp_dirs) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
}

}  // namespace

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base ? base : "/tmp", "/dgrid-", ::getpid(), "-", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  static std::once_flag registered;
  std::call_once(registered, [] { std::atexit(RemoveTempDirs); });
  std::lock_guard<std::mutex> lock(temp_dirs_mu);
  temp_dirs->push_back(dir);
  return dir;
}

absl::StatusOr<std::map<std::string, int>> WaitForPortFile(const std::string& path,
                                                           absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::ifstream in(path);
    if (in) {
      std::map<std::string, int> ports;
      std::string line;
      while (std::getline(in, line)) {
        std::vector<std::string> kv = absl::StrSplit(line, '=');
        int port = 0;
        if (kv.size() == 2 && absl::SimpleAtoi(kv[1], &port)) ports[kv[0]] = port;
      }
      if (!ports.empty()) return ports;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("no port file at ", path));
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  auto result = client.Get(path.c_str());
  if (!result) return absl::UnavailableError(absl::StrCat("GET ", path, " failed"));
  if (result->status != 200) {
    return absl::UnavailableError(absl::StrCat("GET ", path, ": HTTP ", result->status));
  }
  return result->body;
}

double MetricValue(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) {
      double v = 0;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
    }
  }
  return -1;
}

}  // namespace dgrid::testing
