#include "grid_orchestrator/pool/replica_pool.h"

#include <grpcpp/support/client_interceptor.h>

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/bearer_token.h"
#include "common/grpc_status.h"
#include "common/host_port.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace dgrid {
namespace {

// Puts the denoisers' bearer token on every call of a channel, so that no
// caller of a stub can forget it (the credentials of an insecure channel
// carry no call metadata).
class AuthorizationAdder final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit AuthorizationAdder(const std::string& token) : value_(BearerAuthorization(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new Adder(&value_);
  }

 private:
  class Adder final : public grpc::experimental::Interceptor {
   public:
    explicit Adder(const std::string* value) : value_(value) {}
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(
              grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
        methods->GetSendInitialMetadata()->insert({"authorization", *value_});
      }
      methods->Proceed();
    }

   private:
    const std::string* value_;
  };
  const std::string value_;
};

}  // namespace


struct ReplicaPool::Replica {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Denoiser::StubInterface> stub;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  // Guarded by the pool's mutex.
  bool healthy = false;
  // What it answered to GetModelInfo since it last turned healthy, or why
  // it did not (a wrong --denoiser_token_file says UNAUTHENTICATED only here).
  std::optional<v1::GetModelInfoResponse> models;
  std::string models_error;
  // What the log last said of it: nothing yet, serving, or not; and the
  // code of the model-list failure it last told (OK: none since serving).
  enum class Told { kNothing, kServing, kNotServing } told = Told::kNothing;
  grpc::StatusCode told_models_code = grpc::StatusCode::OK;
  // Times a job marked it unhealthy: a health check that began before the
  // last mark is stale and leaves it out until the next round.
  uint64_t marks = 0;
  bool removed = false;
  // Lease::MarkStalled: no new jobs before this while others serve.
  absl::Time stalled_until = absl::InfinitePast();
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

v1::Denoiser::StubInterface* ReplicaPool::Lease::stub() const { return replica_->stub.get(); }

const std::string& ReplicaPool::Lease::address() const { return replica_->address; }

bool ReplicaPool::Lease::Healthy() const {
  if (!pool_) return false;
  std::lock_guard<std::mutex> lock(pool_->mu_);
  return replica_->healthy;
}

void ReplicaPool::Lease::MarkUnhealthy() {
  if (!pool_) return;
  std::lock_guard<std::mutex> lock(pool_->mu_);
  if (replica_->healthy) pool_->last_lost_ = absl::Now();
  replica_->healthy = false;
  // It may have restarted onto another model version: ask again once back.
  replica_->models.reset();
  ++replica_->marks;
  replica_->last_error = "a job failed on it";
}

void ReplicaPool::Lease::MarkStalled() {
  if (!pool_) return;
  std::lock_guard<std::mutex> lock(pool_->mu_);
  replica_->stalled_until = absl::Now() + pool_->options_.stall_penalty;
  replica_->last_error = "a job stalled on it";
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
  // A port past 65535 would be wrapped round by gRPC (another process's, or
  // nobody's) and a missing one read as gRPC's default, 443.
  if (absl::StartsWith(options.targets, "dns:///")) {
    if (absl::StatusOr<HostPort> at = ParseHostPort("--denoisers", options.targets.substr(7), 1);
        !at.ok()) {
      return at.status();
    }
  } else {
    for (absl::string_view target : absl::StrSplit(options.targets, ',', absl::SkipWhitespace())) {
      if (absl::Status checked = CheckGrpcTarget("--denoisers", target, 1); !checked.ok()) {
        return checked;
      }
    }
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
  if (options_.resolve_dns) return options_.resolve_dns();
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
      departed_[it->first] = it->second;
      if (metrics_) metrics_->RemoveReplica(it->first);
      it = replicas_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  for (auto it = departed_.begin(); it != departed_.end();) {
    it = it->second.expired() ? departed_.erase(it) : std::next(it);
  }
  for (const std::string& address : wanted) {
    if (replicas_.count(address)) continue;
    if (auto d = departed_.find(address); d != departed_.end()) {
      if (std::shared_ptr<Replica> back = d->second.lock()) {
        // Back with the leases it had: serving again once a health check
        // says so, its models asked for anew (it may have restarted).
        departed_.erase(d);
        back->removed = false;
        back->healthy = false;
        back->models.reset();
        replicas_[address] = back;
        PublishInflight(*back);
        changed = true;
        continue;
      }
      departed_.erase(d);
    }
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
    if (options_.call_token.empty()) {
      replica->channel = grpc::CreateCustomChannel(address, options_.credentials, args);
    } else {
      std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> adders;
      adders.push_back(std::make_unique<AuthorizationAdder>(options_.call_token));
      replica->channel = grpc::experimental::CreateCustomChannelWithInterceptors(
          address, options_.credentials, args, std::move(adders));
    }
    replica->stub = options_.stub_factory ? options_.stub_factory(address, replica->channel)
                                          : v1::Denoiser::NewStub(replica->channel);
    replica->health = grpc::health::v1::Health::NewStub(replica->channel);
    replicas_[address] = replica;
    PublishInflight(*replica);
    changed = true;
  }
}

void ReplicaPool::PublishInflight(const Replica& replica) {
  if (metrics_ && !replica.removed) metrics_->SetReplicaInflight(replica.address, replica.inflight);
}

void ReplicaPool::CheckHealthNow() {
  struct Check {
    std::shared_ptr<Replica> replica;
    uint64_t marks = 0;
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Check>> checks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [_, r] : replicas_) {
      checks.push_back(std::make_unique<Check>());
      checks.back()->replica = r;
      checks.back()->marks = r->marks;
    }
  }
  // All at once: an address that never answers (a lost node's pod) costs
  // the round one timeout, not one per such replica.
  std::mutex done_mu;
  std::condition_variable done;
  size_t pending = checks.size();
  for (const auto& check : checks) {
    check->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.health_timeout));
    check->replica->health->async()->Check(
        &check->context, &check->request, &check->response,
        [&, c = check.get()](grpc::Status status) {
          c->status = std::move(status);
          // Notified under the lock, so the round cannot return (and take
          // these locals with it) before this callback is done with them.
          std::lock_guard<std::mutex> lock(done_mu);
          if (--pending == 0) done.notify_all();
        });
  }
  {
    std::unique_lock<std::mutex> lock(done_mu);
    done.wait(lock, [&] { return pending == 0; });
  }
  for (const auto& check : checks) {
    Replica& r = *check->replica;
    const bool serving = check->status.ok() && check->response.status() ==
                                                   grpc::health::v1::HealthCheckResponse::SERVING;
    const std::string error = serving              ? ""
                              : check->status.ok() ? "NOT_SERVING"
                                                   : check->status.error_message();
    bool fetch = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // A job found it failing while this check was under way: the answer
      // may predate the failure, so the next round decides.
      if (r.marks != check->marks) continue;
      // A (re)joined replica may serve other models or versions.
      if (!serving) {
        r.models.reset();
        r.told_models_code = grpc::StatusCode::OK;
      }
      fetch = serving && !r.models;
      const Replica::Told now = serving ? Replica::Told::kServing : Replica::Told::kNotServing;
      if (r.told != now) {
        r.told = now;
        log_lines_.push_back(absl::StrCat("denoiser ", r.address, ": ",
                                          serving ? "serving" : "not serving: ", error));
      }
    }
    if (fetch) FetchModels(r);
    std::lock_guard<std::mutex> lock(mu_);
    if (r.marks != check->marks) continue;
    if (serving != r.healthy) changed_.notify_all();
    if (r.healthy && !serving) last_lost_ = absl::Now();
    r.healthy = serving;
    r.last_error = error;
  }
  FlushLog();
}

