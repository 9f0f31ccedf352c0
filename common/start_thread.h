// A std::thread, or RESOURCE_EXHAUSTED when the system has none to give (a
// pids limit). std::thread's constructor throws std::system_error then;
// uncaught in a server's thread, it ends the process, and every grid with it.
//
//   ASSIGN_OR_RETURN(std::thread worker, StartThread([&] { Work(); }, "the grid's worker"));
#ifndef DGRID_COMMON_START_THREAD_H_
#define DGRID_COMMON_START_THREAD_H_

#include <functional>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// `what` names the thread in the error: "cannot start <what>: <reason>".
absl::StatusOr<std::thread> StartThread(std::function<void()> body, absl::string_view what);

}  // namespace dgrid

#endif  // DGRID_COMMON_START_THREAD_H_
