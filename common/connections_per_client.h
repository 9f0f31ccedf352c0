// How many connections each client (an address, or an IPv6 /64) has open,
// against a cap: the HTTP gateway's and the metrics endpoints' guard against
// one client holding every thread.
//
//   ConnectionsPerClient open(16);
//   if (!open.Take(client)) return Refuse(...);
//   absl::Cleanup release = [&] { open.Release(client); };
#ifndef DGRID_COMMON_CONNECTIONS_PER_CLIENT_H_
#define DGRID_COMMON_CONNECTIONS_PER_CLIENT_H_

#include <cstddef>
#include <map>
#include <mutex>
#include <string>

namespace dgrid {

class ConnectionsPerClient {
 public:
  explicit ConnectionsPerClient(size_t max) : max_(max) {}
  // False when `client` is at the cap; else it holds one more until Release.
  bool Take(const std::string& client) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t& open = open_[client];
    if (open >= max_) return false;
    ++open;
    return true;
  }
  void Release(const std::string& client) {
    std::lock_guard<std::mutex> lock(mu_);
    if (--open_[client] == 0) open_.erase(client);
  }

 private:
  const size_t max_;
  std::mutex mu_;  // std, not absl: TSan sees it
  std::map<std::string, size_t> open_;  // guarded by mu_
};

}  // namespace dgrid

#endif  // DGRID_COMMON_CONNECTIONS_PER_CLIENT_H_
