// The orchestrator's Prometheus metrics (names in docs/ARCHITECTURE.md,
// "Metrics"). One instance per process, shared by the pool, the executor and
// the server.
#ifndef DGRID_GRID_ORCHESTRATOR_METRICS_ORCHESTRATOR_METRICS_H_
#define DGRID_GRID_ORCHESTRATOR_METRICS_ORCHESTRATOR_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// How a grid or curve that ended with `status` counts: ok, cancelled (by
// its caller), invalid (the caller's request or credentials: bad input,
// unauthenticated, a failed precondition), throttled (a per-client limit:
// that client's load, see ThrottledError), rejected (overloaded: a
// service-wide limit), failed (ours or the replicas'). "abandoned" (the
// client stopped reading) is decided by the caller, not by a status. The
// caller's own deadline, once passed (`deadline_passed`), is "cancelled", as
// a cancel is.
const char* Outcome(const absl::Status& status, bool deadline_passed = false);
// RESOURCE_EXHAUSTED for a limit one client reached (its grids in flight):
// counted "throttled", apart from "rejected", which says the service is
// overloaded and counts as an error in the alerts. Behind an Ingress every
// browser is one client, and its limit alone is no outage.
absl::Status ThrottledError(absl::string_view message);
// Whether `status` came from ThrottledError.
bool IsThrottled(const absl::Status& status);
// How a grid or curve that passed admission and then ended with `status`
// counts: what a replica refuses then is config or version skew, "failed"
// (not the caller's "invalid"); the caller's own deadline as in Outcome.
const char* RunOutcome(const absl::Status& status, bool deadline_passed);

class OrchestratorMetrics {
 public:
  OrchestratorMetrics();

  std::shared_ptr<prometheus::Registry> registry() { return registry_; }

  // status: see Outcome, or abandoned. `seconds` (an ok grid's wall time)
  // is left out for a curve's trunks, which wait for their siblings by
  // design: the curve is timed as a whole.
  void CountGrid(const std::string& status, std::optional<double> seconds);
  // status: as for grids. `seconds`: an ok curve's wall time.
  void CountCurve(const std::string& status, double seconds);
  // status: ok, retried, failed, cancelled (its grid ended first: the
  // client left, a sibling job failed it); one per attempt of a trunk,
  // branch or judge call.
  void CountJob(const std::string& status);
  // Model evaluations the replicas ran for grids: those whose results were
  // used, and those of attempts that failed or stalled (wasted), or that
  // their grid's end cut short (`cancelled`: not a failure's waste).
  void CountEvals(int64_t used, int64_t wasted, bool cancelled);
  void CountRetry();
  // Per grid: lookups made in the prefix cache and how many hit.
  void CountCache(int lookups, int hits);
  void SetReplicaInflight(const std::string& replica, int inflight);
  // Grids admitted and not yet done: `grids` in all, of them `curve_trunks`
  // a decision curve's.
  void SetGridsInFlight(int grids, int curve_trunks);
  void SetCache(size_t bytes, size_t entries);
  void RemoveReplica(const std::string& replica);
  // One answer of the HTTP gateway: its route (models, grid, grid_stream,
  // curve_stream, health, api_other, page, or connection for a connection
  // answered before its request was read) and HTTP status. The grids and
  // curves it starts count in grids_total and curves_total as well.
  void CountHttpAnswer(const char* route, int status);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& grids_;
  prometheus::Histogram& grid_seconds_;
  prometheus::Family<prometheus::Counter>& curves_;
  prometheus::Histogram& curve_seconds_;
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Counter& retries_;
  prometheus::Family<prometheus::Counter>& evals_;
  prometheus::Counter& cache_hits_;
  prometheus::Counter& cache_lookups_;
  prometheus::Family<prometheus::Gauge>& inflight_;
  prometheus::Family<prometheus::Gauge>& grids_in_flight_;
  prometheus::Gauge& cache_bytes_;
  prometheus::Gauge& cache_entries_;
  prometheus::Family<prometheus::Counter>& http_answers_;
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_METRICS_ORCHESTRATOR_METRICS_H_
