#include "grid_orchestrator/execute/grid_executor.h"

#include <algorithm>
#include <map>
#include <optional>
#include <thread>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"
#include "common/png_image.h"
#include "common/short_text.h"
#include "common/start_thread.h"
#include "common/status_macros.h"
#include "common/tensor_codec.h"
#include "common/wire.h"
#include "grid_orchestrator/assemble/grid_figure.h"
#include "grid_orchestrator/execute/retry_policy.h"
#include "common/stall_watchdog.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"

namespace dgrid {
namespace {

// A cell as it goes to the client; the trunk's is row = column = -1.
void FillCell(int row, int column, const Path& path, const std::string& png,
              const std::string& source, v1::GridCell* cell) {
  cell->set_row(row);
  cell->set_column(column);
  PathToProto(path, cell->mutable_path());
  cell->set_png(png);
  cell->set_source(source);
}

v1::GridEvent CellEvent(int row, int column, const Path& path, const std::string& png,
                        const std::string& source) {
  v1::GridEvent event;
  FillCell(row, column, path, png, source, event.mutable_cell());
  return event;
}

}  // namespace

// ---- GridCancel ----

void GridCancel::Cancel() {
  cancelled_.store(true);
  std::lock_guard<std::mutex> lock(mu_);
  for (grpc::ClientContext* context : contexts_) context->TryCancel();
}

bool GridCancel::Register(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_.load()) return false;
  contexts_.insert(context);
  return true;
}

void GridCancel::Unregister(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  contexts_.erase(context);
}

// ---- GridRun: one execution of one plan ----

class GridExecutor::GridRun {
 public:
  GridRun(GridExecutor* executor, const GridPlanSpec& plan, absl::Time deadline,
          absl::Time callers_deadline, const EventSink& sink, GridCancel* cancel)
      : ex_(*executor),
        plan_(plan),
        deadline_(deadline),
        callers_deadline_(callers_deadline),
        sink_(sink),
        cancel_(cancel),
        sampler_key_(PrefixCache::SamplerKey(plan)),
        tenant_(absl::Uniform<uint64_t>(absl::BitGen())),
        watchdog_(executor->options_.stall_timeout),
        cells_(plan.rows.size(), std::vector<CellResult>(plan.branches)),
        row_started_(plan.rows.size(), false) {}

  // The algorithm: announce the plan, take what the cache holds, start the
  // rows whose start latent is known and the trunk if anything needs it,
  // wait for every job, and draw the grid.
  absl::StatusOr<v1::Grid> Execute();

 private:
  struct CellResult {
    bool done = false;
    std::string png;
    std::string source;
  };
  // What one Branch call to one replica did.
  struct Attempt {
    absl::Status status;
    std::string replica;
    bool no_replica = false;  // the pool had none to give
    bool stalled = false;     // cancelled here for lack of progress
    bool bad_output = false;  // the replica sent something unusable
    int64_t progress_evals = 0;
    int64_t final_evals = 0;
    // Evaluations up to the captures taken from trajectories that sent no
    // final: a retry resumes from them, so they were used, not wasted.
    int64_t kept_evals = 0;
  };
  using EventHandler = std::function<absl::Status(const v1::BranchEvent&, const std::string&)>;
  // The request for what a job still has to do, and its size; nullopt when
  // nothing is left.
  using NextRequest = std::function<std::optional<std::pair<v1::BranchRequest, int64_t>>()>;

  // Execute's steps.
  void EmitPlan();
  int LoadCached();
  int TrunkEnd();
  void StartReadyRows();
  void JoinJobs();
  absl::StatusOr<v1::Grid> Assemble();

  // Jobs.
  v1::BranchRequest BaseRequest(int start_step) const;
  // Runs the trunk from start_step to end_step (exclusive; sampler.steps:
  // to its final, which it then delivers).
  void RunTrunk(int start_step, std::optional<v1::Tensor> start_latent, int end_step);
  void StartRow(size_t row);
  void RunCells(size_t row, std::vector<int> columns);
  // Retries a job on other replicas until it is done or fails for good.
  void RunJob(const std::string& label, const NextRequest& next, const EventHandler& on_event);
  Attempt Call(const v1::BranchRequest& request, int64_t work,
               const std::set<std::string>& avoid, const EventHandler& on_event);
  // The retry policy (retry_policy.h) applied to this grid's attempts.
  bool ShouldRetry(const Attempt& attempt, int number) const;
  RetryLimits retry_limits() const;
  void Backoff(int number) const;
  absl::Status CheckLatent(const v1::Tensor& latent, const std::string& what) const;
  absl::Status CheckImage(const std::string& png, const std::string& what) const;

