// The denoiser replicas the orchestrator fans work out to. Replicas come from
// a static list ("host:port,host:port") or from "dns:///name:port", resolved
// again every resolve_interval (a Kubernetes headless Service: one address
// per pod). A background thread health-checks every replica at once with
// grpc.health.v1 (hung ones hold a round up by one timeout in all), and
// asks each replica that turns healthy which models (and versions) it
// serves, one replica after another. Acquire() picks the healthy replica with the least
// outstanding work that is below its in-flight cap (and serves the wanted
// model version), and returns a Lease that gives the work back when it ends.
// When replicas are full, freed slots go to the waiting job of the tenant (a
// grid) with the lowest rank (its planned work), then the oldest, so a small
// grid is not starved by large ones and equal grids finish in arrival order.
//
//   ASSIGN_OR_RETURN(auto pool, ReplicaPool::Create(options, &metrics));
//   ReplicaPool::Want want;
//   want.work = 50;
//   want.tenant = grid_id;
//   want.rank = plan.model_evals;
//   ASSIGN_OR_RETURN(ReplicaPool::Lease lease, pool->Acquire(want));
//   lease.stub()->Branch(...);
//   if (failed) lease.MarkUnhealthy();
#ifndef DGRID_GRID_ORCHESTRATOR_POOL_REPLICA_POOL_H_
#define DGRID_GRID_ORCHESTRATOR_POOL_REPLICA_POOL_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dgrid/v1/denoiser.grpc.pb.h"

namespace dgrid {

class OrchestratorMetrics;

class ReplicaPool {
 public:
  struct Options {
    // "host:port,host:port" or "dns:///name:port".
    std::string targets;
    // Jobs in flight on one replica at most.
    int max_inflight_per_replica = 64;
    absl::Duration health_interval = absl::Milliseconds(500);
    absl::Duration health_timeout = absl::Seconds(1);
    absl::Duration resolve_interval = absl::Seconds(5);
    // How long Acquire waits for a replica to turn healthy before it answers
    // UNAVAILABLE: short, so that clients of a dead pool learn it quickly.
    absl::Duration unavailable_grace = absl::Seconds(1);
    // How long a replica that stalled a job gets no new ones (Lease::MarkStalled).
    absl::Duration stall_penalty = absl::Seconds(30);
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Name to check the replicas' TLS certificates against (SNI), when their
    // addresses are IPs.
    std::string tls_server_name;
    int max_message_bytes = 16 << 20;
    // When not empty, every call to a replica carries "authorization: Bearer
    // <call_token>" (the denoisers' --auth_token_file).
    std::string call_token;
    // Makes the Denoiser stub of a replica; tests put a fake one behind the
    // generated StubInterface. Default: the real stub on the channel.
    std::function<std::unique_ptr<v1::Denoiser::StubInterface>(
        const std::string& address, std::shared_ptr<grpc::Channel> channel)>
        stub_factory;
    // The addresses a "dns:///" target names now; tests give their own.
    // Default: a DNS lookup.
    std::function<std::vector<std::string>()> resolve_dns;
    // Told, once each, when a replica starts or stops serving (and why) and
    // when it will not give its model list (a wrong token says so only
    // there); called outside the pool's lock. Empty: not told.
    std::function<void(const std::string& line)> log;
  };

  // What a job asks of the pool.
  struct Want {
    // The job's size (trajectory steps).
    int64_t work = 0;
    absl::Time deadline = absl::InfiniteFuture();
    // Replicas (by address) skipped while another healthy one serves the
    // model, even one at its in-flight cap (the job waits for its slot).
    std::set<std::string> avoid;
    const std::atomic<bool>* cancelled = nullptr;
    // When set, only replicas known to serve this model at this version.
    std::string model;
    std::string version;
    // The job's tenant (its grid), and the tenant's rank and start: a freed
    // slot goes to the waiting job of lowest rank, then of the oldest tenant
    // (shortest job first; equal grids in arrival order).
    uint64_t tenant = 0;
    uint64_t rank = 0;
    absl::Time since = absl::InfinitePast();
    // A short call outside the grid's work (Tokenize while planning): it
    // takes any healthy replica that serves the model whatever its in-flight
    // count, and never queues behind the work it is about to plan.
    bool control = false;
  };

  struct Replica;

  // One job's hold on a replica.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();
    v1::Denoiser::StubInterface* stub() const;
    const std::string& address() const;
    // After a transport failure: stop sending work there until a health
    // check that began after this passes, and ask for its models anew then
    // (it may have restarted onto another version).
    void MarkUnhealthy();
    // After an attempt cancelled for making no progress (a wedged forward
    // pass whose health check still says SERVING): no new job goes there for
    // Options::stall_penalty while another replica serves the model. Without
    // it, the replica with the least outstanding work, once its stalled
    // calls were cancelled, took the next jobs of every grid.
    void MarkStalled();
    // Whether health checks still find the replica serving.
    bool Healthy() const;