void ReplicaPool::FlushLog() {
  // Two flushes (the health thread's, a request's) keep the lines' order.
  std::lock_guard<std::mutex> in_order(log_mu_);
  std::vector<std::string> lines;
  {
    std::lock_guard<std::mutex> lock(mu_);
    lines.swap(log_lines_);
  }
  if (!options_.log) return;
  for (const std::string& line : lines) options_.log(line);
}

void ReplicaPool::FetchModels(Replica& replica) {
  uint64_t marks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    marks = replica.marks;
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.health_timeout));
  v1::GetModelInfoResponse response;
  const grpc::Status status = replica.stub->GetModelInfo(&context, {}, &response);
  std::lock_guard<std::mutex> lock(mu_);
  if (!status.ok()) {  // asked again at the next health round
    const std::string error = FromGrpcStatus(status).ToString();
    // Once a failure, and again when another one follows it.
    if (replica.told_models_code != status.error_code()) {
      replica.told_models_code = status.error_code();
      log_lines_.push_back(
          absl::StrCat("denoiser ", replica.address, ": no model list: ", error));
    }
    replica.models_error = error;
    return;
  }
  if (replica.marks != marks) return;  // the answer may predate a restart
  replica.models_error.clear();
  replica.told_models_code = grpc::StatusCode::OK;
  replica.models = std::move(response);
  changed_.notify_all();
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

struct ReplicaPool::Waiter {
  const Want* want;
  uint64_t seq;
};