  void Emit(const v1::GridEvent& event);
  // The trunk's progress at `step`: a capture's images, from `source` (a
  // replica, or the cache).
  v1::GridEvent TrunkEvent(int step, const CacheEntry& capture, const std::string& source) const {
    v1::GridEvent event;
    v1::TrunkProgress* p = event.mutable_trunk();
    p->set_step(step);
    p->set_timestep(TimestepAfter(plan_, step));
    p->set_xt_png(capture.png);
    p->set_x0_png(capture.x0_png);
    p->set_source(source);
    return event;
  }
  // The trajectory strip's images and the grid PNG (see GridImages).
  bool wants_figure() const { return plan_.images == GridImages::kFigure; }
  // Whether a row branches at `step`: the captures the grid keeps for its
  // whole life (a checkpoint only serves the trunk's resume and the cache).
  bool IsRowStep(int step) const {
    return std::any_of(plan_.rows.begin(), plan_.rows.end(),
                       [step](const PlannedRow& row) { return row.branch_step == step; });
  }
  // A cell whose path is the trunk's (a promoted cell's own column, or a
  // switch to the prompt in force with the trunk's noise) is not run: the
  // trunk's final is its image.
  bool IsTrunk(size_t row, int column) const { return plan_.rows[row].cells[column] == plan_.trunk; }
  void Fail(const absl::Status& status);
  void Spawn(std::function<void()> job);

  const GridExecutor& ex_;
  const GridPlanSpec& plan_;
  const absl::Time deadline_;
  const absl::Time callers_deadline_;
  const EventSink& sink_;
  GridCancel* const cancel_;
  const std::string sampler_key_;
  // The grid's tenant at the pool and its fairness key at the replicas.
  const uint64_t tenant_;
  const absl::Time started_ = absl::Now();
  // Cancels the grid's calls that stop making progress.
  StallWatchdog watchdog_;

  // std primitives throughout: TSan sees them (Debian's abseil is not
  // instrumented).
  std::mutex mu_;
  std::map<int, CacheEntry> captures_;          // guarded by mu_
  std::vector<std::vector<CellResult>> cells_;  // guarded by mu_
  std::vector<bool> row_started_;               // guarded by mu_
  CellResult trunk_;                            // guarded by mu_
  absl::Status status_;                         // guarded by mu_
  int64_t model_evals_ = 0;                     // guarded by mu_
  int cache_hits_ = 0;                          // guarded by mu_
  std::vector<std::thread> threads_;            // guarded by mu_

  std::mutex sink_mu_;
};

v1::BranchRequest GridExecutor::GridRun::BaseRequest(int start_step) const {
  v1::BranchRequest r;
  r.set_model(plan_.model);
  // A replica that restarted onto another version since the pool asked
  // answers UNAVAILABLE instead of another version's latents for this cache.
  r.set_model_version(plan_.model_version);
  v1::SamplerConfig* s = r.mutable_sampler();
  s->set_steps(plan_.steps);
  s->set_eta(plan_.eta);
  s->set_guidance(plan_.guidance);
  s->set_spacing(SpacingToProto(plan_.spacing));
  s->set_sampler(SamplerToProto(plan_.sampler));
  if (plan_.size_ids) SizeToProto(plan_.size, r.mutable_size());
  if (plan_.text) {
    r.mutable_conditioning()->set_prompt(plan_.prompt);
    r.mutable_conditioning()->set_negative_prompt(plan_.negative_prompt);
  } else if (plan_.class_index >= 0) {
    r.mutable_conditioning()->set_class_index(plan_.class_index);
  }
  r.set_start_step(start_step);
  r.set_decode(true);
  r.set_fairness_key(tenant_);
  // Shortest job first across grids: a small grid is not starved by large
  // ones, and equal grids finish in arrival order.
  r.set_fairness_rank(static_cast<uint64_t>(std::max<int64_t>(0, plan_.model_evals)));
  r.set_batch_work(plan_.batch_work);
  r.set_progress_interval_ms(
      static_cast<int32_t>(absl::ToInt64Milliseconds(ex_.options_.progress_interval)));
  return r;
}

void GridExecutor::GridRun::Emit(const v1::GridEvent& event) {
  std::lock_guard<std::mutex> lock(sink_mu_);
  sink_(event);
}

void GridExecutor::GridRun::Fail(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!status_.ok()) return;
    status_ = status;
  }
  // Stop the grid's other jobs: their results no longer matter.
  cancel_->Cancel();
}

void GridExecutor::GridRun::Spawn(std::function<void()> job) {
  // Out of threads (a pids limit), the grid fails.
  absl::StatusOr<std::thread> thread = StartThread(std::move(job), "a job's thread");
  if (!thread.ok()) return Fail(thread.status());
  std::lock_guard<std::mutex> lock(mu_);
  threads_.push_back(std::move(*thread));
}

// ---- One job ----

// A latent a replica sends is cached and sent back as a start latent, which
// every denoiser checks as it checks a caller's: the dtype, the shape, the
// size and finite values. A bad one is the replica's fault (INTERNAL,
// retried elsewhere); cached, it would fail every later grid on its path
// with INVALID_ARGUMENT, blamed on the client.
absl::Status GridExecutor::GridRun::CheckLatent(const v1::Tensor& latent,
                                                const std::string& what) const {
  if (plan_.latent_shape.empty()) return absl::OkStatus();
  std::vector<float> values;
  const absl::Status decoded =
      DecodeFloatTensorInto(latent, plan_.latent_shape, what + "'s latent", &values);
  if (decoded.ok()) return decoded;
  return absl::InternalError(decoded.message());
}

