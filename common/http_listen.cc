#include "common/http_listen.h"

#include <sys/socket.h>

#include "absl/strings/str_cat.h"
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

std::string RawAnswer(int status, const char* reason, const char* content_type,
                      const std::string& body, const char* extra_headers, bool with_body) {
  return absl::StrCat("HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(), "\r\n", extra_headers,
                      "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
                      with_body ? body : "");
}

void WaitUntilListening(const httplib::Server& server) {
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (!server.is_running() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
}

}  // namespace dgrid
