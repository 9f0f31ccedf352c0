#include "grid_orchestrator/server/curve_service.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/short_text.h"
#include "common/start_thread.h"
#include "common/status_macros.h"
#include "grid_orchestrator/assemble/curve_figure.h"
#include "grid_orchestrator/assemble/decision_curve.h"
#include "grid_orchestrator/execute/grid_judge.h"
#include "grid_orchestrator/server/client_watch.h"

namespace dgrid {
namespace {

// How often the client's thread looks for a client that went away while it
// waits for trunks.
constexpr absl::Duration kClientPoll = absl::Milliseconds(25);
// How often a trunk asks again for a grid place that other clients' grids
// hold (nothing tells the curve when one of theirs ends).
constexpr absl::Duration kPlaceRetry = absl::Milliseconds(20);
// A later trunk whose planning fails as UNAVAILABLE is planned again every
// kReplanRetry, for kReplanWait at most.
constexpr absl::Duration kReplanRetry = absl::Milliseconds(250);
constexpr absl::Duration kReplanWait = absl::Seconds(10);

absl::Status CheckCurveRequest(const v1::CurveRequest& request, const CurveLimits& limits) {
  if (request.trunks() < 2 || request.trunks() > limits.max_trunks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trunks must be in [2, ", limits.max_trunks, "] (a standard error needs 2), got ",
        request.trunks()));
  }
  // Trunk t has seed + t: past the last seed they would wrap round to 0.
  if (request.grid().seed() > std::numeric_limits<uint64_t>::max() -
                                  static_cast<uint64_t>(request.trunks() - 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grid.seed: trunk t has seed + t, so with ", request.trunks(),
        " trunks it must be at most ",
        std::numeric_limits<uint64_t>::max() - static_cast<uint64_t>(request.trunks() - 1),
        ", got ", request.grid().seed()));
  }
  if (request.grid().has_trunk()) {
    return absl::InvalidArgumentError(
        "grid.trunk: a curve draws its trunks from grid.seed (trunk t has seed + t); leave it "
        "unset");
  }
  return absl::OkStatus();
}

v1::GridRequest TrunkRequest(const v1::CurveRequest& request, int trunk) {
  v1::GridRequest grid = request.grid();
  grid.set_seed(grid.seed() + static_cast<uint64_t>(trunk));
  return grid;
}

// A grid request's errors name its fields; in a curve they sit under "grid.".
absl::Status UnderGrid(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  return absl::InvalidArgumentError(absl::StrCat("grid.", status.message()));
}

// The judge heads of the plan's model version, as a replica serving it
// describes it (during a rolling update the pool's first replica may serve
// another version).
absl::StatusOr<std::vector<v1::JudgeHeadInfo>> JudgeHeads(ReplicaPool* pool,
                                                           const GridPlanSpec& plan) {
  absl::StatusOr<v1::ModelInfo> model = pool->Model(plan.model, plan.model_version);
  if (!model.ok()) return model.status();
  return std::vector<v1::JudgeHeadInfo>(model->judge().heads().begin(),
                                        model->judge().heads().end());
}

v1::Estimate ToProto(const Estimate& e) {
  v1::Estimate out;
  out.set_mean(e.mean);
  out.set_standard_error(e.standard_error);
  return out;
}

v1::CurveTrunk TrunkLabels(const TrunkObservation& observed, uint64_t seed) {
  v1::CurveTrunk out;
  out.set_seed(seed);
  for (size_t h = 0; h < observed.trunk_labels.size(); ++h) {
    v1::CurveTrunkLabels* head = out.add_heads();
    head->set_trunk(observed.trunk_labels[h]);
    for (const auto& row : observed.branch_labels) {
      v1::CurveRowLabels* labels = head->add_rows();
      for (const std::vector<int>& cell : row) labels->add_branches(cell[h]);
    }
  }
  return out;
}

}  // namespace

std::string CurveTitle(const GridPlanSpec& plan, int trunks) {
  std::string prompt = plan.prompt.empty() ? "unprompted" : absl::StrCat("\"", plan.prompt, "\"");
  if (!plan.switch_prompt.empty()) {
    absl::StrAppend(
        &prompt, " → \"", plan.switch_prompt, "\"",
        SwitchedNegativeNote(plan.switch_negative_prompt.empty() ? plan.negative_prompt
                                                                 : plan.switch_negative_prompt,
                             plan.negative_prompt, 60),
        plan.switch_unseen ? " (changes nothing the model reads)" : "");
  }
  return absl::StrCat(plan.model, " · ", prompt, " · ", trunks, " trunks");
}

