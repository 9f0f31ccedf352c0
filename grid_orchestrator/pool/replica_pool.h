// The denoiser replicas the orchestrator fans work out to. Replicas come from
// a static list ("host:port,host:port") or from "dns:///name:port", resolved
// again every resolve_interval (a Kubernetes headless Service: one address
// per pod). A background thread health-checks each replica with
// grpc.health.v1. Acquire() picks the healthy replica with the least
// outstanding work that is below its in-flight cap, and returns a Lease that
// gives the work back when it ends.
//
//   ASSIGN_OR_RETURN(auto pool, ReplicaPool::Create(options, &metrics));
//   ASSIGN_OR_RETURN(ReplicaPool::Lease lease, pool->Acquire(work, deadline, avoid));
//   lease.stub()->Branch(...);
//   if (failed) lease.MarkUnhealthy();
#ifndef DGRID_GRID_ORCHESTRATOR_POOL_REPLICA_POOL_H_
#define DGRID_GRID_ORCHESTRATOR_POOL_REPLICA_POOL_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
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
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Name to check the replicas' TLS certificates against (SNI), when their
    // addresses are IPs.
    std::string tls_server_name;
    int max_message_bytes = 16 << 20;
  };

  struct Replica;

  // One job's hold on a replica.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();
    v1::Denoiser::Stub* stub() const;
    const std::string& address() const;
    // After a transport failure: stop sending work there until a health
    // check passes again.
    void MarkUnhealthy();

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
  // address) are skipped while others are healthy. UNAVAILABLE when no
  // replica is healthy, DEADLINE_EXCEEDED when every healthy one stays at its
  // cap past `deadline`, CANCELLED when *cancelled becomes true.
  absl::StatusOr<Lease> Acquire(int64_t work, absl::Time deadline,
                                const std::set<std::string>& avoid,
                                const std::atomic<bool>* cancelled = nullptr);

  std::vector<ReplicaStatus> Snapshot();
  // Models as served by a healthy replica (cached until a replica changes).
  absl::StatusOr<v1::GetModelInfoResponse> Models();
  // Runs one health round now (tests use it to skip the interval).
  void CheckHealthNow();

 private:
  explicit ReplicaPool(Options options, OrchestratorMetrics* metrics);
  std::vector<std::string> Resolve();
  void UpdateReplicas(const std::vector<std::string>& addresses);
  void HealthLoop();
  void PublishInflight(const Replica& replica);

  const Options options_;
  OrchestratorMetrics* const metrics_;

  // std primitives rather than absl's: Debian's abseil is not built with
  // ThreadSanitizer, which would not see absl::Mutex's ordering.
  std::mutex mu_;
  // Notified when a lease ends, a replica's health changes, or on stop.
  std::condition_variable changed_;
  std::map<std::string, std::shared_ptr<Replica>> replicas_;  // guarded by mu_
  bool stop_ = false;                                          // guarded by mu_
  std::optional<v1::GetModelInfoResponse> models_;             // guarded by mu_

  std::thread health_thread_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_POOL_REPLICA_POOL_H_