// A replica's image must decode to the model's size before it is cached or
// drawn: else it would fail every later grid on its path, as a client's
// fault (INVALID_ARGUMENT), or give a curve's divergence NaN.
absl::Status GridExecutor::GridRun::CheckImage(const std::string& png,
                                               const std::string& what) const {
  if (png.empty()) return absl::InternalError(absl::StrCat("sent ", what, " without its image"));
  absl::StatusOr<DecodedPng> decoded =
      DecodePng({reinterpret_cast<const uint8_t*>(png.data()), png.size()});
  if (!decoded.ok()) {
    return absl::InternalError(
        absl::StrCat("sent ", what, " whose image is not a PNG: ", decoded.status().message()));
  }
  const std::vector<int64_t>& shape = plan_.image_shape;  // height, width, channels
  if (shape.size() == 3 && (decoded->height != shape[0] || decoded->width != shape[1] ||
                            decoded->channels != shape[2])) {
    return absl::InternalError(absl::StrCat(
        "sent ", what, " whose image is ", decoded->height, "x", decoded->width, "x",
        decoded->channels, ", not the model's ", shape[0], "x", shape[1], "x", shape[2]));
  }
  return absl::OkStatus();
}

GridExecutor::GridRun::Attempt GridExecutor::GridRun::Call(const v1::BranchRequest& request,
                                                           int64_t work,
                                                           const std::set<std::string>& avoid,
                                                           const EventHandler& on_event) {
  Attempt a;
  ReplicaPool::Want want;
  want.work = work;
  want.deadline = deadline_;
  want.avoid = avoid;
  want.cancelled = cancel_->flag();
  want.model = plan_.model;
  want.version = plan_.model_version;
  want.tenant = tenant_;
  want.rank = static_cast<uint64_t>(std::max<int64_t>(0, plan_.model_evals));
  want.since = started_;
  absl::StatusOr<ReplicaPool::Lease> lease = ex_.pool_->Acquire(want);
  if (!lease.ok()) {
    // The pool already waited for a usable replica: retrying would only
    // make the client wait again for the same answer.
    a.no_replica = true;
    a.status = lease.status();
    return a;
  }
  a.replica = lease->address();
  grpc::ClientContext context;
  // No per-attempt wall-clock deadline: the watchdog ends calls that stop
  // making progress, and a slow but steady one may take as long as the grid.
  context.set_deadline(absl::ToChronoTime(deadline_));
  if (!cancel_->Register(&context)) {
    a.status = absl::CancelledError("grid cancelled");
    return a;
  }
  const StallWatchdog::CallId watched =
      watchdog_.Watch([&context] { context.TryCancel(); });
  auto reader = lease->stub()->Branch(&context, request);
  v1::BranchEvent event;
  absl::Status bad;
  int64_t replica_forwards = 0;
  std::map<int, int64_t> kept;  // by trajectory: steps up to its last capture taken
  while (reader->Read(&event)) {
    if (event.has_progress()) {
      // Progress: this call's trajectories moved, or the replica's model
      // thread did (the call is queued behind other work, not stuck).
      const v1::Progress& p = event.progress();
      if (p.model_evals() > a.progress_evals || p.replica_forwards() > replica_forwards) {
        watchdog_.Touch(watched);
      }
      a.progress_evals = std::max(a.progress_evals, p.model_evals());
      replica_forwards = std::max(replica_forwards, p.replica_forwards());
      continue;
    }
    watchdog_.Touch(watched);
    bad = on_event(event, a.replica);
    // A refused final's evaluations are wasted, not the grid's.
    if (bad.ok() && event.has_final()) {
      a.final_evals += event.final().model_evals();
      kept.erase(event.final().trajectory());  // counted in its final
    }
    if (bad.ok() && event.has_capture()) {
      kept[event.capture().trajectory()] = event.capture().step() - request.start_step();
    }
    if (!bad.ok()) {
      context.TryCancel();
      while (reader->Read(&event)) {
      }
      break;
    }
  }
  for (const auto& [trajectory, evals] : kept) a.kept_evals += evals;
  const grpc::Status status = reader->Finish();
  a.stalled = watchdog_.Unwatch(watched);
  cancel_->Unregister(&context);
  if (!bad.ok()) {
    a.bad_output = true;
    a.status = absl::InternalError(absl::StrCat("replica ", a.replica, ": ", bad.message()));
  } else if (a.stalled && !status.ok()) {
    a.status = absl::DeadlineExceededError(
        absl::StrCat("replica ", a.replica, " made no progress for ",
                     absl::FormatDuration(ex_.options_.stall_timeout)));
  } else {
    // Every field of the request is this orchestrator's making, from a
    // request it planned and checked.
    a.status = ReplicaStatus(a.replica, FromGrpcStatus(status));
  }
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) lease->MarkUnhealthy();
  if (a.stalled && !status.ok()) lease->MarkStalled();
  return a;
}

