// What both servers' main() do around the server itself: block SIGINT and
// SIGTERM before any thread starts (main then waits for them synchronously,
// with no async-signal-safety concerns), and publish the bound ports to a
// file that tests and scripts wait for.
//
//   sigset_t stop = BlockStopSignals();
//   ... start the server ...
//   WritePortFile(path, {{"grpc", port}, {"metrics", metrics_port}});
//   WaitForStopSignal(stop);
#ifndef DGRID_COMMON_SERVER_MAIN_H_
#define DGRID_COMMON_SERVER_MAIN_H_

#include <signal.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace dgrid {

sigset_t BlockStopSignals();
// Returns the signal received.
int WaitForStopSignal(const sigset_t& signals);
// "name=port" lines, written to a temporary file and renamed into place so a
// reader never sees half a file; an error when it cannot be written (the
// server should not serve while its scripts wait for the file). No-op for
// an empty path.
absl::Status WritePortFile(const std::string& path,
                           const std::vector<std::pair<std::string, int>>& ports);
// Makes --help list every flag of the program's own code. Abseil's default
// lists only those defined in a file named after the program, and a
// dgrid-denoiser --help said "No flags matched". Call before parsing.
void HelpListsTheProgramsFlags();

}  // namespace dgrid

#endif  // DGRID_COMMON_SERVER_MAIN_H_
