// The orchestrator's API behind any transport: authentication, admission
// (global and per-client bounds), planning and execution. The gRPC service
// and the HTTP gateway both adapt to it, so both get the same limits, token
// and behaviour.
//
// A grid is admitted first (token, limits, plan: every error a client can
// fix comes back here, before any event), then run. While it runs, its events
// wait in a bounded outbox that only the caller's thread drains: the
// executor's jobs, which hold replica leases, never wait on a client. A client
// that stops reading overflows the outbox or stalls one write past a bound,
// and its grid is cancelled, freeing its replicas (docs/ARCHITECTURE.md,
// "Slow clients and fairness").
//
//   GridService service(&pool, &executor, &metrics, limits, token);
//   Caller caller;
//   caller.client = ClientKey(context->peer());
//   ASSIGN_OR_RETURN(std::unique_ptr<AdmittedGrid> admitted, service.Admit(caller, request));
//   ASSIGN_OR_RETURN(v1::Grid grid, service.Run(*admitted, caller, sink, &cancel));
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_GRID_SERVICE_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_GRID_SERVICE_H_

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "grid_orchestrator/execute/grid_executor.h"
#include "grid_orchestrator/plan/grid_plan.h"
#include "grid_orchestrator/pool/replica_pool.h"

namespace dgrid {

class OrchestratorMetrics;

// A grid's failure as its caller should read it: DEADLINE_EXCEEDED from the
// server's own --grid_timeout_s (`limit`, earlier than the caller's deadline
// and passed at `now`) says so, since a client names a deadline as its own
// setting. Any other status (a stalled replica's says so itself) is as it is.
absl::Status NameTheServersLimit(const absl::Status& status, absl::Time now, absl::Time limit,
                                 absl::Time caller_deadline, absl::Duration grid_timeout);

struct OrchestratorLimits {
  PlanLimits plan;
  int max_concurrent_grids = 64;
  // Of those places, what decision curves' trunks may hold together: all
  // but a quarter (CurvePlaces). A waiting curve asks again every 20 ms and
  // takes a place back as soon as one comes free, so a few clients' curves
  // could otherwise hold every place for as long as they run, and refuse
  // every other client's grid.
  int CurvePlaces() const {
    const int kept = max_concurrent_grids >= 2 ? std::max(1, max_concurrent_grids / 4) : 0;
    return max_concurrent_grids - kept;
  }
  // Grids in flight from one client address.
  int max_grids_per_client = 16;
  // The longest a grid runs from its admission; a caller's earlier deadline
  // wins.
  absl::Duration default_grid_timeout = absl::Seconds(300);
  // Event bytes a grid may have waiting for its client; past it the client
  // is not reading and the grid is cancelled.
  size_t max_outbox_bytes = size_t{16} << 20;
  // How long one write to the client may block before the grid is cancelled.
  absl::Duration max_write_stall = absl::Seconds(20);
};

// Who is calling, whatever the transport.
struct Caller {
  // ClientKey of the client's address: the unit of the per-client limit.
  std::string client;
  // The "authorization" header or metadata, if any.
  std::string authorization;
  absl::Time deadline = absl::InfiniteFuture();
  // True once the client went away; polled while the grid runs.
  std::function<bool()> gone = [] { return false; };
  // Breaks the transport, so that a write blocked on a client that stopped
  // reading returns (gRPC: TryCancel). Empty where writes time out alone.
  std::function<void()> abort;
  // Bytes the transport has handed to the client so far (HTTP): a write
  // that takes long while they grow is a slow link, not a stalled client.
  // Empty where unknown (gRPC): a write's time alone counts.
  std::function<int64_t()> sent;
  // True once the transport gave up on a client reading too slowly (HTTP's
  // write floor and timeout): a client that stopped reading, as a stall.
  // Never where the watch's stall is the only such cut (gRPC).
  std::function<bool()> cut_off = [] { return false; };
  // The most bytes the transport sends in one message (gRPC's
  // --max_message_bytes, for CreateGrid and StreamGrid): a grid whose answer
  // or event would pass it is FAILED_PRECONDITION, counted failed. -1: none
  // (HTTP, and a curve's trunks, which are never sent).
  int64_t max_answer_bytes = -1;
};

class GridService;

// A grid past admission: it holds its place in the global and per-client
// limits until destroyed. One destroyed without running (an HTTP client
// gone before its answer started) is counted cancelled, as every admitted
// grid ends counted.
class AdmittedGrid {
 public:
  ~AdmittedGrid();
  const GridPlanSpec& plan() const { return plan_; }