bool GridExecutor::GridRun::ShouldRetry(const Attempt& a, int number) const {
  CallOutcome outcome;
  outcome.status = a.status;
  outcome.no_replica = a.no_replica;
  outcome.stalled = a.stalled;
  outcome.bad_output = a.bad_output;
  outcome.grid_over = cancel_->cancelled() || absl::Now() >= deadline_;
  return dgrid::ShouldRetry(outcome, number, retry_limits());
}

RetryLimits GridExecutor::GridRun::retry_limits() const {
  return {ex_.options_.max_attempts, ex_.options_.retry_backoff};
}

void GridExecutor::GridRun::Backoff(int number) const {
  const absl::Time until = std::min(deadline_, absl::Now() + RetryBackoff(number, retry_limits()));
  while (absl::Now() < until && !cancel_->cancelled()) absl::SleepFor(absl::Milliseconds(5));
}

void GridExecutor::GridRun::RunJob(const std::string& label, const NextRequest& next,
                                   const EventHandler& on_event) {
  std::set<std::string> avoid;
  for (int number = 1;; ++number) {
    std::optional<std::pair<v1::BranchRequest, int64_t>> request = next();
    if (!request) return;
    Attempt a = Call(request->first, request->second, avoid, on_event);
    const bool all_in = !next();
    if (a.status.ok() && !all_in) {
      // The stream ended well but short of its finals: its output is bad.
      a.bad_output = true;
      a.status = absl::InternalError(
          absl::StrCat("replica ", a.replica, ": the stream ended before all its finals"));
    } else if (!a.status.ok() && all_in && !cancel_->cancelled()) {
      // Every result arrived and was checked before the stream ended badly
      // (a replica shutting down, the deadline landing just then): the job
      // is done, and how its stream ended no longer matters.
      a.status = absl::OkStatus();
    }
    // An attempt its grid's end cut short (the client left or its deadline
    // passed, a sibling job failed the grid) is not this job's failure, nor
    // its evaluations waste.
    const bool cancelled =
        !a.status.ok() && (cancel_->cancelled() || absl::Now() >= callers_deadline_);
    const bool retried = !a.status.ok() && ShouldRetry(a, number);
    // Every evaluation that ran counts, those of a failed attempt too (as
    // far as its last progress report tells; it may lag the captures and
    // finals after it): up to its last capture taken as used when the job
    // is retried (the retry resumes there), the rest as wasted.
    const int64_t ran = std::max(a.progress_evals, a.final_evals + a.kept_evals);
    const int64_t kept = retried ? a.kept_evals : 0;
    const int64_t wasted = ran - a.final_evals - kept;
    {
      std::lock_guard<std::mutex> lock(mu_);
      model_evals_ += wasted + kept;
    }
    if (ex_.metrics_) ex_.metrics_->CountEvals(a.final_evals + kept, wasted, cancelled);
    if (a.status.ok()) {
      if (ex_.metrics_) ex_.metrics_->CountJob("ok");
      return;
    }
    if (!retried) {
      if (ex_.metrics_) ex_.metrics_->CountJob(cancelled ? "cancelled" : "failed");
      // A replica's CANCELLED (its own, or its transport's) is not the
      // client's doing, which CANCELLED would tell the client and the
      // metrics: the replicas were unavailable.
      const absl::StatusCode code = a.status.code() == absl::StatusCode::kCancelled && !cancelled
                                        ? absl::StatusCode::kUnavailable
                                        : a.status.code();
      Fail(absl::Status(code, absl::StrCat(label, ": ", a.status.message())));
      return;
    }
    if (ex_.metrics_) {
      ex_.metrics_->CountJob("retried");
      ex_.metrics_->CountRetry();
    }
    if (!a.replica.empty()) avoid.insert(a.replica);
    Backoff(number);
  }
}