std::string CurveSubtitle(const GridPlanSpec& plan, uint64_t first_seed, int trunks) {
  std::string subtitle = absl::StrCat(plan.steps, " steps");
  if (plan.spacing != Spacing::kLeading) {
    absl::StrAppend(&subtitle, " (", SpacingName(plan.spacing), ")");
  }
  if (plan.sampler == Sampler::kEulerAncestral) absl::StrAppend(&subtitle, " · Euler ancestral");
  absl::StrAppend(&subtitle, absl::StrFormat(" · eta %g · guidance %g", plan.eta, plan.guidance));
  if (!plan.negative_prompt.empty()) {
    absl::StrAppend(&subtitle, " · negative \xE2\x80\x9C", CutText(plan.negative_prompt, 60),
                    "\xE2\x80\x9D");
  }
  absl::StrAppend(&subtitle, " · ",
                  plan.trunk_noise      ? "the trunk's noise"
                  : plan.branches == 1 ? "1 branch per row"
                                       : absl::StrCat(plan.branches, " branches per row"));
  return absl::StrCat(subtitle, " · seeds ", first_seed, "…",
                      first_seed + static_cast<uint64_t>(trunks) - 1);
}

// One curve: the trunks' grids on worker threads, each grid judged on the
// curve's judging thread once drawn (the worker goes on to its next trunk,
// so no grid place waits for a judge), progress queued for the client's
// thread, which alone writes to the client.
class CurveService::CurveRun {
 public:
  CurveRun(CurveService* service, const Caller& caller, const v1::CurveRequest& request,
           std::vector<int> labels_per_head)
      : service_(service),
        caller_(caller),
        request_(request),
        labels_per_head_(std::move(labels_per_head)),
        observations_(request.trunks()) {}

  // Runs every trunk (trunk 0 already admitted), delivering progress through
  // `deliver`; the observations in trunk order.
  absl::StatusOr<std::vector<TrunkObservation>> Execute(
      std::unique_ptr<AdmittedGrid> first, const std::function<bool(const v1::CurveEvent&)>& deliver) {
    // Every trunk runs on the first one's model version: during a rolling
    // update the pool's first replica may serve a newer one, and a curve
    // over two versions would be no model's curve.
    pin_ = {first->plan().model, first->plan().model_version};
    first_ = std::move(first);
    const int workers = std::min(service_->limits_.max_concurrent_grids, request_.trunks());
    workers_left_ = workers;
    max_drawn_ = 2 * workers;
    judging_ = true;
    std::vector<std::thread> threads;
    absl::StatusOr<std::thread> judge = StartThread([this] { JudgeDrawnGrids(); }, "a curve's judge");
    absl::Status started = judge.status();
    if (judge.ok()) threads.push_back(std::move(*judge));
    int running = 0;
    while (started.ok() && running < workers) {
      absl::StatusOr<std::thread> worker = StartThread(
          [this] {
            Work();
            std::lock_guard<std::mutex> lock(mu_);
            --workers_left_;
            changed_.notify_all();
          },
          "a curve's worker");
      started = worker.status();
      if (worker.ok()) {
        threads.push_back(std::move(*worker));
        ++running;
      }
    }
    if (!started.ok()) {
      // Out of threads (a pids limit): the curve fails, and what did start
      // stops.
      {
        std::lock_guard<std::mutex> lock(mu_);
        workers_left_ -= workers - running;
        if (!judge.ok()) judging_ = false;
      }
      Fail(started);
    }
    DeliverProgress(deliver);
    for (std::thread& t : threads) t.join();
    if (first_) {
      // Trunk 0's grid that no worker took (none started): counted as the
      // curve's failure, not as a client gone.
      const absl::Status why = status_.ok() ? absl::InternalError("trunk 0 never ran") : status_;
      service_->grids_->Drop(std::move(first_), why);
    }
    if (!status_.ok()) return status_;
    return std::move(observations_);
  }

  int64_t model_evals() const { return model_evals_; }
  int cache_hits() const { return cache_hits_; }
  int judged_images() const { return judged_images_; }

