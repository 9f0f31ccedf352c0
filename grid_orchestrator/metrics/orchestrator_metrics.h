// The orchestrator's Prometheus metrics (DESIGN.md names). One instance per
// process, shared by the pool, the executor and the server.
#ifndef DGRID_GRID_ORCHESTRATOR_METRICS_ORCHESTRATOR_METRICS_H_
#define DGRID_GRID_ORCHESTRATOR_METRICS_ORCHESTRATOR_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace dgrid {

class OrchestratorMetrics {
 public:
  OrchestratorMetrics();

  std::shared_ptr<prometheus::Registry> registry() { return registry_; }

  // status: ok, cancelled, failed, rejected.
  void CountGrid(const std::string& status, double seconds);
  // status: ok, retried, failed.
  void CountJob(const std::string& status);
  void CountRetry();
  // Per grid: lookups made in the prefix cache and how many hit.
  void CountCache(int lookups, int hits);
  void SetReplicaInflight(const std::string& replica, int inflight);
  void SetCache(size_t bytes, size_t entries);
  void RemoveReplica(const std::string& replica);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& grids_;
  prometheus::Histogram& grid_seconds_;
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Counter& retries_;
  prometheus::Counter& cache_hits_;
  prometheus::Counter& cache_lookups_;
  prometheus::Family<prometheus::Gauge>& inflight_;
  prometheus::Gauge& cache_bytes_;
  prometheus::Gauge& cache_entries_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_METRICS_ORCHESTRATOR_METRICS_H_