void GridExecutor::GridRun::RunTrunk(int start_step, std::optional<v1::Tensor> start_latent,
                                     int end_step) {
  // Short of the last step, the run's Final at end_step is the capture
  // there: the same latent, x0 and images.
  const bool to_final = end_step == plan_.steps;
  std::set<int> wanted;  // the captures asked for
  bool final_is_capture = false;
  for (int s : plan_.trunk_captures) {
    if (s < end_step) wanted.insert(s);
    if (s == end_step && !to_final) final_is_capture = true;
  }
  bool done = false;
  // Captures arrive in step order, each once; a trunk resumed at a step
  // has that step's capture already.
  int last_taken = start_step == 0 ? -1 : start_step;
  auto next = [&]() -> std::optional<std::pair<v1::BranchRequest, int64_t>> {
    if (done) return std::nullopt;
    v1::BranchRequest request = BaseRequest(start_step);
    if (!to_final) request.set_end_step(end_step);
    v1::TrajectoryInput* t = request.add_trajectories();
    PathToProto(plan_.trunk, t->mutable_path());
    if (start_latent) *t->mutable_start_latent() = *start_latent;
    for (int s : wanted) {
      // A resumed trunk already has the captures it took.
      if (s > last_taken) request.add_capture_steps(s);
    }
    if (wants_figure()) {
      request.set_previews(true);
    } else if (to_final) {
      request.set_decode_finals_only(true);
    } else {
      request.set_decode(false);  // latents alone, to branch from
    }
    return std::make_pair(std::move(request), int64_t{end_step - start_step});
  };
  auto take_capture = [&](int step, const v1::Tensor& latent, const v1::Image& image,
                          const v1::Image& x0_image, const std::string& replica) -> absl::Status {
    if (absl::Status s = CheckLatent(latent, "a capture"); !s.ok()) return s;
    if (wants_figure()) {
      RETURN_IF_ERROR(CheckImage(image.png(), "a capture"));
      // Step 0 has no prediction of x0 yet.
      if (!x0_image.png().empty()) RETURN_IF_ERROR(CheckImage(x0_image.png(), "a capture's x0"));
    }
    CacheEntry entry{latent, image.png(), x0_image.png()};
    // The cache holds only captures a figure can show.
    if (wants_figure()) {
      ex_.cache_->Put(PrefixCache::CaptureKey(sampler_key_, plan_.trunk, step), entry);
    }
    // Kept for the grid's life only at a row's step: a 1000-step figure
    // has 100 checkpoints, each with its x_t and x0 images.
    if (IsRowStep(step)) {
      std::lock_guard<std::mutex> lock(mu_);
      captures_[step] = entry;
    }
    // A resumed trunk starts from its newest capture.
    start_step = step;
    last_taken = step;
    start_latent = latent;
    Emit(TrunkEvent(step, entry, replica));
    // Wavefront: the rows branching here leave now.
    for (size_t r = 0; r < plan_.rows.size(); ++r) {
      if (plan_.rows[r].branch_step == step) StartRow(r);
    }
    return absl::OkStatus();
  };
  // The capture the trunk takes next, if any is left: each row starts from
  // its step's, so none may be skipped.
  auto next_wanted = [&]() -> std::optional<int> {
    const auto it = wanted.upper_bound(last_taken);
    if (it == wanted.end()) return std::nullopt;
    return *it;
  };
  auto on_event = [&](const v1::BranchEvent& event, const std::string& replica) -> absl::Status {
    if (event.has_capture()) {
      const v1::Capture& c = event.capture();
      // Each step's capture once: a second (another latent, perhaps) would
      // be cached and shown over the first, which rows may have started from.
      if (c.trajectory() != 0 || !wanted.count(c.step()) || c.step() <= last_taken) {
        return absl::InternalError(absl::StrCat("sent a capture the trunk did not ask for (trajectory ",
                                                c.trajectory(), ", step ", c.step(), ")"));
      }
      if (const int expected = *next_wanted(); c.step() != expected) {
        return absl::InternalError(absl::StrCat("sent the capture at step ", c.step(),
                                                " before the one at step ", expected));
      }
      return take_capture(c.step(), c.latent(), c.image(), c.x0_image(), replica);
    }
    if (!event.has_final()) return absl::OkStatus();
    const v1::Final& f = event.final();
    if (f.trajectory() != 0) {
      return absl::InternalError(
          absl::StrCat("sent a final for trajectory ", f.trajectory(), " of a 1-trajectory job"));
    }
    // Its rows would never start, and the grid fail at its end.
    if (const std::optional<int> missing = next_wanted()) {
      return absl::InternalError(
          absl::StrCat("sent the final without the capture at step ", *missing));
    }
    if (!to_final) {
      if (final_is_capture) {
        RETURN_IF_ERROR(take_capture(end_step, f.latent(), f.image(), f.x0_image(), replica));
      } else if (absl::Status s = CheckLatent(f.latent(), "the final"); !s.ok()) {
        return s;
      }
      done = true;
      std::lock_guard<std::mutex> lock(mu_);
      model_evals_ += f.model_evals();
      return absl::OkStatus();
    }
    if (absl::Status s = CheckLatent(f.latent(), "the final"); !s.ok()) return s;
    RETURN_IF_ERROR(CheckImage(f.image().png(), "the final"));
    done = true;
    ex_.cache_->Put(PrefixCache::FinalKey(sampler_key_, plan_.trunk),
                    {f.latent(), f.image().png(), ""});
    std::vector<std::pair<int, int>> same;  // cells that are the trunk
    {
      std::lock_guard<std::mutex> lock(mu_);
      model_evals_ += f.model_evals();
      // Already sent from the cache (a promoted cell's trunk runs again
      // only for its captures).
      if (trunk_.done) return absl::OkStatus();
      trunk_ = {true, f.image().png(), replica};
      for (size_t r = 0; r < plan_.rows.size(); ++r) {
        for (int c = 0; c < plan_.branches; ++c) {
          if (IsTrunk(r, c) && !cells_[r][c].done) {
            cells_[r][c] = trunk_;
            same.emplace_back(static_cast<int>(r), c);
          }
        }
      }
    }
    Emit(CellEvent(-1, -1, plan_.trunk, f.image().png(), replica));
    for (const auto& [r, c] : same) {
      Emit(CellEvent(r, c, plan_.trunk, f.image().png(), replica));
    }
    return absl::OkStatus();
  };
  RunJob("trunk", next, on_event);
}