 private:
  // Worker: takes the next trunk until none is left or the curve failed.
  void Work() {
    while (true) {
      int trunk;
      std::unique_ptr<AdmittedGrid> admitted;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (next_ >= request_.trunks() || !status_.ok()) return;
        trunk = next_++;
        if (trunk == 0) {
          // Counted as held at once: a worker refused meanwhile must see
          // that a place will come free.
          admitted = std::move(first_);
          ++holding_;
        }
      }
      absl::Status s = RunTrunk(trunk, std::move(admitted));
      if (!s.ok()) {
        Fail(s);
        return;
      }
    }
  }

  // Draws trunk `trunk`'s grid and queues it for the judge.
  absl::Status RunTrunk(int trunk, std::unique_ptr<AdmittedGrid> admitted) {
    if (!admitted) {  // trunk 0 comes admitted, and counted in holding_
      absl::StatusOr<std::unique_ptr<AdmittedGrid>> a = AdmitWhenFree(trunk);
      if (!a.ok()) return a.status();
      admitted = std::move(*a);
    }
    absl::StatusOr<v1::Grid> grid = service_->grids_->Run(
        *admitted, caller_, [](const v1::GridEvent&) { return true; }, &cancel_,
        /*stream_grid=*/false);
    const GridPlanSpec plan = admitted->plan();
    admitted.reset();  // its place in the grid limits is free again
    std::unique_lock<std::mutex> lock(mu_);
    --holding_;
    ++released_;
    changed_.notify_all();
    if (!grid.ok()) return AtTrunk(trunk, grid.status());
    // Grids served from the cache come faster than the judge takes them:
    // at most max_drawn_ wait for it (each with every cell's PNG), and a
    // worker holds its grid, and no grid place, until there is room.
    changed_.wait(lock, [&] { return drawn_.size() < max_drawn_ || !status_.ok(); });
    if (!status_.ok()) return absl::OkStatus();  // the curve failed: nobody judges it
    drawn_.push_back({trunk, plan, std::move(*grid)});
    changed_.notify_all();
    return absl::OkStatus();
  }

  // The judging thread: judges drawn grids in the order they were drawn
  // until every worker has stopped and none is left, or the curve failed.
  void JudgeDrawnGrids() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      changed_.wait(lock, [&] { return !drawn_.empty() || workers_left_ == 0 || !status_.ok(); });
      if (!status_.ok() || drawn_.empty()) break;
      Drawn drawn = std::move(drawn_.front());
      drawn_.pop_front();
      changed_.notify_all();  // a worker may wait for room in drawn_
      lock.unlock();
      absl::StatusOr<TrunkObservation> observed =
          JudgeGrid(service_->pool_, service_->metrics_, drawn.plan, drawn.grid, labels_per_head_,
                    caller_.deadline, kJudgeCallTimeout, &cancel_);
      if (!observed.ok()) {
        Fail(AtTrunk(drawn.trunk, observed.status()));
        lock.lock();
        break;
      }
      lock.lock();
      Observed(drawn.trunk, drawn.grid, std::move(*observed));
    }
    judging_ = false;
    changed_.notify_all();
  }

  // Under mu_: trunk `trunk`'s grid and its judged labels are in.
  void Observed(int trunk, const v1::Grid& grid, TrunkObservation observed) {
    observations_[trunk] = std::move(observed);
    model_evals_ += grid.model_evals();
    cache_hits_ += grid.cache_hits();
    if (!labels_per_head_.empty()) judged_images_ += 1 + grid.plan().branches() * grid.rows_size();
    ++done_;
    progress_.push_back(Progress());
  }

  // Under mu_: the progress so far.
  v1::CurveEvent Progress() const {
    v1::CurveEvent event;
    v1::CurveProgress* p = event.mutable_progress();
    p->set_trunks_done(done_);
    p->set_trunks(request_.trunks());
    p->set_seconds(absl::ToDoubleSeconds(absl::Now() - started_));
    p->set_model_evals(model_evals_);
    p->set_cache_hits(cache_hits_);
    return event;
  }

  absl::Status AtTrunk(int trunk, const absl::Status& status) const {
    return absl::Status(status.code(),
                        absl::StrCat("trunk ", trunk, " (seed ", TrunkRequest(request_, trunk).seed(),
                                     "): ", status.message()));
  }

  // Trunks after the first are admitted as their turn comes. When a grid
  // limit is full (the client's or the service's, with other grids or this
  // curve's own), the trunk waits for a place rather than fail: for one of
  // this curve's grids to be drawn, or, when the curve holds none, for other
  // grids to end (each is bounded by the grid timeout), asking again every
  // kPlaceRetry. Refused at the start, a curve fails at once (Admit); once
  // it runs, the load of other clients slows it but does not throw its
  // trunks away. It stops waiting when the curve fails or is cancelled, at
  // the caller's deadline (DEADLINE_EXCEEDED, counted as cancelled), or
  // after CurveLimits::max_place_wait without a place (the refusal: the
  // service is overloaded). On success the caller holds the grid (counted
  // in holding_).
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> AdmitWhenFree(int trunk) {
    // Set when others hold every place and the curve none; cleared while
    // the curve holds a grid.
    absl::Time give_up = absl::InfiniteFuture();
    // Since when planning has failed as UNAVAILABLE, one refusal after another.
    absl::Time unavailable_since = absl::InfiniteFuture();
    const v1::GridRequest request = TrunkRequest(request_, trunk);
    while (true) {
      int before;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++admitting_;
        before = released_;
      }
      absl::StatusOr<std::unique_ptr<AdmittedGrid>> admitted =
          service_->grids_->Admit(caller_, request,
                                  {GridImages::kCellsOnly, GridService::Refusal::kCallerWaits,
                                   /*curve_trunk=*/true, &pin_});
      std::unique_lock<std::mutex> lock(mu_);
      --admitting_;
      changed_.notify_all();
      if (admitted.ok()) ++holding_;
      const absl::StatusCode code = admitted.status().code();
      if (code == absl::StatusCode::kUnavailable) {
        // Replicas that cannot plan the trunk for a moment (a restart, a
        // Tokenize that failed) are asked again for kReplanWait, the trunks
        // done kept: one UNAVAILABLE threw them away. Not for longer: a
        // version no longer served does not come back.
        const absl::Time now = absl::Now();
        if (unavailable_since == absl::InfiniteFuture()) unavailable_since = now;
        if (!status_.ok()) {
          service_->grids_->CountRefusal(absl::CancelledError());
          return status_;
        }
        if (now - unavailable_since >= kReplanWait || now >= caller_.deadline) {
          service_->grids_->CountRefusal(admitted.status());
          return absl::UnavailableError(
              absl::StrCat(admitted.status().message(), " (asked again for ",
                           absl::FormatDuration(now - unavailable_since), ")"));
        }
        changed_.wait_for(lock,
                          absl::ToChronoNanoseconds(std::min(kReplanRetry, caller_.deadline - now)),
                          [&] { return !status_.ok(); });
        continue;
      }
      unavailable_since = absl::InfiniteFuture();
      // A full service: the trunk waits for a place.
      if (admitted.ok() || code != absl::StatusCode::kResourceExhausted) return admitted;
      const absl::Time now = absl::Now();
      if (now >= caller_.deadline) {
        // The caller's own deadline: its grid counts as cancelled.
        service_->grids_->CountRefusal(absl::CancelledError());
        return absl::DeadlineExceededError(absl::StrCat(
            "no grid place came free before the caller's deadline (",
            admitted.status().message(), ")"));
      }
      if (holding_ == 0 && admitting_ == 0) {
        // None of this curve's grids will free a place: others' will.
        if (give_up == absl::InfiniteFuture()) give_up = now + service_->limits_.max_place_wait;
        if (now >= give_up) {
          // The refusal stands, and counts as one.
          service_->grids_->CountRefusal(admitted.status());
          const std::string why =
              absl::StrCat(admitted.status().message(), " (waited ",
                           absl::FormatDuration(service_->limits_.max_place_wait), " for a place)");
          return IsThrottled(admitted.status()) ? ThrottledError(why)
                                                : absl::ResourceExhaustedError(why);
        }
        changed_.wait_for(lock,
                          absl::ToChronoNanoseconds(std::min(kPlaceRetry, caller_.deadline - now)),
                          [&] { return !status_.ok(); });
      } else {
        // While the curve holds a grid it moves: the bound starts anew. (Not
        // while a sibling is only admitting: it may be refused too.)
        if (holding_ > 0) give_up = absl::InfiniteFuture();
        changed_.wait(lock, [&] {
          return released_ != before || (holding_ == 0 && admitting_ == 0) || !status_.ok();
        });
      }
      if (!status_.ok()) {
        // The curve failed while this grid waited: it stopped waiting, and
        // its last refusal (a kCallerWaits one, not counted yet) counts now.
        service_->grids_->CountRefusal(absl::CancelledError());
        return status_;
      }
    }
  }

  void Fail(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      SetStatus(status);
      changed_.notify_all();
    }
    cancel_.Cancel();
  }

  // Under mu_: the curve's outcome is its first failure. A grid that fails
  // cancels the curve's other grids and its judge at once (one GridCancel),
  // and those may report their cancellation before the failed trunk's
  // worker reports the cause: the cause replaces a cancellation the client
  // did not ask for.
  void SetStatus(const absl::Status& status) {
    const bool cancelled_by_us =
        status_.code() == absl::StatusCode::kCancelled && !client_gone_ && !caller_.gone();
    if (status_.ok() || (cancelled_by_us && status.code() != absl::StatusCode::kCancelled)) {
      status_ = status;
    }
  }

  // Under mu_: the client went away; nothing it would read matters now.
  void ClientGone() {
    client_gone_ = true;
    if (status_.ok()) status_ = absl::CancelledError("curve cancelled: the client went away");
    changed_.notify_all();
  }

  // The client's thread: writes progress as trunks finish, and cancels the
  // curve when the client goes away.
  void DeliverProgress(const std::function<bool(const v1::CurveEvent&)>& deliver) {
    std::unique_lock<std::mutex> lock(mu_);
    absl::Time sent = absl::Now();
    while (true) {
      changed_.wait_for(lock, absl::ToChronoNanoseconds(kClientPoll),
                        [&] { return !progress_.empty() || Finished(); });
      if (progress_.empty() && !Finished() && absl::Now() - sent >= service_->limits_.keepalive) {
        progress_.push_back(Progress());
      }
      if (!progress_.empty()) sent = absl::Now();
      while (!progress_.empty()) {
        v1::CurveEvent event = std::move(progress_.front());
        progress_.pop_front();
        lock.unlock();
        const bool written = deliver(event);
        lock.lock();
        if (!written) ClientGone();
      }
      if (caller_.gone()) ClientGone();
      if (!status_.ok()) cancel_.Cancel();
      if (Finished()) return;
    }
  }

  // Under mu_: every worker and the judge have stopped and their progress
  // is out.
  bool Finished() const { return workers_left_ == 0 && !judging_ && progress_.empty(); }

  struct Drawn {
    int trunk;
    GridPlanSpec plan;
    v1::Grid grid;
  };

  CurveService* const service_;
  const Caller& caller_;
  const v1::CurveRequest& request_;
  const std::vector<int> labels_per_head_;  // the judge's heads; none: no judge
  GridService::ModelPin pin_;  // set before the workers start
  const absl::Time started_ = absl::Now();
  GridCancel cancel_;  // shared by the curve's grids: one failure stops them all
  // std primitives, not absl's: TSan sees them.
  std::mutex mu_;
  std::condition_variable changed_;
  std::unique_ptr<AdmittedGrid> first_;          // guarded by mu_
  int next_ = 0;                                 // guarded by mu_
  int workers_left_ = 0;                         // guarded by mu_
  bool judging_ = false;                         // guarded by mu_
  bool client_gone_ = false;                     // guarded by mu_
  std::deque<Drawn> drawn_;                      // guarded by mu_, to judge
  size_t max_drawn_ = 0;                         // set before the workers start
  // Grids of this curve admitted and not yet released, and admissions under
  // way: while either is above 0, a refused admission may succeed later.
  int holding_ = 0;                              // guarded by mu_
  int admitting_ = 0;                            // guarded by mu_
  int released_ = 0;  // grids drawn (or failed) and let go; guarded by mu_
  int done_ = 0;                                 // guarded by mu_
  absl::Status status_;                          // guarded by mu_
  std::vector<TrunkObservation> observations_;   // guarded by mu_
  std::deque<v1::CurveEvent> progress_;          // guarded by mu_
  int64_t model_evals_ = 0;                      // guarded by mu_
  int cache_hits_ = 0;                           // guarded by mu_
  int judged_images_ = 0;                        // guarded by mu_
};

