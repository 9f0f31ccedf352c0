#include "common/server_main.h"

#include <pthread.h>

#include <cstdio>
#include <fstream>

namespace dgrid {

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
