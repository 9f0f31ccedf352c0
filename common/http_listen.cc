#include "common/http_listen.h"

#include <sys/socket.h>

#include "httplib.h"

namespace dgrid {

void ListenAlone(httplib::Server& server) {
  server.set_socket_options([](socket_t socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
}

}  // namespace dgrid