CurveService::CurveService(GridService* grids, ReplicaPool* pool, OrchestratorMetrics* metrics,
                           CurveLimits limits)
    : grids_(grids), pool_(pool), metrics_(metrics), limits_(limits) {}

absl::StatusOr<std::unique_ptr<AdmittedCurve>> CurveService::Admit(
    const Caller& caller, const v1::CurveRequest& request) {
  absl::StatusOr<std::unique_ptr<AdmittedCurve>> curve = AdmitUncounted(caller, request);
  // The caller's own deadline, passed while planning, counts cancelled, as
  // its first grid did (GridService::Admit).
  if (!curve.ok() && metrics_) {
    metrics_->CountCurve(Outcome(curve.status(), absl::Now() >= caller.deadline), 0);
  }
  return curve;
}

AdmittedCurve::~AdmittedCurve() {
  if (service_) service_->CountRefusal(absl::CancelledError("the curve never ran"));
}

void CurveService::CountRefusal(const absl::Status& status) {
  if (metrics_) metrics_->CountCurve(Outcome(status), 0);
}

absl::StatusOr<std::unique_ptr<AdmittedCurve>> CurveService::AdmitUncounted(
    const Caller& caller, const v1::CurveRequest& request) {
  RETURN_IF_ERROR(grids_->Authenticate(caller));
  RETURN_IF_ERROR(CheckCurveRequest(request, limits_));
  auto curve = std::make_unique<AdmittedCurve>();
  curve->request_ = request;
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> first =
      grids_->Admit(caller, TrunkRequest(request, 0),
                    {GridImages::kCellsOnly, GridService::Refusal::kCount, /*curve_trunk=*/true});
  if (!first.ok()) return UnderGrid(first.status());
  curve->first_ = std::move(*first);
  curve->plan_ = curve->first_->plan();
  absl::StatusOr<std::vector<v1::JudgeHeadInfo>> heads = JudgeHeads(pool_, curve->plan_);
  if (!heads.ok()) {
    grids_->Drop(std::move(curve->first_), heads.status());
    return heads.status();
  }
  curve->heads_ = std::move(*heads);
  curve->service_ = this;
  return curve;
}

