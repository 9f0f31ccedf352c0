// dgrid-bench: benchmarks of the pair, one JSON line per configuration.
//
//   dgrid-bench denoiser [--model_dir=models/fashion-mnist] [--seconds=3]
//   dgrid-bench grid [--runs=5] [--grids=default,classic]
//   dgrid-bench load [--clients=1,4,16,64] [--load_seconds=20]
#include <iostream>
#include <map>
#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/server_main.h"

namespace dgrid {
int RunDenoiserBench();
int RunLoadBench();
int RunGridBench();
}

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dgrid-bench COMMAND [flags]\n"
      "  denoiser   raw engine forward throughput vs the gRPC service on loopback\n"
      "  grid       one grid through every variant: limit, in-process, the pair, baselines\n"
      "  load       N concurrent StreamGrid clients for T seconds against a fresh stack\n");
  dgrid::HelpListsTheProgramsFlags();
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::map<std::string, int (*)()> commands = {{"denoiser", dgrid::RunDenoiserBench},
                                                     {"load", dgrid::RunLoadBench},
                                                     {"grid", dgrid::RunGridBench}};
  if (args.size() < 2 || !commands.count(args[1])) {
    std::cerr << "dgrid-bench: expected a command: denoiser, grid or load (see --help)\n";
    return 2;
  }
  return commands.at(args[1])();
}
