#include "grid_orchestrator/pool/replica_pool.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace dgrid {

struct ReplicaPool::Replica {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Denoiser::Stub> stub;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  // Guarded by the pool's mutex.
  bool healthy = false;
  bool removed = false;
  int inflight = 0;
  int64_t outstanding_work = 0;
  std::string last_error = "not checked yet";
};

// ---- Lease ----

ReplicaPool::Lease::Lease(Lease&& other) noexcept { *this = std::move(other); }

ReplicaPool::Lease& ReplicaPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = other.pool_;
    replica_ = std::move(other.replica_);
    work_ = other.work_;
    other.pool_ = nullptr;
  }
  return *this;
}

ReplicaPool::Lease::~Lease() { Release(); }

v1::Denoiser::Stub* ReplicaPool::Lease::stub() const { return replica_->stub.get(); }

const std::string& ReplicaPool::Lease::address() const { return replica_->address; }

void ReplicaPool::Lease::MarkUnhealthy() {
  if (!pool_) return;
  std::lock_guard<std::mutex> lock(pool_->mu_);
  replica_->healthy = false;
  replica_->last_error = "a job failed on it";
}

void ReplicaPool::Lease::Release() {
  if (!pool_) return;
  {
    std::lock_guard<std::mutex> lock(pool_->mu_);
    --replica_->inflight;
    replica_->outstanding_work -= work_;
    pool_->PublishInflight(*replica_);
    pool_->changed_.notify_all();
  }
  pool_ = nullptr;
  replica_.reset();
}

// ---- ReplicaPool ----

ReplicaPool::ReplicaPool(Options options, OrchestratorMetrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

absl::StatusOr<std::unique_ptr<ReplicaPool>> ReplicaPool::Create(Options options,
                                                                 OrchestratorMetrics* metrics) {
  if (options.targets.empty()) {
    return absl::InvalidArgumentError("--denoisers: give host:port,... or dns:///name:port");
  }
  if (options.max_inflight_per_replica < 1) {
    return absl::InvalidArgumentError("--replica_max_inflight must be >= 1");
  }
  if (!options.credentials) options.credentials = grpc::InsecureChannelCredentials();
  auto pool = std::unique_ptr<ReplicaPool>(new ReplicaPool(std::move(options), metrics));
  const std::vector<std::string> addresses = pool->Resolve();
  if (addresses.empty() && !absl::StartsWith(pool->options_.targets, "dns:///")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--denoisers: no address in \"", pool->options_.targets, "\""));
  }
  pool->UpdateReplicas(addresses);
  pool->CheckHealthNow();
  pool->health_thread_ = std::thread([p = pool.get()] { p->HealthLoop(); });
  return pool;
}

ReplicaPool::~ReplicaPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  if (health_thread_.joinable()) health_thread_.join();
}

std::vector<std::string> ReplicaPool::Resolve() {
  const std::string& targets = options_.targets;
  if (!absl::StartsWith(targets, "dns:///")) {
    return absl::StrSplit(targets, ',', absl::SkipWhitespace());
  }
  // A headless Service resolves to one address per ready pod.
  const std::string name_port = targets.substr(7);
  const size_t colon = name_port.rfind(':');
  if (colon == std::string::npos) return {};
  const std::string host = name_port.substr(0, colon), port = name_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0) return {};
  std::set<std::string> out;
  for (addrinfo* a = result; a; a = a->ai_next) {
    char ip[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), nullptr, 0, NI_NUMERICHOST) == 0) {
      out.insert(a->ai_family == AF_INET6 ? absl::StrCat("[", ip, "]:", port)
                                          : absl::StrCat(ip, ":", port));
    }
  }
  freeaddrinfo(result);
  return {out.begin(), out.end()};
}

void ReplicaPool::UpdateReplicas(const std::vector<std::string>& addresses) {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<std::string> wanted(addresses.begin(), addresses.end());
  bool changed = false;
  for (auto it = replicas_.begin(); it != replicas_.end();) {
    if (!wanted.count(it->first)) {
      // Leases may still hold it; it just takes no new work.
      it->second->removed = true;
      if (metrics_) metrics_->RemoveReplica(it->first);
      it = replicas_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  for (const std::string& address : wanted) {
    if (replicas_.count(address)) continue;
    grpc::ChannelArguments args;
    // A restarted replica rejoins within about a second.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetMaxReceiveMessageSize(options_.max_message_bytes);
    args.SetMaxSendMessageSize(options_.max_message_bytes);
    if (!options_.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options_.tls_server_name);
    }
    auto replica = std::make_shared<Replica>();
    replica->address = address;
    replica->channel = grpc::CreateCustomChannel(address, options_.credentials, args);
    replica->stub = v1::Denoiser::NewStub(replica->channel);
    replica->health = grpc::health::v1::Health::NewStub(replica->channel);
    replicas_[address] = replica;
    PublishInflight(*replica);
    changed = true;
  }
  if (changed) models_.reset();
}

void ReplicaPool::PublishInflight(const Replica& replica) {
  if (metrics_ && !replica.removed) metrics_->SetReplicaInflight(replica.address, replica.inflight);
}

void ReplicaPool::CheckHealthNow() {
  std::vector<std::shared_ptr<Replica>> replicas;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [_, r] : replicas_) replicas.push_back(r);
  }
  for (const auto& r : replicas) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.health_timeout));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = r->health->Check(&context, request, &response);
    const bool serving =
        status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    std::lock_guard<std::mutex> lock(mu_);
    if (serving && !r->healthy) models_.reset();  // a (re)joined replica may serve other models
    if (serving != r->healthy) changed_.notify_all();
    r->healthy = serving;
    r->last_error = serving ? "" : status.ok() ? "NOT_SERVING" : status.error_message();
  }
}