absl::StatusOr<v1::CurveResult> CurveService::RunCurve(const Caller& caller,
                                                       const v1::CurveRequest& request,
                                                       const CurveSink& sink) {
  ASSIGN_OR_RETURN(std::unique_ptr<AdmittedCurve> curve, Admit(caller, request));
  return Run(*curve, caller, sink);
}

absl::StatusOr<v1::CurveResult> CurveService::Run(AdmittedCurve& curve, const Caller& caller,
                                                  const CurveSink& sink) {
  curve.service_ = nullptr;  // counted below
  bool stopped_reading = false;
  absl::StatusOr<v1::CurveResult> result = RunUncounted(curve, caller, sink, &stopped_reading);
  if (curve.first_) {
    // Trunk 0's grid, admitted and never run (the client gone before the
    // plan went out): counted as a grid stream's would be.
    const absl::Status why =
        result.ok() ? absl::InternalError("curve ended before trunk 0 ran") : result.status();
    grids_->Drop(std::move(curve.first_), why);
  }
  if (metrics_) {
    // Only a finished curve is timed: its own seconds.
    metrics_->CountCurve(
        stopped_reading ? "abandoned" : RunOutcome(result.status(), absl::Now() >= caller.deadline),
        result.ok() ? result->seconds() : 0);
  }
  return result;
}