void GridExecutor::GridRun::StartRow(size_t row) {
  std::vector<int> todo;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (row_started_[row]) return;
    row_started_[row] = true;
    for (int c = 0; c < plan_.branches; ++c) {
      if (!cells_[row][c].done && !IsTrunk(row, c)) todo.push_back(c);
    }
  }
  const int per_job = std::max(1, ex_.options_.cells_per_job);
  for (size_t i = 0; i < todo.size(); i += per_job) {
    std::vector<int> chunk(todo.begin() + i,
                           todo.begin() + std::min(todo.size(), i + per_job));
    Spawn([this, row, chunk] { RunCells(row, chunk); });
  }
}

void GridExecutor::GridRun::RunCells(size_t row, std::vector<int> columns) {
  const PlannedRow& planned = plan_.rows[row];
  const int k = planned.branch_step;
  std::optional<v1::Tensor> latent;
  if (k > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    latent = captures_.at(k).latent;
  }
  // The columns the current attempt runs, by trajectory index.
  std::vector<int> sent;
  std::set<int> finished;
  auto next = [&]() -> std::optional<std::pair<v1::BranchRequest, int64_t>> {
    // Only the cells that did not finish move to another replica.
    sent.clear();
    for (int c : columns) {
      if (!finished.count(c)) sent.push_back(c);
    }
    if (sent.empty()) return std::nullopt;
    v1::BranchRequest request = BaseRequest(k);
    for (int c : sent) {
      v1::TrajectoryInput* t = request.add_trajectories();
      PathToProto(planned.cells[c], t->mutable_path());
      if (latent) *t->mutable_start_latent() = *latent;
    }
    return std::make_pair(std::move(request),
                          static_cast<int64_t>(sent.size()) * (plan_.steps - k));
  };
  auto on_event = [&](const v1::BranchEvent& event, const std::string& replica) -> absl::Status {
    if (event.has_capture()) return absl::InternalError("sent a capture no cell asked for");
    if (!event.has_final()) return absl::OkStatus();
    const v1::Final& f = event.final();
    if (f.trajectory() < 0 || f.trajectory() >= static_cast<int>(sent.size())) {
      return absl::InternalError(absl::StrCat("sent a final for trajectory ", f.trajectory(),
                                              " of a ", sent.size(), "-trajectory job"));
    }
    const int c = sent[f.trajectory()];
    if (finished.count(c)) {
      return absl::InternalError(absl::StrCat("sent trajectory ", f.trajectory(), " twice"));
    }
    if (absl::Status s = CheckLatent(f.latent(), "a final"); !s.ok()) return s;
    RETURN_IF_ERROR(CheckImage(f.image().png(), "a final"));
    finished.insert(c);
    ex_.cache_->Put(PrefixCache::FinalKey(sampler_key_, planned.cells[c]),
                    {f.latent(), f.image().png(), ""});
    {
      std::lock_guard<std::mutex> lock(mu_);
      cells_[row][c] = {true, f.image().png(), replica};
      model_evals_ += f.model_evals();
    }
    Emit(CellEvent(static_cast<int>(row), c, planned.cells[c], f.image().png(), replica));
    return absl::OkStatus();
  };
  RunJob(absl::StrCat("row ", row, " (branch step ", k, ")"), next, on_event);
}

// ---- Execute's steps ----

void GridExecutor::GridRun::EmitPlan() {
  v1::GridEvent plan_event;
  PlanToProto(plan_, plan_event.mutable_plan());
  Emit(plan_event);
}

