// Starting and stopping this project's cpp-httplib servers (the HTTP
// gateway, the metrics endpoints).
//
// httplib's listening socket sets SO_REUSEPORT, so a second server started
// on a port in use binds beside the first and takes part of its
// connections, silently. ListenAlone sets SO_REUSEADDR alone (and turns
// IPV6_V6ONLY off, so that an IPv6 socket takes IPv4 too): a restarted
// server binds while its old connections linger in TIME_WAIT, and a second
// live one fails to bind.
//
//   httplib::Server server;
//   ListenAlone(server);
//   const int bound = BindHttp(server, host, port);
//   if (bound <= 0) ...  // in use
//   std::thread thread([&] { server.listen_after_bind(); });
//   WaitUntilListening(server);
#ifndef DGRID_COMMON_HTTP_LISTEN_H_
#define DGRID_COMMON_HTTP_LISTEN_H_

#include <string>

namespace httplib {
class Server;
}

namespace dgrid {

void ListenAlone(httplib::Server& server);

// Binds `server` to host:port (port 0: a free port) and returns the port,
// or -1. A wildcard host, "0.0.0.0" or "::", listens on IPv6 and IPv4 both
// (one dual-stack socket), or on IPv4 where the kernel has no IPv6: as
// gRPC's listeners take either wildcard. An IPv6-only cluster's probes and scrapes
// reach a pod by its IPv6 address, which 0.0.0.0 alone refused.
int BindHttp(httplib::Server& server, const std::string& host, int port);

// Waits (at most 5 s) until the thread that runs `server.listen_after_bind()`
// has begun: httplib's stop() does nothing before, so a shutdown right after
// start would miss it and its join would wait for ever.
void WaitUntilListening(const httplib::Server& server);

// A whole HTTP/1.1 answer that closes the connection, for a server that
// writes to its socket itself: `extra_headers` are "Name: value\r\n" lines.
// Without `with_body` (a HEAD), the body's length alone.
std::string RawAnswer(int status, const char* reason, const char* content_type,
                      const std::string& body, const char* extra_headers,
                      bool with_body = true);

}  // namespace dgrid

#endif  // DGRID_COMMON_HTTP_LISTEN_H_
