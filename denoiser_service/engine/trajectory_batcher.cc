#include "denoiser_service/engine/trajectory_batcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/philox.h"
#include "denoiser_service/engine/denoiser_model.h"

namespace dgrid {

// ---- Run ----

Run::Wait Run::Next(absl::Duration timeout, RunEvent* event) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                    [this] { return !events_.empty() || done_; });
  if (!events_.empty()) {
    *event = std::move(events_.front());
    events_.pop_front();
    return Wait::kEvent;
  }
  return done_ ? Wait::kDone : Wait::kTimeout;
}

void Run::Cancel() { cancelled_.store(true, std::memory_order_relaxed); }

absl::Status Run::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void Run::Push(RunEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    events_.push_back(std::move(event));
  }
  changed_.notify_all();
}

void Run::Finish(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    done_ = true;
    status_ = std::move(status);
    // A failed run delivers no partial results after its error.
    if (!status_.ok()) events_.clear();
  }
  changed_.notify_all();
}

void Run::TrajectoryDone() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (--remaining_ != 0 || done_) return;
    done_ = true;
    status_ = absl::OkStatus();
  }
  changed_.notify_all();
}

// ---- TrajectoryBatcher ----

struct TrajectoryBatcher::Active {
  std::shared_ptr<Run> run;
  int index = 0;
  int step = 0;
  int end_step = 0;
  // Rows in the forward batch: 2 for classifier-free guidance, else 1.
  int rows = 1;
  int64_t cond = 0;
  size_t next_capture = 0;
  int evals = 0;
  std::vector<float> x;
  std::vector<float> x0;
};

TrajectoryBatcher::TrajectoryBatcher(DenoiserModel* model, Options options,
                                     BatcherObserver* observer)
    : model_(model), options_(options), observer_(observer) {
  thread_ = std::thread([this] { Loop(); });
}

TrajectoryBatcher::~TrajectoryBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
  std::vector<Active> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(pending_);
  }
  FailAll(left, absl::UnavailableError("denoiser is shutting down"));
}

absl::StatusOr<std::shared_ptr<const DdimSchedule>> TrajectoryBatcher::ScheduleFor(
    int steps, Spacing spacing) {
  std::lock_guard<std::mutex> lock(schedule_mu_);
  for (const auto& [key, schedule] : schedules_) {
    if (key.first == steps && key.second == spacing) return schedule;
  }
  absl::StatusOr<DdimSchedule> created =
      DdimSchedule::Create(model_->manifest().schedule, steps, spacing);
  if (!created.ok()) return created.status();
  auto schedule = std::make_shared<const DdimSchedule>(std::move(*created));
  // Few distinct (steps, spacing) pairs occur; keep the list short anyway.
  if (schedules_.size() >= 64) schedules_.erase(schedules_.begin());
  schedules_.push_back({{steps, spacing}, schedule});
  return schedule;
}