// Takes finished cells, the trunk and its captures from the cache, emits
// what it found, and returns the step the trunk resumes from: its deepest
// cached capture below which every capture is cached too.
int GridExecutor::GridRun::LoadCached() {
  std::vector<v1::GridEvent> found;
  int hits = 0, lookups = 0;
  // Cells that are the trunk take its entry: one lookup for all of them.
  const std::optional<CacheEntry> trunk =
      ex_.cache_->Find(PrefixCache::FinalKey(sampler_key_, plan_.trunk));
  for (size_t r = 0; r < plan_.rows.size(); ++r) {
    for (int c = 0; c < plan_.branches; ++c) {
      const Path& path = plan_.rows[r].cells[c];
      ++lookups;
      const std::optional<CacheEntry> hit =
          IsTrunk(r, c) ? trunk : ex_.cache_->Find(PrefixCache::FinalKey(sampler_key_, path));
      if (hit) {
        ++hits;
        std::lock_guard<std::mutex> lock(mu_);
        cells_[r][c] = {true, hit->png, "cache"};
        found.push_back(CellEvent(static_cast<int>(r), c, path, hit->png, "cache"));
      }
    }
  }
  ++lookups;
  if (trunk) {
    ++hits;
    std::lock_guard<std::mutex> lock(mu_);
    trunk_ = {true, trunk->png, "cache"};
    found.push_back(CellEvent(-1, -1, plan_.trunk, trunk->png, "cache"));
  }
  int start = 0;
  bool missing_capture = false;
  std::optional<CacheEntry> resume;  // the capture the trunk resumes from
  // The trunk's progress up to where it resumes, as a live trunk streams it:
  // a grid from the cache shows its trajectory at once, not at its end.
  std::vector<v1::GridEvent> progress;
  for (int s : plan_.trunk_captures) {
    ++lookups;
    auto hit = ex_.cache_->Find(PrefixCache::CaptureKey(sampler_key_, plan_.trunk, s));
    if (!hit) {
      missing_capture = true;
      continue;
    }
    ++hits;
    if (IsRowStep(s)) {
      std::lock_guard<std::mutex> lock(mu_);
      captures_[s] = *hit;
    }
    if (!missing_capture) {
      if (wants_figure()) progress.push_back(TrunkEvent(s, *hit, "cache"));
      start = s;
      resume = std::move(hit);
    }
  }
  // Of the checkpoints, only the resume point is kept (IsRowStep).
  if (resume) {
    std::lock_guard<std::mutex> lock(mu_);
    captures_.emplace(start, std::move(*resume));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    cache_hits_ = hits;
  }
  if (ex_.metrics_) ex_.metrics_->CountCache(lookups, hits);
  // A trunk that starts over at step 0 streams its step-0 capture again.
  if (start == 0) progress.clear();
  for (const v1::GridEvent& e : progress) Emit(e);
  for (const v1::GridEvent& e : found) Emit(e);
  return start;
}

// The step the trunk must run to (its end_step), 0 if none. To its end
// when its own cell is missing; else to the deepest row whose capture is
// missing while the row has unfinished cells, or a figure lacks the row's
// trunk images (a promoted cell ran as a branch, which streams none, so its
// grid from the cache once showed empty trajectory rows).
int GridExecutor::GridRun::TrunkEnd() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!trunk_.done) return plan_.steps;
  int end = 0;
  for (size_t r = 0; r < plan_.rows.size(); ++r) {
    const int k = plan_.rows[r].branch_step;
    if (captures_.count(k)) continue;
    bool needed = wants_figure();
    for (const CellResult& cell : cells_[r]) needed |= k > 0 && !cell.done;
    // The run's Final at k is its capture there; end_step 0 would mean the
    // last step, so x_T's capture alone runs one step.
    if (needed) end = std::max({end, k, 1});
  }
  return end;
}

// Rows whose start is known leave now; the rest when the trunk gets there.
void GridExecutor::GridRun::StartReadyRows() {
  for (size_t r = 0; r < plan_.rows.size(); ++r) {
    const int k = plan_.rows[r].branch_step;
    bool ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready = k == 0 || captures_.count(k);
    }
    if (ready) StartRow(r);
  }
}

// Joins every job; the trunk may spawn rows until it ends.
void GridExecutor::GridRun::JoinJobs() {
  while (true) {
    std::thread next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (threads_.empty()) break;
      next = std::move(threads_.back());
      threads_.pop_back();
    }
    next.join();
  }
}

absl::StatusOr<v1::Grid> GridExecutor::GridRun::Execute() {
  // Out of threads (a pids limit), this grid fails; the process serves on.
  RETURN_IF_ERROR(watchdog_.Start());
  // Emitted on this thread before any job starts, so that a sink blocking
  // here (GridService's outbox, for a client reading the cached cells)
  // holds no replica slot: a job's Emit would wait on sink_mu_.
  EmitPlan();
  const int trunk_start = LoadCached();
  StartReadyRows();
  if (const int trunk_end = TrunkEnd(); trunk_end > 0) {
    std::optional<v1::Tensor> latent;
    if (trunk_start > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      latent = captures_[trunk_start].latent;
    }
    Spawn([this, trunk_start, latent, trunk_end] { RunTrunk(trunk_start, latent, trunk_end); });
  }
  JoinJobs();
  watchdog_.Stop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!status_.ok()) return status_;
  }
  if (cancel_->cancelled()) return absl::CancelledError("grid cancelled");
  return Assemble();
}

