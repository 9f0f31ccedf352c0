#include "tests/support/stack.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dgrid::testing {

std::string ModelDir() {
  const char* model = std::getenv("DGRID_TEST_MODEL");
  return model ? model : std::string(DGRID_SOURCE_DIR) + "/models/fashion-mnist";
}

absl::StatusOr<std::unique_ptr<Stack>> Stack::Start(const StackOptions& options,
                                                    const std::string& name) {
  auto stack = std::unique_ptr<Stack>(new Stack());
  stack->options_ = options;
  if (stack->options_.model_dir.empty()) stack->options_.model_dir = ModelDir();
  stack->dir_ = TempDir(name);
  stack->denoisers_.resize(options.denoisers);
  for (int i = 0; i < options.denoisers; ++i) {
    absl::Status s = stack->StartDenoiser(i, 0, 0);
    if (!s.ok()) return s;
  }
  absl::Status s = stack->StartOrchestrator(0, 0);
  if (!s.ok()) return s;
  return stack;
}

absl::Status Stack::StartDenoiser(int i, int port, int metrics) {
  const std::string ports = absl::StrCat(dir_, "/denoiser", i, ".ports");
  std::remove(ports.c_str());
  std::vector<std::string> extra = options_.denoiser_flags;
  if (auto it = options_.per_denoiser_flags.find(i); it != options_.per_denoiser_flags.end()) {
    extra.insert(extra.end(), it->second.begin(), it->second.end());
  }
  // A --model_dir among the extra flags replaces the stack's (the denoiser
  // serves every --model_dir it is given).
  const bool own_model = std::any_of(extra.begin(), extra.end(), [](const std::string& f) {
    return absl::StartsWith(f, "--model_dir");
  });
  std::vector<std::string> argv = {BinPath("dgrid-denoiser"),
                                   absl::StrCat("--listen=127.0.0.1:", port),
                                   absl::StrCat("--metrics_addr=127.0.0.1:", metrics),
                                   absl::StrCat("--threads=", options_.denoiser_threads),
                                   "--port_file=" + ports};
  if (!own_model) argv.push_back("--model_dir=" + options_.model_dir);
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto process = ChildProcess::Start(argv, absl::StrCat(dir_, "/denoiser", i, ".log"));
  if (!process.ok()) return process.status();
  auto bound = (*process)->WaitForPorts(ports, absl::Seconds(60));
  if (!bound.ok()) return bound.status();
  denoisers_[i] = {std::move(*process), (*bound)["grpc"], (*bound)["metrics"]};
  return absl::OkStatus();
}

absl::Status Stack::StartOrchestrator(int port, int metrics) {
  const std::string ports = dir_ + "/orchestrator.ports";
  std::remove(ports.c_str());
  std::vector<std::string> addresses;
  for (const Replica& r : denoisers_) addresses.push_back(absl::StrCat("127.0.0.1:", r.port));
  std::vector<std::string> argv = {BinPath("dgrid-orchestrator"),
                                   "--denoisers=" + absl::StrJoin(addresses, ","),
                                   absl::StrCat("--listen=127.0.0.1:", port),
                                   absl::StrCat("--metrics_addr=127.0.0.1:", metrics),
                                   "--port_file=" + ports};
  argv.insert(argv.end(), options_.orchestrator_flags.begin(),
              options_.orchestrator_flags.end());
  auto process = ChildProcess::Start(argv, dir_ + "/orchestrator.log");
  if (!process.ok()) return process.status();
  auto bound = (*process)->WaitForPorts(ports, absl::Seconds(30));
  if (!bound.ok()) return bound.status();
  orchestrator_ = std::move(*process);
  orchestrator_port_ = (*bound)["grpc"];
  orchestrator_metrics_ = (*bound)["metrics"];
  orchestrator_http_ = bound->count("http") ? (*bound)["http"] : 0;
  return absl::OkStatus();
}

std::string Stack::orchestrator_address() const {
  return absl::StrCat("127.0.0.1:", orchestrator_port_);
}

std::string Stack::denoiser_address(int i) const {
  return absl::StrCat("127.0.0.1:", denoisers_[i].port);
}

std::unique_ptr<v1::Orchestrator::Stub> Stack::Orchestrator() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::Orchestrator::NewStub(grpc::CreateCustomChannel(
      orchestrator_address(), grpc::InsecureChannelCredentials(), args));
}

std::unique_ptr<v1::Denoiser::Stub> Stack::Denoiser(int i) const {
  return v1::Denoiser::NewStub(
      grpc::CreateChannel(denoiser_address(i), grpc::InsecureChannelCredentials()));
}

void Stack::KillDenoiser(int i) {
  denoisers_[i].process->Signal(SIGKILL);
  (void)denoisers_[i].process->Wait(absl::Seconds(10));
}

absl::Status Stack::RestartDenoiser(int i) {
  return StartDenoiser(i, denoisers_[i].port, denoisers_[i].metrics);
}

void Stack::KillOrchestrator() {
  orchestrator_->Signal(SIGKILL);
  (void)orchestrator_->Wait(absl::Seconds(10));
}

absl::Status Stack::RestartOrchestrator() {
  return StartOrchestrator(orchestrator_port_, orchestrator_metrics_);
}

double Stack::Metric(int i, const std::string& series) const {
  const int port = i < 0 ? orchestrator_metrics_ : denoisers_[i].metrics;
  auto text = HttpGet(port, "/metrics");
  return text.ok() ? MetricValue(*text, series) : -1;
}

}  // namespace dgrid::testing