 private:
  friend class GridService;
  AdmittedGrid(GridService* service, std::string client, GridPlanSpec plan)
      : service_(service), client_(std::move(client)), plan_(std::move(plan)) {}
  GridService* const service_;
  const std::string client_;
  const GridPlanSpec plan_;  // batch_work: a curve's trunk, not timed
  const absl::Time admitted_ = absl::Now();
  mutable bool counted_ = false;  // by Run, or by GridService::Drop
};

class GridService {
 public:
  // `auth_token`, when not empty, must come as "Bearer <token>" (the scheme
  // in any case, RFC 9110).
  GridService(ReplicaPool* pool, GridExecutor* executor, OrchestratorMetrics* metrics,
              OrchestratorLimits limits, std::string auth_token);

  // Delivers one event to the client, on the caller's thread; may block.
  // False: the client is gone.
  using ClientSink = std::function<bool(const v1::GridEvent&)>;

  absl::Status Authenticate(const Caller& caller) const;
  // How a refusal counts in dgrid_orchestrator_grids_total: kCount, by its
  // Outcome ("rejected" for RESOURCE_EXHAUSTED, "invalid" for the caller's
  // mistakes); kCallerWaits, none for RESOURCE_EXHAUSTED or UNAVAILABLE,
  // since the caller waits and asks again (a curve's later trunks, at the
  // client's limit or while a replica restarts), and counts the refusal it
  // gives up on (CountRefusal).
  enum class Refusal { kCount, kCallerWaits };
  // A model version a grid must be planned on, whatever the pool's first
  // replica serves now: a curve's trunks keep the version of its first.
  struct ModelPin {
    std::string model;
    std::string version;
  };
  // How a grid is admitted; a plain grid takes the defaults.
  struct AdmitOptions {
    GridImages images = GridImages::kFigure;  // see GridImages
    Refusal refusal = Refusal::kCount;
    // A decision curve's trunk: counted in dgrid_orchestrator_grids_total
    // but not timed as a grid (it waits for its siblings by design).
    bool curve_trunk = false;
    // Not null: planned on this version (UNAVAILABLE when no replica serves
    // it any more).
    const ModelPin* pin = nullptr;
  };
  // Authenticates, admits and plans: UNAUTHENTICATED, RESOURCE_EXHAUSTED,
  // INVALID_ARGUMENT or UNAVAILABLE (no replica answers, or none serves the
  // pinned version) before any event is sent.
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> Admit(const Caller& caller,
                                                      const v1::GridRequest& request,
                                                      const AdmitOptions& options);
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> Admit(const Caller& caller,
                                                      const v1::GridRequest& request) {
    return Admit(caller, request, AdmitOptions());
  }
  // Runs an admitted grid. `sink` gets its events on this thread, and the
  // finished grid too when `stream_grid` (so that the last write is watched
  // for stalls like the others); the grid is also returned.
  absl::StatusOr<v1::Grid> Run(const AdmittedGrid& grid, const Caller& caller,
                               const ClientSink& sink, GridCancel* cancel, bool stream_grid);
  // Admit, then Run.
  absl::StatusOr<v1::Grid> RunGrid(const Caller& caller, const v1::GridRequest& request,
                                   const ClientSink& sink, GridCancel* cancel, bool stream_grid);
  absl::StatusOr<v1::ListModelsResponse> ListModels(const Caller& caller);
  // Counts a refusal that Admit did not (Refusal::kCallerWaits), once the
  // caller stops waiting.
  void CountRefusal(const absl::Status& status);
  // Ends an admitted grid that will not run, counted as `why`.
  void Drop(std::unique_ptr<AdmittedGrid> grid, const absl::Status& why);
  // How long one write to a client may block (OrchestratorLimits).
  absl::Duration max_write_stall() const { return limits_.max_write_stall; }

 private:
  friend class AdmittedGrid;
  // The request's model (empty: the first one served), from any healthy
  // replica that serves it (ReplicaPool::Models).
  absl::StatusOr<v1::ModelInfo> ChooseModel(const v1::GridRequest& request);
  // `deadline`: the caller's, which bounds the Tokenize call of a text model.
  absl::StatusOr<GridPlanSpec> Plan(const v1::GridRequest& request, const ModelPin* pin,
                                    absl::Time deadline);
  // A grid's places: in the service-wide count, the client's, and for a
  // curve's trunk the curves' count.
  void Release(const std::string& client, bool curve_trunk);

  ReplicaPool* const pool_;
  GridExecutor* const executor_;
  OrchestratorMetrics* const metrics_;
  const OrchestratorLimits limits_;
  const std::string auth_token_;
  std::mutex clients_mu_;  // std, not absl: TSan sees it
  int grids_in_flight_ = 0;                      // guarded by clients_mu_
  int curve_grids_in_flight_ = 0;                // guarded by clients_mu_
  std::map<std::string, int> grids_per_client_;  // guarded by clients_mu_
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_GRID_SERVICE_H_
