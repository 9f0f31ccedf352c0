#include "grid_orchestrator/execute/grid_executor.h"

#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grid_orchestrator/assemble/grid_figure.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"

namespace dgrid {

// ---- GridCancel ----

void GridCancel::Cancel() {
  cancelled_.store(true);
  absl::MutexLock lock(&mu_);
  for (grpc::ClientContext* context : contexts_) context->TryCancel();
}

bool GridCancel::Register(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  if (cancelled_.load()) return false;
  contexts_.insert(context);
  return true;
}

void GridCancel::Unregister(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  contexts_.erase(context);
}

// ---- GridRun: one execution of one plan ----

class GridExecutor::GridRun {
 public:
  GridRun(GridExecutor* executor, const GridPlanSpec& plan, absl::Time deadline,
          const EventSink& sink, GridCancel* cancel)
      : ex_(*executor),
        plan_(plan),
        deadline_(deadline),
        sink_(sink),
        cancel_(cancel),
        sampler_key_(PrefixCache::SamplerKey(plan)),
        cells_(plan.rows.size(), std::vector<CellResult>(plan.branches)) {}

  absl::StatusOr<v1::Grid> Execute();

 private:
  struct CellResult {
    bool done = false;
    std::string png;
    std::string source;
  };

  v1::BranchRequest BaseRequest(int start_step) const;
  // One attempt of one Branch call on one replica.
  // *no_replica tells that the pool had no replica to give.
  absl::Status Call(const v1::BranchRequest& request, int64_t work,
                    const std::set<std::string>& avoid, std::string* replica, bool* no_replica,
                    const std::function<void(const v1::BranchEvent&)>& on_event);
  // Whether to try a failed job again, on another replica.
  bool ShouldRetry(const absl::Status& status, bool no_replica, int attempt);
  void RunTrunk(int start_step, std::optional<v1::Tensor> start_latent);
  void StartRow(size_t row);
  void RunCells(size_t row, std::vector<int> columns);
  void Emit(const v1::GridEvent& event);
  void Fail(const absl::Status& status);
  void Spawn(std::function<void()> job);
  absl::StatusOr<v1::Grid> Assemble();

  const GridExecutor& ex_;
  const GridPlanSpec& plan_;
  const absl::Time deadline_;
  const EventSink& sink_;
  GridCancel* const cancel_;
  const std::string sampler_key_;
  const absl::Time started_ = absl::Now();

  absl::Mutex mu_;
  std::map<int, CacheEntry> captures_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<CellResult>> cells_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> row_started_ ABSL_GUARDED_BY(mu_);
  CellResult trunk_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int64_t model_evals_ ABSL_GUARDED_BY(mu_) = 0;
  int cache_hits_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);

  absl::Mutex sink_mu_;
};

v1::BranchRequest GridExecutor::GridRun::BaseRequest(int start_step) const {
  v1::BranchRequest r;
  r.set_model(plan_.model);
  v1::SamplerConfig* s = r.mutable_sampler();
  s->set_steps(plan_.steps);
  s->set_eta(plan_.eta);
  s->set_guidance(plan_.guidance);
  s->set_spacing(plan_.spacing == Spacing::kLeading ? v1::SPACING_LEADING
                                                    : v1::SPACING_TRAILING);
  if (plan_.class_index >= 0) r.mutable_conditioning()->set_class_index(plan_.class_index);
  r.set_start_step(start_step);
  r.set_decode(true);
  return r;
}

void GridExecutor::GridRun::Emit(const v1::GridEvent& event) {
  absl::MutexLock lock(&sink_mu_);
  sink_(event);
}

void GridExecutor::GridRun::Fail(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (!status_.ok()) return;
    status_ = status;
  }
  // Stop the grid's other jobs: their results no longer matter.
  cancel_->Cancel();
}

void GridExecutor::GridRun::Spawn(std::function<void()> job) {
  absl::MutexLock lock(&mu_);
  threads_.emplace_back(std::move(job));
}

absl::Status GridExecutor::GridRun::Call(
    const v1::BranchRequest& request, int64_t work, const std::set<std::string>& avoid,
    std::string* replica, bool* no_replica,
    const std::function<void(const v1::BranchEvent&)>& on_event) {
  *no_replica = false;
  const absl::Time attempt_deadline = std::min(deadline_, absl::Now() + ex_.options_.job_timeout);
  absl::StatusOr<ReplicaPool::Lease> lease =
      ex_.pool_->Acquire(work, attempt_deadline, avoid, cancel_->flag());
  if (!lease.ok()) {
    // The pool already waited for a usable replica: retrying would only
    // make the client wait again for the same answer.
    *no_replica = true;
    return lease.status();
  }
  *replica = lease->address();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(attempt_deadline));
  if (!cancel_->Register(&context)) return absl::CancelledError("grid cancelled");
  auto reader = lease->stub()->Branch(&context, request);
  v1::BranchEvent event;
  while (reader->Read(&event)) on_event(event);
  const grpc::Status status = reader->Finish();
  cancel_->Unregister(&context);
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) lease->MarkUnhealthy();
  return FromGrpcStatus(status);
}