void ReplicaPool::HealthLoop() {
  absl::Time next_resolve = absl::Now() + options_.resolve_interval;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (changed_.wait_for(lock, absl::ToChronoNanoseconds(options_.health_interval),
                            [this] { return stop_; })) {
        return;
      }
    }
    if (absl::StartsWith(options_.targets, "dns:///") && absl::Now() >= next_resolve) {
      const std::vector<std::string> addresses = Resolve();
      // A failed lookup keeps the replicas we know.
      if (!addresses.empty()) UpdateReplicas(addresses);
      next_resolve = absl::Now() + options_.resolve_interval;
    }
    CheckHealthNow();
  }
}

absl::StatusOr<ReplicaPool::Lease> ReplicaPool::Acquire(int64_t work, absl::Time deadline,
                                                        const std::set<std::string>& avoid,
                                                        const std::atomic<bool>* cancelled) {
  const absl::Time unhealthy_until = absl::Now() + options_.unavailable_grace;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (cancelled && cancelled->load()) return absl::CancelledError("grid cancelled");
    std::shared_ptr<Replica> best;
    bool any_healthy = false;
    for (bool allow_avoided : {false, true}) {
      for (const auto& [address, r] : replicas_) {
        if (!r->healthy) continue;
        any_healthy = true;
        if (r->inflight >= options_.max_inflight_per_replica) continue;
        if (!allow_avoided && avoid.count(address)) continue;
        // Least outstanding work; ties go to fewer jobs in flight.
        if (!best || r->outstanding_work < best->outstanding_work ||
            (r->outstanding_work == best->outstanding_work && r->inflight < best->inflight)) {
          best = r;
        }
      }
      if (best) break;
    }
    if (best) {
      ++best->inflight;
      best->outstanding_work += work;
      PublishInflight(*best);
      Lease lease;
      lease.pool_ = this;
      lease.replica_ = best;
      lease.work_ = work;
      return lease;
    }
    const absl::Time now = absl::Now();
    if (!any_healthy && now >= unhealthy_until) {
      std::vector<std::string> states;
      for (const auto& [address, r] : replicas_) {
        states.push_back(absl::StrCat(address, " (", r->last_error, ")"));
      }
      return absl::UnavailableError(absl::StrCat(
          "no healthy denoiser replica: ",
          states.empty() ? std::string("none discovered") : absl::StrJoin(states, ", ")));
    }
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          "deadline passed while every healthy denoiser replica was at its in-flight cap");
    }
    // Woken by releases and health changes, and every 20 ms for cancellation.
    changed_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

std::vector<ReplicaPool::ReplicaStatus> ReplicaPool::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ReplicaStatus> out;
  for (const auto& [address, r] : replicas_) {
    out.push_back({address, r->healthy, r->inflight, r->outstanding_work, r->last_error});
  }
  return out;
}

absl::StatusOr<v1::GetModelInfoResponse> ReplicaPool::Models() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (models_) return *models_;
  }
  // Ask healthy replicas in turn; one that fails is marked down and skipped.
  std::set<std::string> tried;
  absl::Status last = absl::UnavailableError("no healthy denoiser replica");
  for (int attempt = 0; attempt < 4; ++attempt) {
    absl::StatusOr<Lease> lease = Acquire(0, absl::Now() + absl::Seconds(5), tried);
    if (!lease.ok()) return lease.status();
    if (tried.count(lease->address())) break;  // only replicas we already tried are left
    tried.insert(lease->address());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::GetModelInfoResponse response;
    const grpc::Status status = lease->stub()->GetModelInfo(&context, {}, &response);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      models_ = response;
      return response;
    }
    last = FromGrpcStatus(status);
    lease->MarkUnhealthy();
  }
  return last;
}

}  // namespace dgrid