absl::StatusOr<v1::CurveResult> CurveService::RunUncounted(AdmittedCurve& curve,
                                                           const Caller& caller,
                                                           const CurveSink& sink,
                                                           bool* stopped_reading) {
  const absl::Time started = absl::Now();
  if (!curve.first_) return absl::FailedPreconditionError("this curve has run already");
  // A client that stops reading: a write blocked past max_write_stall breaks
  // the transport (gRPC: TryCancel), as for a grid, else this thread would
  // wait for ever on the curve's last event.
  GridCancel unused;  // the curve's grids have their own
  ASSIGN_OR_RETURN(std::unique_ptr<ClientWatch> watch,
                   ClientWatch::Start(caller, grids_->max_write_stall(), &unused));
  const CurveSink watched = [&](const v1::CurveEvent& event) {
    watch->WriteStarts();
    const bool written = sink(event);
    watch->WriteEnds();
    // A blocked write, or one the transport gave up on, is a client that
    // stopped reading, as a grid's "abandoned"; another failed write a
    // client that cancelled or hung up.
    if (watch->stalled() || (!written && caller.cut_off())) {
      *stopped_reading = true;
    }
    return written;
  };
  auto abandoned = [&] {
    if (watch->stalled()) {
      return absl::CancelledError(
          absl::StrCat("curve cancelled: a write to the client blocked for more than ",
                       absl::FormatDuration(grids_->max_write_stall())));
    }
    return *stopped_reading
               ? absl::CancelledError("curve cancelled: the client read its stream too slowly")
               : absl::CancelledError("curve cancelled: the client went away");
  };
  const v1::CurveRequest& request = curve.request_;
  const GridPlanSpec& plan = curve.plan_;
  const std::vector<v1::JudgeHeadInfo>* heads = &curve.heads_;
  v1::CurveResult result;
  PlanToProto(plan, result.mutable_plan());
  v1::CurveEvent plan_event;
  *plan_event.mutable_plan() = result.plan();
  if (!watched(plan_event)) return abandoned();

  std::vector<int> labels_per_head;
  for (const v1::JudgeHeadInfo& head : *heads) labels_per_head.push_back(head.labels_size());
  CurveRun run(this, caller, request, std::move(labels_per_head));
  CurveObservations observations;
  observations.heads = static_cast<int>(heads->size());
  for (const PlannedRow& row : plan.rows) observations.branch_steps.push_back(row.branch_step);
  absl::StatusOr<std::vector<TrunkObservation>> trunks =
      run.Execute(std::move(curve.first_), watched);
  if (!trunks.ok()) return watch->stalled() || *stopped_reading ? abandoned() : trunks.status();
  observations.trunks = std::move(*trunks);
  absl::StatusOr<CurveStatistics> statistics = ComputeDecisionCurve(observations);
  if (!statistics.ok()) return absl::InternalError(statistics.status().message());

  result.set_trunks(request.trunks());
  for (size_t r = 0; r < plan.rows.size(); ++r) {
    v1::CurveRow* row = result.add_rows();
    row->set_branch_step(plan.rows[r].branch_step);
    row->set_timestep(plan.rows[r].timestep);
    // One branch per row has no pair to compare: unset, not a 0 ± 0.
    if (plan.branches >= 2) *row->mutable_divergence() = ToProto(statistics->divergence[r]);
    *row->mutable_divergence_to_trunk() = ToProto(statistics->divergence_to_trunk[r]);
  }
  for (size_t h = 0; h < heads->size(); ++h) {
    const HeadCurveStatistics& s = statistics->heads[h];
    v1::HeadCurve* head = result.add_heads();
    head->set_head((*heads)[h].name());
    *head->mutable_labels() = (*heads)[h].labels();
    for (const Estimate& e : s.p_differs) *head->add_p_differs() = ToProto(e);
    for (const Interval& i : s.p_differs_95) {
      v1::Interval* out = head->add_p_differs_95();
      out->set_lo(i.lo);
      out->set_hi(i.hi);
    }
    head->set_half_found(s.half_step.found);
    head->set_half_step(s.half_step.value);
    head->set_half_step_standard_error(s.half_step.standard_error);
    head->set_half_step_lo(s.half_step.lo);
    head->set_half_step_hi(s.half_step.hi);
    head->set_half_step_hi_after_last_row(s.half_step.hi_after_last_row);
    head->set_half_found_fraction(s.half_step.found_fraction);
  }
  if (!heads->empty()) {
    for (size_t t = 0; t < observations.trunks.size(); ++t) {
      *result.add_trunk_labels() = TrunkLabels(observations.trunks[t], request.grid().seed() + t);
    }
  }
  CurveFigure figure;
  figure.title = CurveTitle(plan, request.trunks());
  figure.subtitle = CurveSubtitle(plan, request.grid().seed(), request.trunks());
  figure.branch_steps = observations.branch_steps;
  figure.branches = plan.branches;
  for (const v1::JudgeHeadInfo& head : *heads) figure.head_names.push_back(head.name());
  figure.statistics = *statistics;
  absl::StatusOr<std::string> png = DrawCurvePng(figure);
  if (!png.ok()) return png.status();
  result.set_png(std::move(*png));
  absl::StatusOr<std::string> svg = DrawCurveSvg(figure);
  if (!svg.ok()) return svg.status();
  result.set_svg(std::move(*svg));
  result.set_seconds(absl::ToDoubleSeconds(absl::Now() - started));
  result.set_model_evals(run.model_evals());
  result.set_cache_hits(run.cache_hits());
  result.set_judged_images(run.judged_images());
  v1::CurveEvent last;
  *last.mutable_curve() = result;
  if (!watched(last)) return abandoned();
  return result;
}

}  // namespace dgrid
