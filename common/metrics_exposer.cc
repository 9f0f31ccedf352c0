#include "common/metrics_exposer.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"
#include "common/host_port.h"
#include "common/http_listen.h"
#include "httplib.h"

namespace dgrid {

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry) {
  absl::StatusOr<HostPort> at = ParseHostPort("--metrics_addr", address);
  if (!at.ok()) return at.status();
  const std::string host = at->host.empty() ? "0.0.0.0" : at->host;
  const int port = at->port;

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
