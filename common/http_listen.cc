#include "common/http_listen.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "httplib.h"

namespace dgrid {

void ListenAlone(httplib::Server& server) {
  server.set_socket_options([](socket_t socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    // An IPv6 socket takes IPv4 too, whatever net.ipv6.bindv6only says (an
    // IPv4 socket refuses the option, harmlessly).
    const int no = 0;
    ::setsockopt(socket, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof(no));
  });
}

int BindHttp(httplib::Server& server, const std::string& host, int port) {
  auto bind = [&](const std::string& at) {
    if (port == 0) return server.bind_to_any_port(at.c_str());
    return server.bind_to_port(at.c_str(), port) ? port : -1;
  };
  if (host == "0.0.0.0" || host == "::") {
    // IPv4 alone only where no IPv6 socket can be made (a kernel without
    // IPv6): a "::" that fails for another reason (the port in use) fails,
    // rather than listen on IPv4 alone unseen.
    const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
    if (probe < 0) return bind("0.0.0.0");
    ::close(probe);
    return bind("::");
  }
  return bind(host);
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