bool ReplicaPool::Serves(const Replica& r, const Want& want, bool allow_avoided, int cap,
                         absl::Time now) {
  if (!r.healthy || r.inflight >= cap) return false;
  if (!allow_avoided && (want.avoid.count(r.address) || now < r.stalled_until)) return false;
  if (want.model.empty()) return true;
  if (!r.models) return false;
  for (const v1::ModelInfo& m : r.models->models()) {
    if (m.name() == want.model && m.version() == want.version) return true;
  }
  return false;
}

bool ReplicaPool::SomeoneAhead(const Waiter& me, const Replica& replica) const {
  // Shortest job first, as the replicas' batchers order work: lower rank,
  // then the older tenant, then the older request.
  auto rank = [](const Waiter& w) {
    return std::make_tuple(w.want->rank, w.want->since, w.seq);
  };
  const auto mine = rank(me);
  const absl::Time now = absl::Now();
  const int cap = options_.max_inflight_per_replica;
  for (const Waiter* other : waiters_) {
    if (other == &me || other->want->tenant == me.want->tenant) continue;
    if (rank(*other) >= mine) continue;
    // Ahead only where the other would take this replica: Acquire's rule,
    // an avoided or stalled replica only when no other one serves it.
    if (Serves(replica, *other->want, /*allow_avoided=*/false, cap, now) ||
        (Serves(replica, *other->want, /*allow_avoided=*/true, cap, now) &&
         !AnotherServes(*other->want, now))) {
      return true;
    }
  }
  return false;
}

