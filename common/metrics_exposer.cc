#include "common/metrics_exposer.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/http_listen.h"
#include "httplib.h"

namespace dgrid {

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address must be host:port, got \"", address, "\""));
  }
  std::string host = address.substr(0, colon);
  if (host.empty()) host = "0.0.0.0";

  auto endpoint = std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint());
  endpoint->registry_ = std::move(registry);
  endpoint->server_ = std::make_unique<httplib::Server>();
  ListenAlone(*endpoint->server_);
  prometheus::Registry* r = endpoint->registry_.get();
  endpoint->server_->Get("/metrics", [r](const httplib::Request&, httplib::Response& response) {
    response.set_content(prometheus::TextSerializer().Serialize(r->Collect()),
                         "text/plain; version=0.0.4; charset=utf-8");
  });
  if (port == 0) {
    endpoint->port_ = endpoint->server_->bind_to_any_port(host.c_str());
  } else if (endpoint->server_->bind_to_port(host.c_str(), port)) {
    endpoint->port_ = port;
  }
  if (endpoint->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for metrics on ", address, " (in use by another process?)"));
  }
  httplib::Server* server = endpoint->server_.get();
  endpoint->thread_ = std::thread([server] { server->listen_after_bind(); });
  WaitUntilListening(*server);
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace dgrid