absl::StatusOr<v1::Grid> GridExecutor::GridRun::Assemble() {
  std::lock_guard<std::mutex> lock(mu_);
  v1::Grid grid;
  PlanToProto(plan_, grid.mutable_plan());
  FillCell(-1, -1, plan_.trunk, trunk_.png, trunk_.source, grid.mutable_trunk());

  GridFigure figure;
  // 4x for the small models' pictures (28 and 64 px); an SD or SDXL image is
  // drawn at 256 px, so that a 16 x 16 grid of them stays a picture of some
  // megabytes (full size, they made surfaces of gigabytes, or past Cairo's
  // 32767 px a side after all the work). Every cell's own image is whole.
  figure.max_picture_side = 256;
  std::vector<std::string> trunk_switches;
  for (const Segment& segment : plan_.trunk.segments) {
    if (!segment.conditioning) continue;
    const SegmentConditioning& to = *segment.conditioning;
    const bool named = to.class_index >= 0 &&
                       to.class_index < static_cast<int>(plan_.class_names.size());
    trunk_switches.push_back(absl::StrCat(
        named                  ? plan_.class_names[to.class_index]
        : to.class_index >= 0  ? absl::StrCat("class ", to.class_index)
        : to.prompt.empty()    ? std::string("(unconditional)")
                               : to.prompt,
        plan_.text ? SwitchedNegativeNote(to.negative_prompt, plan_.negative_prompt, 60) : "",
        " after step ", segment.from_step));
  }
  SetCaption({plan_.model, plan_.prompt, plan_.negative_prompt, plan_.trunk.init_seed, plan_.eta,
              plan_.steps, plan_.guidance, plan_.switch_prompt, plan_.trunk_noise, plan_.sampler,
              absl::StrJoin(trunk_switches, ", "), plan_.switch_unseen,
              plan_.switch_negative_prompt, plan_.spacing},
             &figure);
  absl::StatusOr<Picture> trunk_picture = PictureFromPng(trunk_.png);
  if (!trunk_picture.ok()) return trunk_picture.status();
  figure.trunk_final = *trunk_picture;

  for (size_t r = 0; r < plan_.rows.size(); ++r) {
    const PlannedRow& planned = plan_.rows[r];
    v1::GridRow* row = grid.add_rows();
    row->set_branch_step(planned.branch_step);
    row->set_timestep(planned.timestep);
    GridFigure::Row figure_row;
    figure_row.branch_step = planned.branch_step;
    figure_row.timestep = planned.timestep;
    figure_row.switches = planned.switches;
    auto capture = captures_.find(planned.branch_step);
    if (wants_figure() && capture != captures_.end()) {
      row->set_trunk_xt_png(capture->second.png);
      row->set_trunk_x0_png(capture->second.x0_png);
      if (auto p = PictureFromPng(capture->second.png); p.ok()) figure_row.trunk_xt = *p;
      if (auto p = PictureFromPng(capture->second.x0_png); p.ok()) figure_row.trunk_x0 = *p;
    }
    // A promoted grid's cell that is its trunk is no distance from it.
    std::vector<bool> trunk_cells(plan_.branches);
    for (int c = 0; c < plan_.branches; ++c) {
      const CellResult& result = cells_[r][c];
      FillCell(static_cast<int>(r), c, planned.cells[c], result.png, result.source,
               row->add_cells());
      absl::StatusOr<Picture> picture = PictureFromPng(result.png);
      if (!picture.ok()) return picture.status();
      figure_row.cells.push_back(std::move(*picture));
      trunk_cells[c] = IsTrunk(r, c);
    }
    figure_row.divergence = MeanPairwiseDistance(figure_row.cells);
    figure_row.divergence_to_trunk =
        MeanDistanceTo(figure.trunk_final, figure_row.cells, trunk_cells);
    row->set_divergence(figure_row.divergence);
    row->set_divergence_to_trunk(figure_row.divergence_to_trunk);
    figure.rows.push_back(std::move(figure_row));
  }
  if (wants_figure()) {
    absl::StatusOr<std::string> png = DrawGridPng(figure);
    if (!png.ok()) return png.status();
    grid.set_png(std::move(*png));
  }
  grid.set_model_evals(model_evals_);
  grid.set_cache_hits(cache_hits_);
  grid.set_seconds(absl::ToDoubleSeconds(absl::Now() - started_));
  return grid;
}

// ---- GridExecutor ----

GridExecutor::GridExecutor(ReplicaPool* pool, PrefixCache* cache, OrchestratorMetrics* metrics,
                           ExecutorOptions options)
    : pool_(pool), cache_(cache), metrics_(metrics), options_(options) {}

absl::StatusOr<v1::Grid> GridExecutor::Run(const GridPlanSpec& plan, absl::Time deadline,
                                           const EventSink& sink, GridCancel* cancel,
                                           absl::Time callers_deadline) {
  GridRun run(this, plan, deadline, callers_deadline, sink, cancel);
  absl::StatusOr<v1::Grid> grid = run.Execute();
  if (metrics_) metrics_->SetCache(cache_->bytes(), cache_->entries());
  return grid;
}

}  // namespace dgrid