absl::Status TrajectoryBatcher::Validate(const RunRequest& r) const {
  const BundleManifest& m = model_->manifest();
  const int steps = r.sampler.steps;
  if (steps < 1 || steps > m.schedule.train_timesteps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler.steps must be in [1, ", m.schedule.train_timesteps, "], got ", steps));
  }
  if (!(r.sampler.eta >= 0.0f && r.sampler.eta <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler.eta must be in [0, 1], got ", r.sampler.eta));
  }
  if (!(r.sampler.guidance >= 0.0f && r.sampler.guidance <= 100.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampler.guidance must be in [0, 100], got ", r.sampler.guidance));
  }
  if (r.class_index != -1 &&
      (r.class_index < 0 || r.class_index >= static_cast<int64_t>(m.class_labels.size()))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "conditioning.class_index must be in [0, ", m.class_labels.size(), ") for model ",
        m.name, ", got ", r.class_index));
  }
  const int end = r.end_step == 0 ? steps : r.end_step;
  if (r.start_step < 0 || r.start_step >= steps) {
    return absl::InvalidArgumentError(absl::StrCat("start_step must be in [0, ", steps,
                                                   "), got ", r.start_step));
  }
  if (end <= r.start_step || end > steps) {
    return absl::InvalidArgumentError(absl::StrCat("end_step must be in (start_step, ", steps,
                                                   "], got ", r.end_step));
  }
  for (size_t i = 0; i < r.capture_steps.size(); ++i) {
    const int c = r.capture_steps[i];
    if (c < r.start_step || c >= end || (i > 0 && c <= r.capture_steps[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "capture_steps[", i, "] must be increasing and in [start_step, end_step), got ", c));
    }
  }
  if (r.trajectories.empty()) {
    return absl::InvalidArgumentError("trajectories must not be empty");
  }
  const size_t numel = static_cast<size_t>(m.LatentNumel());
  for (size_t i = 0; i < r.trajectories.size(); ++i) {
    const TrajectoryStart& t = r.trajectories[i];
    const std::string field = absl::StrCat("trajectories[", i, "]");
    absl::Status path = ValidatePath(t.path, steps, field + ".path");
    if (!path.ok()) return path;
    if (t.latent.empty() && r.start_step != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".start_latent is required when start_step > 0"));
    }
    if (!t.latent.empty() && t.latent.size() != numel) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".start_latent must have ", numel,
                                                     " elements, got ", t.latent.size()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Run>> TrajectoryBatcher::Start(RunRequest request) {
  absl::Status valid = Validate(request);
  if (!valid.ok()) return valid;
  absl::StatusOr<std::shared_ptr<const DdimSchedule>> schedule =
      ScheduleFor(request.sampler.steps, request.sampler.spacing);
  if (!schedule.ok()) return schedule.status();
  if (request.end_step == 0) request.end_step = request.sampler.steps;

  const int n = static_cast<int>(request.trajectories.size());
  // Admission control: reserve n slots or refuse the whole run.
  int current = outstanding_.load();
  do {
    if (current + n > options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "denoiser queue is full (", current, " of ", options_.max_queue,
          " trajectories admitted); retry later or on another replica"));
    }
  } while (!outstanding_.compare_exchange_weak(current, current + n));

  auto run = std::make_shared<Run>();
  run->schedule_ = std::move(*schedule);
  run->enqueued_ = absl::Now();
  run->remaining_ = n;

  const BundleManifest& m = model_->manifest();
  const bool conditional = request.class_index >= 0;
  const float g = request.sampler.guidance;
  std::vector<Active> admitted(n);
  for (int i = 0; i < n; ++i) {
    Active& a = admitted[i];
    a.run = run;
    a.index = i;
    a.step = request.start_step;
    a.end_step = request.end_step;
    a.rows = conditional && g != 0.0f && g != 1.0f ? 2 : 1;
    a.cond = conditional && g != 0.0f ? request.class_index : m.null_label;
    a.x = std::move(request.trajectories[i].latent);
    if (a.x.empty()) {
      a.x.resize(m.LatentNumel());
      FillGaussian({request.trajectories[i].path.init_seed, NoiseStream::kInitialLatent, 0},
                   absl::MakeSpan(a.x));
    }
    if (request.previews) a.x0.resize(a.x.size());
  }
  run->request_ = std::move(request);
  // A capture at the start step is the start latent itself (x_T when 0):
  // it goes out now, before any forward pass, with no x0 prediction yet.
  const RunRequest& req = run->request_;
  if (!req.capture_steps.empty() && req.capture_steps.front() == req.start_step) {
    for (Active& a : admitted) {
      a.next_capture = 1;
      RunEvent event;
      event.kind = RunEvent::Kind::kCapture;
      event.trajectory = a.index;
      event.step = req.start_step;
      event.timestep = run->schedule_->timestep(req.start_step);
      event.latent = a.x;
      run->Push(std::move(event));
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Active& a : admitted) pending_.push_back(std::move(a));
  }
  work_.notify_one();
  return run;
}

void TrajectoryBatcher::FailAll(std::vector<Active>& active, const absl::Status& status) {
  outstanding_ -= static_cast<int>(active.size());
  for (Active& a : active) a.run->Finish(status);
  active.clear();
}

void TrajectoryBatcher::Loop() {
  std::vector<Active> active;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [&] { return stop_ || !pending_.empty() || !active.empty(); });
      if (stop_) break;
      // New runs join here, between iterations.
      for (Active& a : pending_) active.push_back(std::move(a));
      pending_.clear();
    }
    Iterate(active);
  }
  FailAll(active, absl::UnavailableError("denoiser is shutting down"));
}

