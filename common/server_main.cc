#include "common/server_main.h"

#include <pthread.h>

#include <cstdio>
#include <fstream>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace dgrid {

void HelpListsTheProgramsFlags() {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return !absl::StrContains(file, "absl/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
}

sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int WaitForStopSignal(const sigset_t& signals) {
  int signal = 0;
  sigwait(&signals, &signal);
  return signal;
}

void WritePortFile(const std::string& path,
                   const std::vector<std::pair<std::string, int>>& ports) {
  if (path.empty()) return;
  {
    std::ofstream out(path + ".tmp");
    for (const auto& [name, port] : ports) out << name << "=" << port << "\n";
  }
  std::rename((path + ".tmp").c_str(), path.c_str());
}

}  // namespace dgrid
