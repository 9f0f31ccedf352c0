// Decision curves behind any transport: the gRPC service and the HTTP
// gateway both adapt to it. A curve runs N grids of one request (trunk t
// with seed grid.seed + t) through GridService, so each is admitted, fair to
// other clients, cached and cancelled like any grid; several run at once so
// that the replicas' batchers get parallel work. Each finished grid is
// judged (execute/grid_judge.h), and the statistics and the figure come from
// assemble/ (decision_curve.h, curve_figure.h).
//
//   CurveService curves(&grid_service, &pool, CurveLimits{});
//   ASSIGN_OR_RETURN(std::unique_ptr<AdmittedCurve> admitted, curves.Admit(caller, request));
//   ASSIGN_OR_RETURN(v1::CurveResult curve, curves.Run(*admitted, caller, sink));
//
// Every error a client can fix comes back before the first event:
// UNAUTHENTICATED, INVALID_ARGUMENT naming the field ("trunks",
// "grid.branch_steps"), RESOURCE_EXHAUSTED. The client going away cancels
// the grids still running.
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_CURVE_SERVICE_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_CURVE_SERVICE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grid_orchestrator/pool/replica_pool.h"
#include "grid_orchestrator/server/grid_service.h"

namespace dgrid {

struct CurveLimits {
  // Trunks (grids) one curve may ask for.
  int max_trunks = 1000;
  // Grids of one curve in flight at once; each counts against the grid
  // limits like any other.
  int max_concurrent_grids = 8;
  // With no trunk finished for this long, the progress so far goes out
  // again: a proxy between client and server (an Ingress with a read
  // timeout) must not take a slow curve's silence for a dead stream.
  absl::Duration keepalive = absl::Seconds(15);
  // A running curve that holds no grid waits this long at most for another
  // client's grid to free a place, then the trunk's refusal stands (the
  // caller's deadline ends the wait sooner, as DEADLINE_EXCEEDED). Each grid
  // ends within the grid timeout: OrchestratorServer raises this to that
  // timeout when it is longer.
  absl::Duration max_place_wait = absl::Minutes(5);
};

class CurveService;

// A curve past admission: its request is valid and its first trunk's grid is
// admitted (planned, and holding its place in the grid limits). One
// destroyed without running (an HTTP client gone before its answer
// started) is counted cancelled, its first grid too.
class AdmittedCurve {
 public:
  ~AdmittedCurve();
  const GridPlanSpec& plan() const { return plan_; }

 private:
  friend class CurveService;
  CurveService* service_ = nullptr;  // set once admitted; null once counted
  v1::CurveRequest request_;
  std::unique_ptr<AdmittedGrid> first_;
  GridPlanSpec plan_;
  std::vector<v1::JudgeHeadInfo> heads_;  // the model's judge heads
};

class CurveService {
 public:
  // `metrics` may be null.
  CurveService(GridService* grids, ReplicaPool* pool, OrchestratorMetrics* metrics,
               CurveLimits limits);

  // Delivers one event to the client, on the caller's thread; may block.
  // False: the client is gone.
  using CurveSink = std::function<bool(const v1::CurveEvent&)>;

  // Authenticates, checks the request and admits its first grid:
  // UNAUTHENTICATED, INVALID_ARGUMENT or RESOURCE_EXHAUSTED before any event.
  absl::StatusOr<std::unique_ptr<AdmittedCurve>> Admit(const Caller& caller,
                                                       const v1::CurveRequest& request);
  // Runs an admitted curve (once): the plan, a progress event per finished
  // trunk and the curve go to `sink`; the curve is also returned.
  absl::StatusOr<v1::CurveResult> Run(AdmittedCurve& curve, const Caller& caller,
                                      const CurveSink& sink);
  // Admit, then Run.
  absl::StatusOr<v1::CurveResult> RunCurve(const Caller& caller, const v1::CurveRequest& request,
                                           const CurveSink& sink);
  // Counts a curve refused before Admit (a caller without the token, a
  // request that does not parse) as Admit counts its refusals.
  void CountRefusal(const absl::Status& status);

 private:
  class CurveRun;

  absl::StatusOr<std::unique_ptr<AdmittedCurve>> AdmitUncounted(const Caller& caller,
                                                                const v1::CurveRequest& request);
  // Run, with *stopped_reading set when a write to the client stalled
  // (counted "abandoned", as for a grid; a failed write is the client
  // cancelling or hanging up, "cancelled").
  absl::StatusOr<v1::CurveResult> RunUncounted(AdmittedCurve& curve, const Caller& caller,
                                               const CurveSink& sink, bool* stopped_reading);

  GridService* const grids_;
  ReplicaPool* const pool_;
  OrchestratorMetrics* const metrics_;
  const CurveLimits limits_;
};

// The curve plot's title: the model, the prompt and its switch (with the
// switch's negative prompt where it differs from the grid's), the trunks:
//   emoji · "rocket" → "rocket", negative “red apple” · 100 trunks
std::string CurveTitle(const GridPlanSpec& plan, int trunks);
// Its subtitle: how the trunks were drawn (the sampler where not DDIM, the
// grid's negative prompt) and which seeds:
//   50 steps · Euler ancestral · eta 1 · guidance 4 · negative “blurry” ·
//   6 branches per row · seeds 1000…1099
std::string CurveSubtitle(const GridPlanSpec& plan, uint64_t first_seed, int trunks);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_CURVE_SERVICE_H_