void TrajectoryBatcher::Iterate(std::vector<Active>& active) {
  // Drop trajectories whose run was cancelled, timed out or already failed.
  const absl::Time now = absl::Now();
  size_t kept = 0;
  for (size_t i = 0; i < active.size(); ++i) {
    Active& a = active[i];
    Run& run = *a.run;
    absl::Status stop;
    if (run.cancelled()) {
      stop = absl::CancelledError("run cancelled by the caller");
    } else if (now > run.request_.deadline) {
      stop = absl::DeadlineExceededError("deadline passed before the trajectory finished");
    } else {
      std::lock_guard<std::mutex> lock(run.mu_);
      if (run.done_) stop = run.status_.ok() ? absl::InternalError("run ended") : run.status_;
    }
    if (!stop.ok()) {
      // Release the slot before the caller can observe the end of its run.
      --outstanding_;
      run.Finish(stop);
      continue;
    }
    if (kept != i) active[kept] = std::move(a);
    ++kept;
  }
  active.resize(kept);
  if (observer_) observer_->OnActive(static_cast<int>(active.size()));
  if (active.empty()) return;

  // Oldest first: trunks, submitted before their branches, stay on the
  // critical path. A guided trajectory needs both of its rows in one batch.
  std::vector<size_t> chosen;
  int rows = 0;
  for (size_t i = 0; i < active.size() && rows < options_.max_batch; ++i) {
    if (rows + active[i].rows > options_.max_batch && !chosen.empty()) continue;
    chosen.push_back(i);
    rows += active[i].rows;
  }

  const BundleManifest& m = model_->manifest();
  const size_t numel = static_cast<size_t>(m.LatentNumel());
  batch_x_.resize(rows * numel);
  batch_out_.resize(rows * numel);
  batch_t_.resize(rows);
  batch_cond_.resize(rows);
  int row = 0;
  for (size_t i : chosen) {
    const Active& a = active[i];
    const int t = a.run->schedule_->timestep(a.step);
    for (int r = 0; r < a.rows; ++r) {
      std::copy(a.x.begin(), a.x.end(), batch_x_.begin() + (row + r) * numel);
      batch_t_[row + r] = t;
      batch_cond_[row + r] = r == 0 ? a.cond : m.null_label;
    }
    row += a.rows;
  }

  if (options_.debug_step_delay > absl::ZeroDuration()) {
    absl::SleepFor(options_.debug_step_delay);
  }
  const absl::Time forward_start = absl::Now();
  absl::Status forward =
      model_->Forward(batch_x_, batch_t_, batch_cond_, rows, absl::MakeSpan(batch_out_));
  const absl::Duration forward_time = absl::Now() - forward_start;
  if (observer_) {
    observer_->OnForward(static_cast<int>(chosen.size()), rows, forward_time);
  }

  std::vector<bool> finished(active.size(), false);
  row = 0;
  for (size_t i : chosen) {
    Active& a = active[i];
    Run& run = *a.run;
    const RunRequest& req = run.request_;
    if (!forward.ok()) {
      --outstanding_;
      finished[i] = true;
      run.Finish(forward);
      continue;
    }
    if (a.evals == 0 && observer_) observer_->OnQueueWait(forward_start - run.enqueued_);
    float* out = batch_out_.data() + row * numel;
    if (a.rows == 2) {
      // eps = eps_u + g (eps_c - eps_u); the conditional row comes first.
      const float* uncond = out + numel;
      const float g = req.sampler.guidance;
      for (size_t j = 0; j < numel; ++j) out[j] = uncond[j] + g * (out[j] - uncond[j]);
    }
    row += a.rows;

    const DdimSchedule& schedule = *run.schedule_;
    const bool noisy = req.sampler.eta > 0.0f;
    if (noisy) {
      noise_.resize(numel);
      const Path& path = req.trajectories[a.index].path;
      FillGaussian({path.NoiseSeedAt(a.step), NoiseStream::kStep, static_cast<uint32_t>(a.step)},
                   absl::MakeSpan(noise_));
    }
    const int timestep = schedule.timestep(a.step);
    schedule.Apply(a.step, req.sampler.eta, {out, numel},
                   noisy ? absl::Span<const float>(noise_) : absl::Span<const float>(),
                   absl::MakeSpan(a.x), absl::MakeSpan(a.x0));
    ++a.step;
    ++a.evals;

    if (a.step == a.end_step) {
      RunEvent event;
      event.kind = RunEvent::Kind::kFinal;
      event.trajectory = a.index;
      event.step = a.step;
      event.timestep = timestep;
      event.latent = std::move(a.x);
      event.x0 = std::move(a.x0);
      event.model_evals = a.evals;
      run.Push(std::move(event));
      --outstanding_;
      finished[i] = true;
      run.TrajectoryDone();
    } else if (a.next_capture < req.capture_steps.size() &&
               req.capture_steps[a.next_capture] == a.step) {
      ++a.next_capture;
      RunEvent event;
      event.kind = RunEvent::Kind::kCapture;
      event.trajectory = a.index;
      event.step = a.step;
      event.timestep = schedule.timestep(a.step);
      event.latent = a.x;
      event.x0 = a.x0;
      run.Push(std::move(event));
    }
  }

  kept = 0;
  for (size_t i = 0; i < active.size(); ++i) {
    if (finished[i]) continue;
    if (kept != i) active[kept] = std::move(active[i]);
    ++kept;
  }
  active.resize(kept);
  // Also after the last trajectories finish, so an idle replica reads 0
  // (the HPA scales on this gauge).
  if (observer_) observer_->OnActive(static_cast<int>(active.size()));
}

}  // namespace dgrid
