#include "grid_orchestrator/metrics/orchestrator_metrics.h"

#include "absl/strings/cord.h"

namespace dgrid {
namespace {

// The caller's request or credentials.
bool CallersMistake(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kUnauthenticated ||
         code == absl::StatusCode::kPermissionDenied ||
         code == absl::StatusCode::kFailedPrecondition;
}

constexpr absl::string_view kThrottled = "type.dgrid/throttled";

}  // namespace

absl::Status ThrottledError(absl::string_view message) {
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kThrottled, absl::Cord("per-client limit"));
  return status;
}

bool IsThrottled(const absl::Status& status) {
  return status.code() == absl::StatusCode::kResourceExhausted &&
         status.GetPayload(kThrottled).has_value();
}

const char* Outcome(const absl::Status& status, bool deadline_passed) {
  if (status.code() == absl::StatusCode::kDeadlineExceeded && deadline_passed) return "cancelled";
  if (CallersMistake(status.code())) return "invalid";
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return "ok";
    case absl::StatusCode::kCancelled:
      return "cancelled";
    case absl::StatusCode::kResourceExhausted:
      return IsThrottled(status) ? "throttled" : "rejected";
    default:
      return "failed";
  }
}

const char* RunOutcome(const absl::Status& status, bool deadline_passed) {
  if (CallersMistake(status.code())) return "failed";
  return Outcome(status, deadline_passed);
}

OrchestratorMetrics::OrchestratorMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      grids_(prometheus::BuildCounter()
                 .Name("dgrid_orchestrator_grids_total")
                 .Help("Grid requests by outcome.")
                 .Register(*registry_)),
      grid_seconds_(prometheus::BuildHistogram()
                        .Name("dgrid_orchestrator_grid_seconds")
                        .Help("Wall time of grids that ended OK (not a curve's trunks).")
                        .Register(*registry_)
                        .Add({}, prometheus::Histogram::BucketBoundaries{
                                     0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120,
                                     300, 600})),
      curves_(prometheus::BuildCounter()
                  .Name("dgrid_orchestrator_curves_total")
                  .Help("Decision curve requests by outcome (their trunks count as grids too).")
                  .Register(*registry_)),
      curve_seconds_(prometheus::BuildHistogram()
                         .Name("dgrid_orchestrator_curve_seconds")
                         .Help("Wall time of decision curves that ended OK.")
                         .Register(*registry_)
                         .Add({}, prometheus::Histogram::BucketBoundaries{
                                      1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200})),
      jobs_(prometheus::BuildCounter()
                .Name("dgrid_orchestrator_jobs_total")
                .Help("Denoiser jobs (trunk, branch or judge calls) by outcome.")
                .Register(*registry_)),
      retries_(prometheus::BuildCounter()
                   .Name("dgrid_orchestrator_retries_total")
                   .Help("Jobs re-sent to another replica after a retryable failure.")
                   .Register(*registry_)
                   .Add({})),
      evals_(prometheus::BuildCounter()
                 .Name("dgrid_orchestrator_model_evals_total")
                 .Help("Model evaluations run for grids, by use (used, wasted, cancelled).")
                 .Register(*registry_)),
      cache_hits_(prometheus::BuildCounter()
                      .Name("dgrid_orchestrator_cache_hits_total")
                      .Help("Captured latents and finished cells served from the prefix cache.")
                      .Register(*registry_)
                      .Add({})),
      cache_lookups_(prometheus::BuildCounter()
                         .Name("dgrid_orchestrator_cache_lookups_total")
                         .Help("Prefix-cache lookups (hits / lookups = hit ratio).")
                         .Register(*registry_)
                         .Add({})),
      inflight_(prometheus::BuildGauge()
                    .Name("dgrid_orchestrator_replica_inflight")
                    .Help("Jobs in flight per denoiser replica.")
                    .Register(*registry_)),
      grids_in_flight_(prometheus::BuildGauge()
                           .Name("dgrid_orchestrator_grids_in_flight")
                           .Help("Grids admitted and not yet done, of --max_concurrent_grids: "
                                 "kind grid, or curve (a decision curve's trunks).")
                           .Register(*registry_)),
      cache_bytes_(prometheus::BuildGauge()
                       .Name("dgrid_orchestrator_cache_bytes")
                       .Help("Bytes held by the prefix cache (bounded by --cache_mb).")
                       .Register(*registry_)
                       .Add({})),
      cache_entries_(prometheus::BuildGauge()
                         .Name("dgrid_orchestrator_cache_entries")
                         .Help("Latents and cells held by the prefix cache.")
                         .Register(*registry_)
                         .Add({})),
      http_answers_(prometheus::BuildCounter()
                        .Name("dgrid_orchestrator_http_requests_total")
                        .Help("Answers of the HTTP gateway by route and HTTP status (its own "
                              "refusals too: bad JSON, bodies, timeouts, connection caps).")
                        .Register(*registry_)) {
  // Series that dashboards and alerts divide by exist from the start.
  for (const char* s :
       {"ok", "cancelled", "invalid", "failed", "throttled", "rejected", "abandoned"}) {
    grids_.Add({{"status", s}});
    curves_.Add({{"status", s}});
  }
  for (const char* s : {"used", "wasted", "cancelled"}) evals_.Add({{"use", s}});
  for (const char* s : {"ok", "retried", "failed", "cancelled"}) jobs_.Add({{"status", s}});
  SetGridsInFlight(0, 0);
}

void OrchestratorMetrics::SetGridsInFlight(int grids, int curve_trunks) {
  grids_in_flight_.Add({{"kind", "grid"}}).Set(grids - curve_trunks);
  grids_in_flight_.Add({{"kind", "curve"}}).Set(curve_trunks);
}

void OrchestratorMetrics::CountGrid(const std::string& status, std::optional<double> seconds) {
  grids_.Add({{"status", status}}).Increment();
  if (status == "ok" && seconds) grid_seconds_.Observe(*seconds);
}

void OrchestratorMetrics::CountCurve(const std::string& status, double seconds) {
  curves_.Add({{"status", status}}).Increment();
  if (status == "ok") curve_seconds_.Observe(seconds);
}

void OrchestratorMetrics::CountJob(const std::string& status) {
  jobs_.Add({{"status", status}}).Increment();
}

void OrchestratorMetrics::CountRetry() { retries_.Increment(); }

void OrchestratorMetrics::CountEvals(int64_t used, int64_t wasted, bool cancelled) {
  if (used > 0) evals_.Add({{"use", "used"}}).Increment(static_cast<double>(used));
  if (wasted > 0) {
    const char* use = cancelled ? "cancelled" : "wasted";
    evals_.Add({{"use", use}}).Increment(static_cast<double>(wasted));
  }
}

void OrchestratorMetrics::CountCache(int lookups, int hits) {
  if (lookups > 0) cache_lookups_.Increment(lookups);
  if (hits > 0) cache_hits_.Increment(hits);
}

void OrchestratorMetrics::SetReplicaInflight(const std::string& replica, int inflight) {
  inflight_.Add({{"replica", replica}}).Set(inflight);
}

void OrchestratorMetrics::CountHttpAnswer(const char* route, int status) {
  http_answers_.Add({{"route", route}, {"code", std::to_string(status)}}).Increment();
}

void OrchestratorMetrics::SetCache(size_t bytes, size_t entries) {
  cache_bytes_.Set(static_cast<double>(bytes));
  cache_entries_.Set(static_cast<double>(entries));
}

void OrchestratorMetrics::RemoveReplica(const std::string& replica) {
  inflight_.Remove(&inflight_.Add({{"replica", replica}}));
}

}  // namespace dgrid