   private:
    friend class ReplicaPool;
    void Release();
    ReplicaPool* pool_ = nullptr;
    std::shared_ptr<Replica> replica_;
    int64_t work_ = 0;
  };

  struct ReplicaStatus {
    std::string address;
    bool healthy = false;
    int inflight = 0;
    int64_t outstanding_work = 0;
    std::string last_error;
  };

  static absl::StatusOr<std::unique_ptr<ReplicaPool>> Create(Options options,
                                                             OrchestratorMetrics* metrics);
  ~ReplicaPool();

  // `work` is the job's size (trajectory steps). Replicas in `avoid` (by
  // address) are skipped while another healthy one serves the model, even
  // at its cap. UNAVAILABLE when no replica is healthy for the grace (from
  // this call or the last replica lost, whichever is later),
  // DEADLINE_EXCEEDED when every healthy one stays at its cap past
  // `deadline`, CANCELLED when *cancelled becomes true.
  absl::StatusOr<Lease> Acquire(const Want& want);
  absl::StatusOr<Lease> Acquire(int64_t work, absl::Time deadline,
                                const std::set<std::string>& avoid,
                                const std::atomic<bool>* cancelled = nullptr);

  std::vector<ReplicaStatus> Snapshot();
  // Every model a healthy replica serves, each name once (as the first
  // replica by address describes it, of those that had answered). Each
  // replica's answer is kept until it turns unhealthy (a restarted replica
  // may serve a new version). Healthy replicas that have not answered yet
  // are asked now only when no list is known, or none lists `name`.
  absl::StatusOr<v1::GetModelInfoResponse> Models(const std::string& name = "");
  // `name` at `version`, as a healthy replica that serves it describes it;
  // UNAVAILABLE when none does (any more) within the grace period.
  absl::StatusOr<v1::ModelInfo> Model(const std::string& name, const std::string& version);
  // Runs one health round now (tests use it to skip the interval).
  void CheckHealthNow();
  // Acquire calls waiting for a slot now.
  size_t waiting();

 private:
  explicit ReplicaPool(Options options, OrchestratorMetrics* metrics);
  std::vector<std::string> Resolve();
  void UpdateReplicas(const std::vector<std::string>& addresses);
  void HealthLoop();
  void PublishInflight(const Replica& replica);
  struct Waiter;
  // Whether a healthy replica the want neither avoids nor finds stalled
  // serves its model, at its cap or not.
  bool AnotherServes(const Want& want, absl::Time now) const;
  // Whether `replica` may serve `want` (health, cap, version, avoidance). A
  // replica that stalled a job a moment ago counts as avoided until `now`
  // passes its penalty.
  static bool Serves(const Replica& replica, const Want& want, bool allow_avoided, int cap,
                     absl::Time now);
  // True when a waiter ahead of `me` in fair order could take `replica`.
  bool SomeoneAhead(const Waiter& me, const Replica& replica) const;
  void FetchModels(Replica& replica);
  // Hands the lines queued for Options::log to it, outside the lock.
  void FlushLog();
  // Runs `pick` over the healthy replicas' model lists, asking those not
  // asked yet, until it returns true. False when it never does; then
  // `unanswered` says which replicas did not answer, and why.
  bool LookUpModels(const std::function<bool(const v1::GetModelInfoResponse&)>& pick,
                    std::vector<std::string>* unanswered);

  const Options options_;
  OrchestratorMetrics* const metrics_;

  // std primitives rather than absl's: Debian's abseil is not built with
  // ThreadSanitizer, which would not see absl::Mutex's ordering.
  std::mutex mu_;
  // Notified when a lease ends, a replica's health changes, or on stop.
  std::condition_variable changed_;
  std::map<std::string, std::shared_ptr<Replica>> replicas_;  // guarded by mu_
  // Replicas that left the target list while leases still held them: one
  // whose address comes back is the same, its leases counted against its
  // cap (a pod out of a headless Service's endpoints for a while).
  std::map<std::string, std::weak_ptr<Replica>> departed_;  // guarded by mu_
  // When a replica last went from healthy to unhealthy: a waiter's grace
  // for a pool with none healthy runs from here, or from its own start.
  absl::Time last_lost_ = absl::InfinitePast();  // guarded by mu_
  bool stop_ = false;                                          // guarded by mu_
  // The jobs waiting for a slot.
  std::set<Waiter*> waiters_;                 // guarded by mu_
  std::vector<std::string> log_lines_;        // guarded by mu_
  // Held while lines go to Options::log, before mu_ (never after).
  std::mutex log_mu_;
  uint64_t next_waiter_seq_ = 0;              // guarded by mu_

  std::thread health_thread_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_POOL_REPLICA_POOL_H_
