// Starts the project's real binaries for cross-process tests, on free
// loopback ports, and always stops them: the destructor SIGKILLs a child
// that is still running, so no test leaves a server behind.
//
//   ASSIGN_OR_RETURN(auto denoiser, ChildProcess::Start(
//       {BinPath("dgrid-denoiser"), "--listen=127.0.0.1:0", "--port_file=" + f}, log));
//   ASSIGN_OR_RETURN(auto ports, WaitForPortFile(f, absl::Seconds(30)));
#ifndef DGRID_TESTS_SUPPORT_CHILD_PROCESS_H_
#define DGRID_TESTS_SUPPORT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dgrid::testing {

class ChildProcess {
 public:
  // stdout and stderr go to `log_path`.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                             const std::string& log_path);
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int signal);
  // Waits for exit; returns the exit code (128 + signal when killed), or
  // DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // WaitForPortFile, but fails at once (with the log) if the child exits.
  absl::StatusOr<std::map<std::string, int>> WaitForPorts(const std::string& port_file,
                                                          absl::Duration timeout);
  const std::string& log_path() const { return log_path_; }
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = 0;
  std::string log_path_;
};

// The binaries' folder (build/bin).
std::string BinPath(const std::string& name);
// A fresh folder under the test's temp dir, removed at exit when every test
// passed (kept for its logs otherwise, or with DGRID_KEEP_TMP set).
std::string TempDir(const std::string& name);
// Waits until `path` holds "key=value" lines (written atomically by the
// binaries' --port_file) and returns them.
absl::StatusOr<std::map<std::string, int>> WaitForPortFile(const std::string& path,
                                                           absl::Duration timeout);
// GET http://127.0.0.1:port/path, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);
// The value of an un-labelled or exactly-labelled Prometheus sample, e.g.
// MetricValue(text, "dgrid_denoiser_model_evals_total"); -1 when absent.
double MetricValue(const std::string& exposition, const std::string& series);

}  // namespace dgrid::testing

#endif  // DGRID_TESTS_SUPPORT_CHILD_PROCESS_H_