bool GridExecutor::GridRun::ShouldRetry(const absl::Status& status, bool no_replica,
                                        int attempt) {
  if (no_replica || cancel_->cancelled() || absl::Now() >= deadline_) return false;
  if (attempt >= ex_.options_.max_attempts) return false;
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDeadlineExceeded:  // this attempt's, not the grid's
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:  // a replica shutting down
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

void GridExecutor::GridRun::RunTrunk(int start_step, std::optional<v1::Tensor> start_latent) {
  std::set<std::string> avoid;
  for (int attempt = 1;; ++attempt) {
    v1::BranchRequest request = BaseRequest(start_step);
    v1::TrajectoryInput* t = request.add_trajectories();
    PathToProto(plan_.trunk, t->mutable_path());
    if (start_latent) *t->mutable_start_latent() = *start_latent;
    for (int s : plan_.trunk_captures) {
      // A resumed trunk already has its capture at start_step.
      if (s > start_step || (s == 0 && start_step == 0)) request.add_capture_steps(s);
    }
    request.set_previews(true);
    std::string replica;
    bool no_replica = false;
    const absl::Status status = Call(
        request, plan_.steps - start_step, avoid, &replica, &no_replica,
        [&](const v1::BranchEvent& event) {
          if (event.has_capture()) {
            const v1::Capture& c = event.capture();
            CacheEntry entry{c.latent(), c.image().png(), c.x0_image().png()};
            ex_.cache_->Put(PrefixCache::CaptureKey(sampler_key_, plan_.trunk, c.step()), entry);
            {
              absl::MutexLock lock(&mu_);
              captures_[c.step()] = entry;
            }
            // A resumed trunk starts from its newest capture.
            start_step = c.step();
            start_latent = c.latent();
            v1::GridEvent progress;
            v1::TrunkProgress* p = progress.mutable_trunk();
            p->set_step(c.step());
            p->set_timestep(TimestepAfter(plan_, c.step()));
            p->set_xt_png(c.image().png());
            p->set_x0_png(c.x0_image().png());
            p->set_source(replica);
            Emit(progress);
            // Wavefront: the rows branching here leave now.
            for (size_t r = 0; r < plan_.rows.size(); ++r) {
              if (plan_.rows[r].branch_step == c.step()) StartRow(r);
            }
          } else if (event.has_final()) {
            const v1::Final& f = event.final();
            ex_.cache_->Put(PrefixCache::FinalKey(sampler_key_, plan_.trunk),
                            {f.latent(), f.image().png(), ""});
            {
              absl::MutexLock lock(&mu_);
              model_evals_ += f.model_evals();
              // Already sent from the cache (a promoted cell's trunk runs
              // again only for its captures).
              if (trunk_.done) return;
              trunk_ = {true, f.image().png(), replica};
            }
            v1::GridEvent cell;
            v1::GridCell* g = cell.mutable_cell();
            g->set_row(-1);
            g->set_column(-1);
            PathToProto(plan_.trunk, g->mutable_path());
            g->set_png(f.image().png());
            g->set_source(replica);
            Emit(cell);
          }
        });
    if (status.ok()) {
      if (ex_.metrics_) ex_.metrics_->CountJob("ok");
      return;
    }
    if (!ShouldRetry(status, no_replica, attempt)) {
      if (ex_.metrics_) ex_.metrics_->CountJob("failed");
      Fail(absl::Status(status.code(), absl::StrCat("trunk: ", status.message())));
      return;
    }
    if (ex_.metrics_) {
      ex_.metrics_->CountJob("retried");
      ex_.metrics_->CountRetry();
    }
    if (!replica.empty()) avoid.insert(replica);
  }
}

void GridExecutor::GridRun::StartRow(size_t row) {
  std::vector<int> todo;
  {
    absl::MutexLock lock(&mu_);
    if (row_started_[row]) return;
    row_started_[row] = true;
    for (int c = 0; c < plan_.branches; ++c) {
      if (!cells_[row][c].done) todo.push_back(c);
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
    absl::MutexLock lock(&mu_);
    latent = captures_.at(k).latent;
  }
  std::set<std::string> avoid;
  for (int attempt = 1;; ++attempt) {
    v1::BranchRequest request = BaseRequest(k);
    for (int c : columns) {
      v1::TrajectoryInput* t = request.add_trajectories();
      PathToProto(planned.cells[c], t->mutable_path());
      if (latent) *t->mutable_start_latent() = *latent;
    }
    std::string replica;
    bool no_replica = false;
    std::set<int> finished;
    const absl::Status status = Call(
        request, static_cast<int64_t>(columns.size()) * (plan_.steps - k), avoid, &replica,
        &no_replica, [&](const v1::BranchEvent& event) {
          if (!event.has_final()) return;
          const v1::Final& f = event.final();
          const int c = columns.at(f.trajectory());
          finished.insert(c);
          ex_.cache_->Put(PrefixCache::FinalKey(sampler_key_, planned.cells[c]),
                          {f.latent(), f.image().png(), ""});
          {
            absl::MutexLock lock(&mu_);
            cells_[row][c] = {true, f.image().png(), replica};
            model_evals_ += f.model_evals();
          }
          v1::GridEvent cell;
          v1::GridCell* g = cell.mutable_cell();
          g->set_row(static_cast<int>(row));
          g->set_column(c);
          PathToProto(planned.cells[c], g->mutable_path());
          g->set_png(f.image().png());
          g->set_source(replica);
          Emit(cell);
        });
    if (status.ok()) {
      if (ex_.metrics_) ex_.metrics_->CountJob("ok");
      return;
    }
    if (!ShouldRetry(status, no_replica, attempt)) {
      if (ex_.metrics_) ex_.metrics_->CountJob("failed");
      Fail(absl::Status(status.code(),
                        absl::StrCat("row ", row, " (branch step ", k, "): ", status.message())));
      return;
    }
    if (ex_.metrics_) {
      ex_.metrics_->CountJob("retried");
      ex_.metrics_->CountRetry();
    }
    // Only the cells that did not finish move to another replica.
    std::vector<int> left;
    for (int c : columns) {
      if (!finished.count(c)) left.push_back(c);
    }
    columns = std::move(left);
    if (columns.empty()) return;
    if (!replica.empty()) avoid.insert(replica);
  }
}

absl::StatusOr<v1::Grid> GridExecutor::GridRun::Execute() {
  v1::GridEvent plan_event;
  PlanToProto(plan_, plan_event.mutable_plan());
  Emit(plan_event);

  // What the cache already holds: finished cells, the trunk, its captures.
  std::vector<bool> row_needs_capture(plan_.rows.size(), false);
  {
    absl::MutexLock lock(&mu_);
    row_started_.assign(plan_.rows.size(), false);
  }
  std::vector<v1::GridEvent> cached_events;
  int hits = 0, lookups = 0;
  for (size_t r = 0; r < plan_.rows.size(); ++r) {
    for (int c = 0; c < plan_.branches; ++c) {
      const Path& path = plan_.rows[r].cells[c];
      ++lookups;
      if (auto hit = ex_.cache_->Find(PrefixCache::FinalKey(sampler_key_, path))) {
        ++hits;
        absl::MutexLock lock(&mu_);
        cells_[r][c] = {true, hit->png, "cache"};
        v1::GridEvent e;
        v1::GridCell* g = e.mutable_cell();
        g->set_row(static_cast<int>(r));
        g->set_column(c);
        PathToProto(path, g->mutable_path());
        g->set_png(hit->png);
        g->set_source("cache");
        cached_events.push_back(std::move(e));
      } else if (plan_.rows[r].branch_step > 0) {
        row_needs_capture[r] = true;
      }
    }
  }
  std::optional<CacheEntry> trunk_final =
      ex_.cache_->Find(PrefixCache::FinalKey(sampler_key_, plan_.trunk));
  ++lookups;
  // The trunk resumes from its deepest cached capture below which every
  // needed capture is cached too.
  int start = 0;
  bool missing_capture = false;
  for (int s : plan_.trunk_captures) {
    ++lookups;
    auto hit = ex_.cache_->Find(PrefixCache::CaptureKey(sampler_key_, plan_.trunk, s));
    if (!hit) {
      missing_capture = true;
      continue;
    }
    ++hits;
    {
      absl::MutexLock lock(&mu_);
      captures_[s] = *hit;
    }
    if (!missing_capture) start = s;
  }
  bool need_trunk = !trunk_final;
  for (size_t r = 0; r < plan_.rows.size(); ++r) {
    absl::MutexLock lock(&mu_);
    if (row_needs_capture[r] && !captures_.count(plan_.rows[r].branch_step)) need_trunk = true;
  }
  if (trunk_final) {
    ++hits;
    absl::MutexLock lock(&mu_);
    trunk_ = {true, trunk_final->png, "cache"};
    v1::GridEvent e;
    v1::GridCell* g = e.mutable_cell();
    g->set_row(-1);
    g->set_column(-1);
    PathToProto(plan_.trunk, g->mutable_path());
    g->set_png(trunk_final->png);
    g->set_source("cache");
    cached_events.push_back(std::move(e));
  }
  {
    absl::MutexLock lock(&mu_);
    cache_hits_ = hits;
  }
  if (ex_.metrics_) ex_.metrics_->CountCache(lookups, hits);
  for (const v1::GridEvent& e : cached_events) Emit(e);

  // Rows whose start is known leave now; the rest when the trunk gets there.
  for (size_t r = 0; r < plan_.rows.size(); ++r) {
    const int k = plan_.rows[r].branch_step;
    bool ready;
    {
      absl::MutexLock lock(&mu_);
      ready = k == 0 || captures_.count(k);
    }
    if (ready) StartRow(r);
  }
  if (need_trunk) {
    std::optional<v1::Tensor> latent;
    if (start > 0) {
      absl::MutexLock lock(&mu_);
      latent = captures_[start].latent;
    }
    Spawn([this, start, latent] { RunTrunk(start, latent); });
  }

  // Join every job; the trunk may spawn rows until it ends.
  while (true) {
    std::thread next;
    {
      absl::MutexLock lock(&mu_);
      if (threads_.empty()) break;
      next = std::move(threads_.back());
      threads_.pop_back();
    }
    next.join();
  }
  {
    absl::MutexLock lock(&mu_);
    if (!status_.ok()) return status_;
  }
  if (cancel_->cancelled()) return absl::CancelledError("grid cancelled");
  return Assemble();
}

absl::StatusOr<v1::Grid> GridExecutor::GridRun::Assemble() {
  absl::MutexLock lock(&mu_);
  v1::Grid grid;
  PlanToProto(plan_, grid.mutable_plan());
  v1::GridCell* trunk = grid.mutable_trunk();
  trunk->set_row(-1);
  trunk->set_column(-1);
  PathToProto(plan_.trunk, trunk->mutable_path());
  trunk->set_png(trunk_.png);
  trunk->set_source(trunk_.source);

  GridFigure figure;
  figure.title = absl::StrCat(plan_.model, " \xC2\xB7 prompt: ",
                              plan_.prompt.empty() ? "(unconditional)" : plan_.prompt);
  figure.subtitle = absl::StrCat("seed ", plan_.trunk.init_seed, " \xC2\xB7 eta ", plan_.eta,
                                 " \xC2\xB7 ", plan_.steps, " steps \xC2\xB7 guidance ",
                                 plan_.guidance);
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
    auto capture = captures_.find(planned.branch_step);
    if (capture != captures_.end()) {
      row->set_trunk_xt_png(capture->second.png);
      row->set_trunk_x0_png(capture->second.x0_png);
      if (auto p = PictureFromPng(capture->second.png); p.ok()) figure_row.trunk_xt = *p;
      if (auto p = PictureFromPng(capture->second.x0_png); p.ok()) figure_row.trunk_x0 = *p;
    }
    for (int c = 0; c < plan_.branches; ++c) {
      v1::GridCell* cell = row->add_cells();
      cell->set_row(static_cast<int>(r));
      cell->set_column(c);
      PathToProto(planned.cells[c], cell->mutable_path());
      cell->set_png(cells_[r][c].png);
      cell->set_source(cells_[r][c].source);
      absl::StatusOr<Picture> picture = PictureFromPng(cells_[r][c].png);
      if (!picture.ok()) return picture.status();
      figure_row.cells.push_back(std::move(*picture));
    }
    figure_row.divergence = MeanPairwiseDistance(figure_row.cells);
    figure_row.divergence_to_trunk = MeanDistanceTo(figure.trunk_final, figure_row.cells);
    row->set_divergence(figure_row.divergence);
    row->set_divergence_to_trunk(figure_row.divergence_to_trunk);
    figure.rows.push_back(std::move(figure_row));
  }
  absl::StatusOr<std::string> png = DrawGridPng(figure);
  if (!png.ok()) return png.status();
  grid.set_png(std::move(*png));
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
                                           const EventSink& sink, GridCancel* cancel) {
  GridRun run(this, plan, deadline, sink, cancel);
  absl::StatusOr<v1::Grid> grid = run.Execute();
  if (metrics_) metrics_->SetCache(cache_->bytes(), cache_->entries());
  return grid;
}

}  // namespace dgrid
