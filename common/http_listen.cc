#include "common/http_listen.h"

#include <sys/socket.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "httplib.h"

namespace dgrid {

void ListenAlone(httplib::Server& server) {
  server.set_socket_options([](socket_t socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
}

void WaitUntilListening(const httplib::Server& server) {
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (!server.is_running() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
}

}  // namespace dgrid
