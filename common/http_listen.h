// The listening socket's options for this project's cpp-httplib servers (the
// HTTP gateway, the metrics endpoints). httplib's own set SO_REUSEPORT, so a
// second server started on a port in use binds beside the first and takes
// part of its connections, silently. These set SO_REUSEADDR alone: a
// restarted server binds while its old connections linger in TIME_WAIT, and
// a second live one fails to bind.
//
//   httplib::Server server;
//   ListenAlone(server);
//   if (!server.bind_to_port(host, port)) ...  // in use
#ifndef DGRID_COMMON_HTTP_LISTEN_H_
#define DGRID_COMMON_HTTP_LISTEN_H_

namespace httplib {
class Server;
}

namespace dgrid {

void ListenAlone(httplib::Server& server);

}  // namespace dgrid

#endif  // DGRID_COMMON_HTTP_LISTEN_H_