bool ReplicaPool::AnotherServes(const Want& want, absl::Time now) const {
  for (const auto& [address, r] : replicas_) {
    if (Serves(*r, want, /*allow_avoided=*/false, std::numeric_limits<int>::max(), now)) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<ReplicaPool::Lease> ReplicaPool::Acquire(int64_t work, absl::Time deadline,
                                                        const std::set<std::string>& avoid,
                                                        const std::atomic<bool>* cancelled) {
  Want want;
  want.work = work;
  want.deadline = deadline;
  want.avoid = avoid;
  want.cancelled = cancelled;
  return Acquire(want);
}

absl::StatusOr<ReplicaPool::Lease> ReplicaPool::Acquire(const Want& want) {
  const absl::Time start = absl::Now();
  std::unique_lock<std::mutex> lock(mu_);
  Waiter me{&want, next_waiter_seq_++};
  waiters_.insert(&me);
  struct Leave {
    ReplicaPool* pool;
    Waiter* me;
    ~Leave() {
      pool->waiters_.erase(me);
      // Others may have been waiting behind this one.
      pool->changed_.notify_all();
    }
  } leave{this, &me};
  while (true) {
    if (want.cancelled && want.cancelled->load()) return absl::CancelledError("grid cancelled");
    std::shared_ptr<Replica> best;
    bool any_healthy = false, any_serving = false;
    const absl::Time picked_at = absl::Now();
    const bool other_serving = AnotherServes(want, picked_at);
    for (bool allow_avoided : {false, true}) {
      // An avoided replica (a job just failed on it) only when no other
      // healthy one serves the model: one at its cap frees a slot soon, and
      // taking the free slot of the replica that failed sent every retry
      // under load back to it.
      if (allow_avoided && other_serving) break;
      for (const auto& [address, r] : replicas_) {
        if (!r->healthy) continue;
        any_healthy = true;
        if (Serves(*r, want, true, std::numeric_limits<int>::max(), picked_at)) any_serving = true;
        const int cap =
            want.control ? std::numeric_limits<int>::max() : options_.max_inflight_per_replica;
        if (!Serves(*r, want, allow_avoided, cap, picked_at)) continue;
        // Least outstanding work; ties go to fewer jobs in flight.
        if (!best || r->outstanding_work < best->outstanding_work ||
            (r->outstanding_work == best->outstanding_work && r->inflight < best->inflight)) {
          best = r;
        }
      }
      if (best) break;
    }
    // A free slot goes to the waiter ahead in SomeoneAhead's order (shortest
    // job first) among those it serves; a control call (Tokenize while
    // planning) never queues.
    if (best && (want.control || !SomeoneAhead(me, *best))) {
      ++best->inflight;
      best->outstanding_work += want.work;
      PublishInflight(*best);
      Lease lease;
      lease.pool_ = this;
      lease.replica_ = best;
      lease.work_ = want.work;
      return lease;
    }
    const absl::Time now = absl::Now();
    // The grace runs from the later of this call and the last replica lost:
    // a job that waited long at the caps still rides out a failure that
    // happens now.
    const absl::Time unhealthy_until = std::max(start, last_lost_) + options_.unavailable_grace;
    if ((!any_healthy || !any_serving) && now >= unhealthy_until) {
      std::vector<std::string> states;
      for (const auto& [address, r] : replicas_) {
        states.push_back(absl::StrCat(address, " (", r->last_error, ")"));
      }
      if (any_healthy) {
        return absl::UnavailableError(
            absl::StrCat("no healthy denoiser replica serves model ", want.model, " version ",
                         want.version, " (it may have been replaced by a rollout): ",
                         absl::StrJoin(states, ", ")));
      }
      return absl::UnavailableError(absl::StrCat(
          "no healthy denoiser replica: ",
          states.empty() ? std::string("none discovered") : absl::StrJoin(states, ", ")));
    }
    if (now >= want.deadline) {
      return absl::DeadlineExceededError(
          "deadline passed while every healthy denoiser replica was at its in-flight cap");
    }
    // Woken by releases and health changes, and every 20 ms for cancellation.
    changed_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

size_t ReplicaPool::waiting() {
  std::lock_guard<std::mutex> lock(mu_);
  return waiters_.size();
}

std::vector<ReplicaPool::ReplicaStatus> ReplicaPool::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ReplicaStatus> out;
  for (const auto& [address, r] : replicas_) {
    out.push_back({address, r->healthy, r->inflight, r->outstanding_work, r->last_error});
  }
  return out;
}

bool ReplicaPool::LookUpModels(const std::function<bool(const v1::GetModelInfoResponse&)>& pick,
                               std::vector<std::string>* unanswered) {
  std::vector<std::shared_ptr<Replica>> unknown;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [_, r] : replicas_) {
      if (!r->healthy) continue;
      if (!r->models) {
        unknown.push_back(r);
      } else if (pick(*r->models)) {
        return true;
      }
    }
  }
  // Healthy replicas that have not answered yet: ask them now.
  for (const auto& r : unknown) {
    FetchModels(*r);
    FlushLog();
    std::lock_guard<std::mutex> lock(mu_);
    if (!r->models) {
      unanswered->push_back(absl::StrCat(r->address, ": ", r->models_error));
    } else if (pick(*r->models)) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<v1::GetModelInfoResponse> ReplicaPool::Models(const std::string& name) {
  for (int round = 0; round < 2; ++round) {
    // Every healthy replica's list, not the first one's: replicas may serve
    // different models (a pool split by model, or one replica restarted
    // onto a bundle more during a rolling update).
    v1::GetModelInfoResponse all;
    bool answered = false;
    auto lists = [&all](const std::string& wanted) {
      return std::any_of(all.models().begin(), all.models().end(),
                         [&](const v1::ModelInfo& m) { return m.name() == wanted; });
    };
    auto merge = [&](const v1::GetModelInfoResponse& models) {
      answered = true;
      for (const v1::ModelInfo& m : models.models()) {
        if (!lists(m.name())) *all.add_models() = m;
      }
      return false;
    };
    // The lists known: the health rounds ask a healthy replica that has not
    // answered yet, so a call waits on none of them unless it must.
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [_, r] : replicas_) {
        if (r->healthy && r->models) merge(*r->models);
      }
    }
    if (answered && (name.empty() || lists(name))) return all;
    // None known, or not the model asked for: ask those now.
    std::vector<std::string> unanswered;
    LookUpModels(merge, &unanswered);
    if (answered) return all;
    if (!unanswered.empty()) {
      return absl::UnavailableError(
          absl::StrCat("no healthy denoiser replica answered GetModelInfo (",
                       absl::StrJoin(unanswered, "; "), ")"));
    }
    // None healthy: wait out the grace period for one, as jobs do. A
    // control lookup: a healthy replica at its in-flight cap still answers.
    Want want;
    want.deadline = absl::Now() + options_.unavailable_grace;
    want.control = true;
    absl::StatusOr<Lease> lease = Acquire(want);
    if (!lease.ok()) return lease.status();
  }
  return absl::UnavailableError("no healthy denoiser replica");
}

absl::StatusOr<v1::ModelInfo> ReplicaPool::Model(const std::string& name,
                                                 const std::string& version) {
  for (int round = 0; round < 2; ++round) {
    std::optional<v1::ModelInfo> found;
    std::vector<std::string> unanswered;
    if (LookUpModels([&](const v1::GetModelInfoResponse& models) {
          for (const v1::ModelInfo& m : models.models()) {
            if (m.name() == name && m.version() == version) found = m;
          }
          return found.has_value();
        }, &unanswered)) {
      return *found;
    }
    if (round == 1) break;
    // None serves it now (one marked unhealthy a moment ago, say): wait out
    // the grace period for one, as jobs do.
    Want want;
    want.model = name;
    want.version = version;
    want.deadline = absl::Now() + options_.unavailable_grace;
    want.control = true;
    if (!Acquire(want).ok()) break;
  }
  return absl::UnavailableError(
      absl::StrCat("no healthy replica serves ", name, " version ", version, " any more"));
}

}  // namespace dgrid
