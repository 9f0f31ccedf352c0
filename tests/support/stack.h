// A live Diffusion Grid stack on loopback for cross-process tests: N real
// dgrid-denoiser processes and one dgrid-orchestrator, each on a free port.
// Everything stops when the Stack is destroyed.
//
//   StackOptions options;
//   options.model_dir = ModelDir();
//   ASSIGN_OR_RETURN(auto stack, Stack::Start(options, "my-test"));
//   auto stub = stack->Orchestrator();
//   stack->KillDenoiser(1);
#ifndef DGRID_TESTS_SUPPORT_STACK_H_
#define DGRID_TESTS_SUPPORT_STACK_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "tests/support/child_process.h"

namespace dgrid::testing {

struct StackOptions {
  std::string model_dir;
  int denoisers = 2;
  // Torch intra-op threads per denoiser.
  int denoiser_threads = 1;
  std::vector<std::string> denoiser_flags;
  // Extra flags for one denoiser only, by index. A --model_dir here (or in
  // denoiser_flags) replaces model_dir.
  std::map<int, std::vector<std::string>> per_denoiser_flags;
  std::vector<std::string> orchestrator_flags;
};

// The model the stack tests run: DGRID_TEST_MODEL, else the shipped bundle.
std::string ModelDir();

class Stack {
 public:
  static absl::StatusOr<std::unique_ptr<Stack>> Start(const StackOptions& options,
                                                      const std::string& name);

  std::string orchestrator_address() const;
  int orchestrator_metrics_port() const { return orchestrator_metrics_; }
  // The HTTP gateway's port, from the same port file; 0 without --http_addr.
  int orchestrator_http_port() const { return orchestrator_http_; }
  std::string denoiser_address(int i) const;
  int denoiser_metrics_port(int i) const { return denoisers_[i].metrics; }
  ChildProcess& orchestrator() { return *orchestrator_; }
  ChildProcess& denoiser(int i) { return *denoisers_[i].process; }
  const std::string& dir() const { return dir_; }

  std::unique_ptr<v1::Orchestrator::Stub> Orchestrator() const;
  std::unique_ptr<v1::Denoiser::Stub> Denoiser(int i) const;

  void KillDenoiser(int i);
  // Starts denoiser i again on its old ports.
  absl::Status RestartDenoiser(int i);
  void KillOrchestrator();
  // Starts the orchestrator again on its old port.
  absl::Status RestartOrchestrator();
  // A metric of denoiser i, or of the orchestrator (i = -1); -1 when absent.
  double Metric(int i, const std::string& series) const;

 private:
  struct Replica {
    std::unique_ptr<ChildProcess> process;
    int port = 0;
    int metrics = 0;
  };
  absl::Status StartDenoiser(int i, int port, int metrics);
  absl::Status StartOrchestrator(int port, int metrics);

  StackOptions options_;
  std::string dir_;
  std::vector<Replica> denoisers_;
  std::unique_ptr<ChildProcess> orchestrator_;
  int orchestrator_port_ = 0;
  int orchestrator_metrics_ = 0;
  int orchestrator_http_ = 0;
};

}  // namespace dgrid::testing

#endif  // DGRID_TESTS_SUPPORT_STACK_H_
