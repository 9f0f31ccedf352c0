#include "denoiser_service/engine/trajectory_batcher.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <future>
#include <limits>
#include <map>
#include <numeric>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/philox.h"
#include "common/short_text.h"
#include "common/status_macros.h"
#include "common/timesteps.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/engine/field_error.h"
#include "denoiser_service/text/tokenizer.h"

namespace dgrid {

// ---- Run ----

namespace {

int64_t EventBytes(const RunEvent& e) {
  return static_cast<int64_t>((e.latent.size() + e.x0.size()) * sizeof(float) + e.pixels.size() +
                              e.x0_pixels.size());
}

}  // namespace

Run::Wait Run::Next(absl::Duration timeout, RunEvent* event) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                    [this] { return !events_.empty() || done_; });
  if (!events_.empty()) {
    *event = std::move(events_.front());
    events_.pop_front();
    events_bytes_ -= EventBytes(*event);
    return Wait::kEvent;
  }
  return done_ ? Wait::kDone : Wait::kTimeout;
}

void Run::Cancel() { cancelled_.store(true, std::memory_order_relaxed); }

void Run::AttachCaller(std::function<bool()> gone) {
  std::lock_guard<std::mutex> lock(caller_mu_);
  caller_gone_ = std::move(gone);
}

void Run::DetachCaller() {
  std::lock_guard<std::mutex> lock(caller_mu_);
  caller_gone_ = nullptr;
}

bool Run::CallerGone() {
  std::lock_guard<std::mutex> lock(caller_mu_);
  return caller_gone_ && caller_gone_();
}

absl::Status Run::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void Run::Push(RunEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    events_bytes_ += EventBytes(event);
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
    if (!status_.ok()) {
      events_.clear();
      events_bytes_ = 0;
    }
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
  uint64_t fairness_key = 0;
  uint64_t fairness_rank = 0;
  // When its key's oldest run still here was admitted (InheritArrivals):
  // orders keys of equal rank.
  uint64_t arrival = 0;
  int index = 0;
  int step = 0;
  int end_step = 0;
  // Rows in the forward batch: 2 for classifier-free guidance, else 1.
  int rows = 1;
  int64_t cond = 0;
  size_t next_capture = 0;
  int evals = 0;
  // The largest magnitude of the start latent the caller gave (0 when x_T
  // came from the seed): to blame the input when the output overflows.
  float latent_max_abs = 0.0f;
  std::vector<float> x;
  std::vector<float> x0;
  // Text models: the contexts of the conditional and the unconditional row
  // (the prompt's and the negative prompt's), shared with the cache.
  std::shared_ptr<const std::vector<float>> context;
  std::shared_ptr<const std::vector<float>> uncontext;
  bool lone_row_unconditional = false;
  // Conditioning changes ahead of `step` (prompt switches on its path), in
  // order; the next one to apply.
  std::vector<std::pair<int, Phase>> switches;
  size_t next_switch = 0;
};

// What a trajectory is conditioned on over one stretch of its path.
struct TrajectoryBatcher::Phase {
  int rows = 1;
  int64_t cond = 0;
  bool lone_row_unconditional = false;
  // Text models: the prompt's and the negative prompt's ids (owned by the
  // run), and their contexts once admitted.
  const std::vector<int64_t>* prompt_ids = nullptr;
  const std::vector<int64_t>* negative_ids = nullptr;
  std::shared_ptr<const std::vector<float>> context;
  std::shared_ptr<const std::vector<float>> uncontext;
};

struct TrajectoryBatcher::BesideJob {
  int items = 0;
  std::function<absl::Status(int begin, int count)> work;
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;
  bool decode = false;  // a Decode request's: the observer counts its images
  // Items done so far: the first `done_items`.
  int done_items = 0;
  std::promise<absl::Status> done;
};

// An event produced in this iteration, delivered after the batched decode.
struct TrajectoryBatcher::Emitted {
  std::shared_ptr<Run> run;
  RunEvent event;
  // The largest magnitude of the start latent the caller gave its
  // trajectory; 0 when x_T came from the seed. A latent whose image turns
  // non-finite is blamed on the caller by it, as a step's failure is.
  float given_latent_max_abs = 0.0f;
};

namespace {

bool AllFinite(absl::Span<const float> values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// Rows [row, row + rows) of a laid-out forward batch through the model on
// their own, into `out`.
absl::Status ForwardRows(DenoiserModel& model, absl::Span<const float> x,
                         absl::Span<const float> t, absl::Span<const int64_t> cond,
                         absl::Span<const float> encodings, absl::Span<const float> time_ids,
                         int row, int rows, absl::Span<float> out) {
  const size_t numel = static_cast<size_t>(model.latent_numel());
  if (!model.manifest().is_text()) {
    return model.Forward(x.subspan(row * numel, rows * numel), t.subspan(row, rows),
                         cond.subspan(row, rows), rows, out);
  }
  const size_t per = model.encoding_size();
  return model.ForwardText(x.subspan(row * numel, rows * numel), t.subspan(row, rows),
                           encodings.subspan(row * per, rows * per),
                           time_ids.empty() ? time_ids : time_ids.subspan(row * 6, rows * 6),
                           rows, out);
}

}  // namespace

TrajectoryBatcher::TrajectoryBatcher(DenoiserModel* model, Options options,
                                     BatcherObserver* observer)
    : model_(model),
      options_(options),
      observer_(observer),
      contexts_(std::make_unique<ContextCache>(std::max(0, options.text_cache_entries))),
      workers_({.cores = options.cores, .min_chunk_rows = options.min_chunk_rows}),
      zero_encoding_(std::make_shared<const std::vector<float>>(model->encoding_size(), 0.0f)) {
  // No batch larger than the bundle's graphs were checked at.
  const int verified = model_->manifest().max_batch;
  if (verified > 0) options_.max_batch = std::min(options_.max_batch, verified);
  decode_chunk_ = std::min(kBesideChunk, options_.max_batch);
  max_decode_batch_ = std::min(kMaxDecodeBatch, options_.max_batch);
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
  std::vector<std::shared_ptr<BesideJob>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(pending_);
    jobs.swap(besides_);
  }
  FailAll(left, absl::UnavailableError("denoiser is shutting down"));
  jobs.insert(jobs.end(), beside_queue_.begin(), beside_queue_.end());
  beside_queue_.clear();
  for (auto& job : jobs) job->done.set_value(absl::UnavailableError("denoiser is shutting down"));
}

absl::StatusOr<std::vector<uint8_t>> TrajectoryBatcher::Decode(std::vector<float> latents,
                                                               int batch, absl::Time deadline,
                                                               std::function<bool()> cancelled) {
  if (batch == 0) return std::vector<uint8_t>();
  std::vector<uint8_t> pixels(batch * model_->manifest().ImageNumel());
  auto job = std::make_shared<BesideJob>();
  job->items = batch;
  job->decode = true;
  job->deadline = deadline;
  job->cancelled = std::move(cancelled);
  std::vector<char> non_finite(batch, 0);
  job->work = [&](int begin, int count) {
    return DecodeInto(latents, begin, count, pixels, &non_finite);
  };
  RETURN_IF_ERROR(RunJob(std::move(job)));
  // An image the decoder gave NaN for fails the call, naming its latent:
  // the caller's fault only past any sampler's scale (a step's rule).
  const auto bad = std::find(non_finite.begin(), non_finite.end(), 1);
  if (bad == non_finite.end()) return pixels;
  const int i = static_cast<int>(bad - non_finite.begin());
  const size_t latent = static_cast<size_t>(model_->latent_numel());
  const float largest = LargestMagnitude(absl::MakeConstSpan(latents).subspan(i * latent, latent));
  const std::string field = absl::StrCat("latents[", i, "]");
  if (largest > kLatentBeyondAnySampler) {
    return InvalidFieldError(
        field, absl::StrCat(": decodes to non-finite pixels (NaN or Inf); its largest magnitude, ",
                            largest, ", is outside what this model's decoder takes"));
  }
  return absl::InternalError(
      absl::StrCat("the decoder produced non-finite pixels (NaN or Inf) from ", field));
}

absl::Status TrajectoryBatcher::DecodeInto(absl::Span<const float> latents, int begin, int count,
                                           std::vector<uint8_t>& pixels,
                                           std::vector<char>* non_finite) {
  const size_t latent = static_cast<size_t>(model_->latent_numel());
  const size_t image = static_cast<size_t>(model_->manifest().ImageNumel());
  std::vector<char> flags;
  ASSIGN_OR_RETURN(std::vector<uint8_t> part,
                   model_->Decode(latents.subspan(begin * latent, count * latent), count,
                                  non_finite ? &flags : nullptr));
  std::copy(part.begin(), part.end(), pixels.begin() + begin * image);
  if (non_finite) std::copy(flags.begin(), flags.end(), non_finite->begin() + begin);
  return absl::OkStatus();
}

absl::Status TrajectoryBatcher::RunBeside(int items,
                                          std::function<absl::Status(int begin, int count)> work,
                                          absl::Time deadline, std::function<bool()> cancelled) {
  if (items == 0) return absl::OkStatus();
  auto job = std::make_shared<BesideJob>();
  job->items = items;
  job->work = std::move(work);
  job->deadline = deadline;
  job->cancelled = std::move(cancelled);
  return RunJob(std::move(job));
}

absl::Status TrajectoryBatcher::RunJob(std::shared_ptr<BesideJob> job) {
  std::future<absl::Status> result = job->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return absl::UnavailableError("denoiser is shutting down");
    besides_.push_back(job);
  }
  work_.notify_one();
  return result.get();
}

// Jobs beside the trajectories (Decode requests, judges) are work like the
// trajectories' and get the share of one fairness key: a turn of at most
// kBesideChunk items of the oldest job runs, then waits until the forward
// passes beside it have had as much time per key (decode_debt_). Jobs take
// turns, so one 256-image request holds back neither a small grid nor a
// small Decode. With no trajectory active, jobs run at full speed.
void TrajectoryBatcher::RunBesideTurn() {
  std::shared_ptr<BesideJob> job = std::move(beside_queue_.front());
  beside_queue_.pop_front();
  const int n = std::min(decode_chunk_, job->items - job->done_items);
  const absl::Time start = absl::Now();
  const int first = job->done_items;
  const absl::Status status =
      workers_.Run(n, [&](int begin, int count) { return job->work(first + begin, count); });
  const absl::Duration took = absl::Now() - start;
  decode_debt_ += took;
  if (job->decode && observer_) observer_->OnDecode(n, took);
  if (!status.ok()) {
    job->done.set_value(status);
    return;
  }
  job->done_items += n;
  if (job->done_items == job->items) {
    job->done.set_value(absl::OkStatus());
  } else {
    beside_queue_.push_back(std::move(job));  // its turn ends
  }
}

// Ends every queued job whose caller went away or whose deadline passed,
// wherever it stands in the queue: its RPC thread and the images it holds
// are let go now, not when its turn would have come.
void TrajectoryBatcher::EndStoppedJobs() {
  if (beside_queue_.empty()) return;
  const absl::Time now = absl::Now();
  // The deadline first: gRPC marks a call cancelled once its deadline has
  // passed, and the metrics count a timeout (overload) apart from a caller
  // that left.
  auto stopped = [&](const std::shared_ptr<BesideJob>& job) {
    if (now > job->deadline) {
      job->done.set_value(absl::DeadlineExceededError(absl::StrCat(
          "the deadline passed after ", job->done_items, " of ", job->items, " items")));
      return true;
    }
    if (job->cancelled && job->cancelled()) {
      job->done.set_value(absl::CancelledError("the caller cancelled"));
      return true;
    }
    return false;
  };
  beside_queue_.erase(std::remove_if(beside_queue_.begin(), beside_queue_.end(), stopped),
                      beside_queue_.end());
}

void TrajectoryBatcher::CreditDecodes(absl::Duration forward, int keys) {
  decode_debt_ = std::max(absl::ZeroDuration(), decode_debt_ - forward / std::max(1, keys));
}

absl::StatusOr<std::shared_ptr<const SamplerSchedule>> TrajectoryBatcher::ScheduleFor(
    const SamplerChoice& choice) {
  std::lock_guard<std::mutex> lock(schedule_mu_);
  for (const auto& [key, schedule] : schedules_) {
    if (key.steps == choice.steps && key.spacing == choice.spacing &&
        key.sampler == choice.sampler) {
      return schedule;
    }
  }
  // Named as the request's field: the schedule's own error says "steps".
  const NoiseScheduleSpec& spec = model_->manifest().schedule;
  if (const std::string problem =
          TimestepsProblem(spec.train_timesteps, choice.steps, choice.spacing, spec.steps_offset);
      !problem.empty()) {
    return InvalidFieldError("sampler.steps", absl::StrCat(": ", problem));
  }
  // The planner's rule, before any work.
  if (choice.sampler == Sampler::kEulerAncestral && choice.spacing == Spacing::kLinspace &&
      !model_->manifest().timestep_is_float &&
      LinspaceHasFractions(spec.train_timesteps, choice.steps)) {
    return InvalidFieldError(
        "sampler.spacing", absl::StrCat(": ", LinspaceFractionsProblem(model_->manifest().name,
                                                                        spec.train_timesteps,
                                                                        choice.steps)));
  }
  absl::StatusOr<SamplerSchedule> created = SamplerSchedule::Create(spec, choice);
  if (!created.ok()) return created.status();
  auto schedule = std::make_shared<const SamplerSchedule>(std::move(*created));
  // Few distinct (steps, spacing, sampler) choices occur; keep the list
  // short anyway.
  if (schedules_.size() >= 64) schedules_.erase(schedules_.begin());
  schedules_.push_back({choice, schedule});
  return schedule;
}

namespace {

// SDXL-style size conditioning: only for a model with size ids, and each
// size and offset within bounds (0: the model's default).
absl::Status ValidateSize(const SizeConditioning& size, const BundleManifest& m) {
  if (!(size == SizeConditioning()) && !(m.is_text() && m.text.size_ids)) {
    return InvalidFieldError("size", absl::StrCat(": ", m.name, " takes no size conditioning"));
  }
  for (const auto& [field, value] : size.Fields()) {
    if (value < 0 || value > SizeConditioning::kMaxPixels) {
      return InvalidFieldError(absl::StrCat("size.", field), absl::StrCat(
          " must be in [0, ", SizeConditioning::kMaxPixels, "], got ", value));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// Errors name RunRequest's fields (field_error.h); the gRPC adapter renames
// them to the wire's.
absl::Status TrajectoryBatcher::Validate(const RunRequest& r) const {
  const BundleManifest& m = model_->manifest();
  const int steps = r.sampler.steps;
  if (steps < 1 || steps > m.schedule.train_timesteps) {
    return InvalidFieldError("sampler.steps", absl::StrCat(" must be in [1, ",
                                                           m.schedule.train_timesteps, "], got ",
                                                           steps));
  }
  if (!(r.sampler.eta >= 0.0f && r.sampler.eta <= 1.0f)) {
    return InvalidFieldError("sampler.eta",
                             absl::StrCat(" must be in [0, 1], got ", ExactNumber(r.sampler.eta)));
  }
  if (!(r.sampler.guidance >= 0.0f && r.sampler.guidance <= 100.0f)) {
    return InvalidFieldError("sampler.guidance",
                             absl::StrCat(" must be in [0, 100], got ",
                                          ExactNumber(r.sampler.guidance)));
  }
  RETURN_IF_ERROR(ValidateSize(r.size, m));
  if (m.is_text() && r.class_index != -1) {
    return InvalidFieldError("class_index",
                             absl::StrCat(": ", m.name, " is a text model; give a prompt"));
  }
  if (!m.is_text() && !r.negative_prompt.empty()) {
    return InvalidFieldError("negative_prompt",
                             absl::StrCat(": ", m.name, " is a class model; it takes none"));
  }
  if (r.class_index != -1 &&
      (r.class_index < 0 || r.class_index >= static_cast<int64_t>(m.class_labels.size()))) {
    return InvalidFieldError("class_index",
                             absl::StrCat(" must be in [0, ", m.class_labels.size(),
                                          ") for model ", m.name, ", got ", r.class_index));
  }
  const int end = r.end_step == 0 ? steps : r.end_step;
  if (r.start_step < 0 || r.start_step >= steps) {
    return InvalidFieldError("start_step",
                             absl::StrCat(" must be in [0, ", steps, "), got ", r.start_step));
  }
  if (end <= r.start_step || end > steps) {
    return InvalidFieldError("end_step", absl::StrCat(" must be in (start_step, ", steps,
                                                      "], got ", r.end_step));
  }
  for (size_t i = 0; i < r.capture_steps.size(); ++i) {
    const int c = r.capture_steps[i];
    if (c < r.start_step || c >= end || (i > 0 && c <= r.capture_steps[i - 1])) {
      return InvalidFieldError(
          absl::StrCat("capture_steps[", i, "]"),
          absl::StrCat(" must be increasing and in [start_step, end_step), got ", c));
    }
  }
  if (r.trajectories.empty()) return InvalidFieldError("trajectories", " must not be empty");
  const size_t numel = static_cast<size_t>(m.LatentNumel());
  for (size_t i = 0; i < r.trajectories.size(); ++i) {
    const TrajectoryStart& t = r.trajectories[i];
    const std::string field = absl::StrCat("trajectories[", i, "]");
    absl::Status path = ValidatePath(t.path, steps, field + ".path");
    if (!path.ok()) return path;
    for (size_t j = 0; j < t.path.segments.size(); ++j) {
      const std::optional<SegmentConditioning>& c = t.path.segments[j].conditioning;
      if (!c) continue;
      const std::string at = absl::StrCat(field, ".path.segments[", j, "].conditioning");
      if (m.is_text() && c->class_index != -1) {
        return InvalidFieldError(at + ".class_index",
                                 absl::StrCat(": ", m.name, " is a text model; give a prompt"));
      }
      if (!m.is_text()) {
        if (!c->negative_prompt.empty()) {
          return InvalidFieldError(
              at + ".negative_prompt",
              absl::StrCat(": ", m.name, " is a class model; it takes none"));
        }
        if (!c->prompt.empty() && m.ClassIndex(c->prompt) < 0) {
          return InvalidFieldError(
              at + ".prompt",
              absl::StrCat(": ", m.name, " is a class model and has no class of that name"));
        }
        if (c->class_index < -1 ||
            c->class_index >= static_cast<int64_t>(m.class_labels.size())) {
          return InvalidFieldError(at + ".class_index",
                                   absl::StrCat(" must be in [0, ", m.class_labels.size(),
                                                "), got ", c->class_index));
        }
      }
    }
    const std::string latent = field + ".latent";
    if (t.latent.empty() && r.start_step != 0) {
      return InvalidFieldError(latent, " is required when start_step > 0");
    }
    if (!t.latent.empty() && t.latent.size() != numel) {
      return InvalidFieldError(
          latent, absl::StrCat(" must have ", numel, " elements, got ", t.latent.size()));
    }
    for (size_t j = 0; j < t.latent.size(); ++j) {
      if (!std::isfinite(t.latent[j])) {
        return InvalidFieldError(
            latent, absl::StrCat(" holds a non-finite value (NaN or Inf) at element ", j));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Run>> TrajectoryBatcher::Start(RunRequest request) {
  absl::Status valid = Validate(request);
  if (!valid.ok()) return valid;
  absl::StatusOr<std::shared_ptr<const SamplerSchedule>> schedule = ScheduleFor(
      {request.sampler.steps, request.sampler.spacing, request.sampler.sampler});
  if (!schedule.ok()) return schedule.status();
  if (request.end_step == 0) request.end_step = request.sampler.steps;

  const int n = static_cast<int>(request.trajectories.size());
  RETURN_IF_ERROR(ReserveSlots(n));

  auto run = std::make_shared<Run>();
  run->schedule_ = std::move(*schedule);
  run->enqueued_ = absl::Now();
  run->remaining_ = n;

  const BundleManifest& m = model_->manifest();
  if (m.is_text()) {
    // Tokenizing is cheap and stateless, so it runs here; encoding, which
    // runs the model, happens on the batcher's thread at admission.
    const Tokenizer& tokenizer = *model_->tokenizer();
    run->prompt_ids_ = tokenizer.Padded(tokenizer.Encode(request.prompt));
    run->negative_ids_ = NegativeIds(request.negative_prompt);
    if (m.text.size_ids) run->time_ids_ = model_->TimeIds(request.size);
  }
  // Each distinct conditioning of the run (the request's, its paths'
  // switches) is tokenized once, however many trajectories share it.
  std::vector<std::pair<SegmentConditioning, Phase>> phases;
  auto phase_of = [&](const SegmentConditioning& c) {
    for (const auto& [known, phase] : phases) {
      if (known == c) return phase;
    }
    phases.emplace_back(c, PhaseFor(c, request, *run));
    return phases.back().second;
  };
  const Phase first = phase_of(
      {request.prompt, request.negative_prompt, static_cast<int>(request.class_index)});
  const uint64_t arrival = next_arrival_.fetch_add(1);
  // A caller states its rank (the orchestrator: its grid's planned steps);
  // no claim ranks a run below its own work, so a rank buys no more than an
  // honest grid of that size gets.
  const uint64_t rank = std::max<uint64_t>(
      request.fairness_rank, static_cast<uint64_t>(n) * (request.end_step - request.start_step));
  run->rank_ = rank;
  std::vector<Active> admitted(n);
  for (int i = 0; i < n; ++i) {
    Active& a = admitted[i];
    a.run = run;
    a.fairness_key = request.fairness_key;
    a.fairness_rank = rank;
    a.arrival = arrival;
    a.index = i;
    a.step = request.start_step;
    a.end_step = request.end_step;
    a.rows = first.rows;
    a.cond = first.cond;
    a.lone_row_unconditional = first.lone_row_unconditional;
    for (const Segment& segment : request.trajectories[i].path.segments) {
      if (segment.conditioning) {
        a.switches.push_back(
            {segment.from_step, phase_of(*segment.conditioning)});
      }
    }
    SetStartLatent(request.trajectories[i], *run->schedule_, a);
    if (request.previews) a.x0.resize(a.x.size());
  }
  run->request_ = std::move(request);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Active& a : admitted) pending_.push_back(std::move(a));
  }
  work_.notify_one();
  return run;
}

std::vector<int64_t> TrajectoryBatcher::NegativeIds(const std::string& text) const {
  if (text.empty() && model_->manifest().text.zeros_for_empty_negative) return {};
  const Tokenizer& tokenizer = *model_->tokenizer();
  return tokenizer.Padded(tokenizer.Encode(text));
}

absl::Status TrajectoryBatcher::ReserveSlots(int n) {
  int current = outstanding_.load();
  do {
    if (current + n > options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "denoiser queue is full (", current, " of ", options_.max_queue,
          " trajectories admitted); retry later or on another replica"));
    }
  } while (!outstanding_.compare_exchange_weak(current, current + n));
  return absl::OkStatus();
}

void TrajectoryBatcher::SetStartLatent(TrajectoryStart& start, const SamplerSchedule& schedule,
                                       Active& a) const {
  a.x = std::move(start.latent);
  a.latent_max_abs = LargestMagnitude(a.x);
  if (!a.x.empty()) return;
  a.x.resize(model_->latent_numel());
  FillGaussian({start.path.init_seed, NoiseStream::kInitialLatent, 0}, absl::MakeSpan(a.x));
  const float scale = static_cast<float>(schedule.initial_scale());
  if (scale != 1.0f) {
    for (float& v : a.x) v *= scale;
  }
}

TrajectoryBatcher::Phase TrajectoryBatcher::PhaseFor(const SegmentConditioning& c,
                                                     const RunRequest& request,
                                                     Run& run) const {
  const BundleManifest& m = model_->manifest();
  const float g = request.sampler.guidance;
  Phase phase;
  int64_t class_index = c.class_index;
  if (m.is_text() && c.prompt == request.prompt && c.negative_prompt == request.negative_prompt) {
    // The request's own text: tokenized already.
    phase.prompt_ids = &run.prompt_ids_;
    phase.negative_ids = &run.negative_ids_;
  } else if (m.is_text()) {
    const Tokenizer& tokenizer = *model_->tokenizer();
    std::vector<int64_t> prompt = tokenizer.Padded(tokenizer.Encode(c.prompt));
    std::vector<int64_t> negative = NegativeIds(c.negative_prompt);
    // The run keeps each distinct pair of ids once, the request's first.
    if (prompt == run.prompt_ids_ && negative == run.negative_ids_) {
      phase.prompt_ids = &run.prompt_ids_;
      phase.negative_ids = &run.negative_ids_;
    } else {
      auto known = std::find_if(run.switch_ids_.begin(), run.switch_ids_.end(),
                                [&](const auto& ids) {
                                  return ids.first == prompt && ids.second == negative;
                                });
      if (known == run.switch_ids_.end()) {
        known = run.switch_ids_.emplace(run.switch_ids_.end(), std::move(prompt),
                                        std::move(negative));
      }
      phase.prompt_ids = &known->first;
      phase.negative_ids = &known->second;
    }
  } else if (!c.prompt.empty()) {
    class_index = m.ClassIndex(c.prompt);
  }
  // A class model: a class. A text model: the same text on both rows makes
  // guidance the identity, so one row does.
  const bool conditional =
      m.is_text() ? *phase.prompt_ids != *phase.negative_ids : class_index >= 0;
  phase.rows = conditional && g != 0.0f && g != 1.0f ? 2 : 1;
  phase.cond = conditional && g != 0.0f ? class_index : m.null_label;
  // Text: a lone row is the unconditional one only for guidance 0.
  phase.lone_row_unconditional = m.is_text() && g == 0.0f;
  return phase;
}

void TrajectoryBatcher::ApplySwitches(Active& a) {
  while (a.next_switch < a.switches.size() && a.switches[a.next_switch].first <= a.step) {
    const Phase& phase = a.switches[a.next_switch++].second;
    a.rows = phase.rows;
    a.cond = phase.cond;
    a.lone_row_unconditional = phase.lone_row_unconditional;
    if (phase.context) {
      a.context = phase.context;
      a.uncontext = phase.uncontext;
    }
  }
}

void TrajectoryBatcher::FailAll(std::vector<Active>& active, const absl::Status& status) {
  outstanding_ -= static_cast<int>(active.size());
  for (Active& a : active) a.run->Finish(status);
  active.clear();
}

void TrajectoryBatcher::Loop() {
  std::vector<Active> active, arrivals;
  std::vector<std::shared_ptr<BesideJob>> jobs;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [&] {
        return stop_ || !pending_.empty() || !besides_.empty() || !active.empty() ||
               !beside_queue_.empty() || !emitted_.empty();
      });
      if (stop_) break;
      // New runs and jobs beside them join here, between iterations.
      arrivals.swap(pending_);
      jobs.swap(besides_);
    }
    for (auto& job : jobs) beside_queue_.push_back(std::move(job));
    jobs.clear();
    EndStoppedJobs();
    // Work beside no trajectory took no one's turn: it leaves no debt for
    // the next runs (those arriving now included) to wait out.
    const bool idle = active.empty();
    if (!beside_queue_.empty() && (idle || decode_debt_ <= absl::ZeroDuration())) {
      RunBesideTurn();
    }
    if (idle) decode_debt_ = absl::ZeroDuration();
    // A call that went away while it waited is neither encoded for nor
    // admitted.
    DropStopped(arrivals);
    if (!arrivals.empty()) {
      Admit(arrivals);
      InheritArrivals(active, arrivals);
      for (Active& a : arrivals) active.push_back(std::move(a));
      arrivals.clear();
    }
    if (!active.empty()) {
      Iterate(active);
    } else if (!emitted_.empty()) {
      DecodeAndDeliver(/*drain=*/true);  // images deferred while others ran
    }
  }
  FailAll(active, absl::UnavailableError("denoiser is shutting down"));
  ReportActive(0);
}

void TrajectoryBatcher::Admit(std::vector<Active>& arrivals) {
  if (model_->manifest().is_text()) ResolveContexts(arrivals);
  // A capture at the start step is the start latent itself (x_T when 0): it
  // goes out now, before any forward pass, with no x0 prediction yet.
  for (Active& a : arrivals) {
    const RunRequest& req = a.run->request_;
    if (req.capture_steps.empty() || req.capture_steps.front() != req.start_step) continue;
    a.next_capture = 1;
    RunEvent event;
    event.kind = RunEvent::Kind::kCapture;
    event.trajectory = a.index;
    event.step = req.start_step;
    event.timestep = a.run->schedule_->timestep(req.start_step);
    event.latent = a.x;
    emitted_.push_back({a.run, std::move(event), a.latent_max_abs});
  }
  DecodeAndDeliver(/*drain=*/false);
}

// Looks every arrival's prompt and negative prompt up in the cache, and
// encodes the distinct ones missing in one text-encoder pass. When that pass
// fails, each prompt is encoded alone: a prompt the encoder fails on ends
// the runs that use it (they leave `arrivals`), not the others admitted
// beside them.
namespace {

// One admission's distinct prompts, by their padded ids, and their contexts:
// found in the cache, or encoded in one batch (and kept here too, whatever
// the cache's size); and the prompts the encoder failed on.
class AdmissionContexts {
 public:
  // `zeros`: the encoding of no prompt (empty ids).
  AdmissionContexts(ContextCache& cache, ContextCache::Context zeros)
      : cache_(cache), zeros_(std::move(zeros)) {}

  // Notes a prompt the admission needs. `ids` must outlive this.
  void Want(const std::vector<int64_t>& ids) {
    for (const auto& [known, _] : resolved_) {
      if (*known == ids) return;
    }
    if (ids.empty()) {
      resolved_.push_back({&ids, zeros_});
      return;
    }
    resolved_.push_back({&ids, cache_.Find(ids)});
    if (!resolved_.back().second) missing_.push_back(resolved_.size() - 1);
  }

  // Encodes the prompts the cache lacked in batches of at most `max_batch`;
  // when a batch fails, each of its prompts alone, so that one bad prompt
  // fails only itself.
  void EncodeMissing(DenoiserModel& model, int max_batch) {
    for (size_t first = 0; first < missing_.size(); first += max_batch) {
      EncodeBatch(model, first, std::min(missing_.size(), first + max_batch));
    }
  }

  // The contexts of missing_[begin, end).
  void EncodeBatch(DenoiserModel& model, size_t begin, size_t end) {
    const int length = model.context_length();
    const size_t per = model.encoding_size();
    std::vector<int64_t> ids;
    ids.reserve((end - begin) * length);
    for (size_t k = begin; k < end; ++k) {
      ids.insert(ids.end(), resolved_[missing_[k]].first->begin(),
                 resolved_[missing_[k]].first->end());
    }
    std::vector<float> out((end - begin) * per);
    const int n = static_cast<int>(end - begin);
    const absl::Status batched = model.EncodeText(ids, n, absl::MakeSpan(out));
    for (int k = 0; k < n; ++k) {
      auto& [key, context] = resolved_[missing_[begin + k]];
      absl::Status alone = batched;
      if (!batched.ok() && n > 1) {
        alone = model.EncodeText(absl::MakeConstSpan(ids).subspan(k * length, length), 1,
                                 absl::MakeSpan(out).subspan(k * per, per));
      }
      if (!alone.ok()) {
        failed_.push_back({key, std::move(alone)});
        continue;  // its context stays null
      }
      context = std::make_shared<const std::vector<float>>(out.begin() + k * per,
                                                           out.begin() + (k + 1) * per);
      cache_.Put(*key, context);
    }
  }

  // The context of a wanted prompt; null for one the encoder failed on.
  ContextCache::Context Of(const std::vector<int64_t>& ids) const {
    for (const auto& [key, context] : resolved_) {
      if (*key == ids) return context;
    }
    return nullptr;
  }

  // Why the encoder failed on `ids` (OK if it did not), naming `field`.
  absl::Status FailureOf(const std::vector<int64_t>& ids, absl::string_view field) const {
    for (const auto& [key, status] : failed_) {
      if (*key == ids) {
        return FieldError(status.code(), field,
                          absl::StrCat(": the text encoder failed on it: ", status.message()));
      }
    }
    return absl::OkStatus();
  }

  int found() const { return static_cast<int>(resolved_.size() - missing_.size()); }
  int encoded() const { return static_cast<int>(missing_.size()); }

 private:
  ContextCache& cache_;
  const ContextCache::Context zeros_;
  std::vector<std::pair<const std::vector<int64_t>*, ContextCache::Context>> resolved_;
  std::vector<size_t> missing_;  // indices into resolved_
  std::vector<std::pair<const std::vector<int64_t>*, absl::Status>> failed_;
};

}  // namespace

void TrajectoryBatcher::ResolveContexts(std::vector<Active>& arrivals) {
  // `contexts` points into the arrivals' runs' ids: a run that fails here
  // stays alive until it is done with them, whatever its caller does.
  std::vector<std::shared_ptr<Run>> failed;
  AdmissionContexts contexts(*contexts_, zero_encoding_);
  const Run* last = nullptr;
  for (const Active& a : arrivals) {
    if (a.run.get() == last) continue;  // a run's trajectories share its prompts
    last = a.run.get();
    contexts.Want(a.run->prompt_ids_);
    contexts.Want(a.run->negative_ids_);
    for (const auto& [prompt, negative] : a.run->switch_ids_) {
      contexts.Want(prompt);
      contexts.Want(negative);
    }
  }
  const absl::Time start = absl::Now();
  contexts.EncodeMissing(*model_, options_.max_batch);
  if (observer_) {
    observer_->OnTextContexts(contexts.found(), contexts.encoded(),
                              contexts.encoded() ? absl::Now() - start : absl::ZeroDuration());
  }
  // Why a phase has no context: its prompt's or its negative prompt's
  // failure, under `where` (the request's, or a path segment's conditioning).
  auto failure = [&](const std::vector<int64_t>& prompt, const std::vector<int64_t>& negative,
                     absl::string_view where) {
    absl::Status status = contexts.FailureOf(prompt, absl::StrCat(where, "prompt"));
    return status.ok() ? contexts.FailureOf(negative, absl::StrCat(where, "negative_prompt"))
                       : status;
  };
  // The field of the segment of trajectory `index` that switches at `from_step`.
  auto segment_field = [](const Run& run, int index, int from_step) {
    const std::vector<Segment>& segments = run.request_.trajectories[index].path.segments;
    for (size_t j = 0; j < segments.size(); ++j) {
      if (segments[j].from_step == from_step && segments[j].conditioning) {
        return absl::StrCat("trajectories[", index, "].path.segments[", j, "].conditioning.");
      }
    }
    return absl::StrCat("trajectories[", index, "].path: the segment from step ", from_step, ": ");
  };
  size_t kept = 0;
  for (size_t i = 0; i < arrivals.size(); ++i) {
    Active& a = arrivals[i];
    a.context = contexts.Of(a.run->prompt_ids_);
    a.uncontext = contexts.Of(a.run->negative_ids_);
    absl::Status status = absl::OkStatus();
    if (!a.context || !a.uncontext) {
      status = failure(a.run->prompt_ids_, a.run->negative_ids_, "");
    }
    for (auto& [from_step, phase] : a.switches) {
      phase.context = contexts.Of(*phase.prompt_ids);
      phase.uncontext = contexts.Of(*phase.negative_ids);
      if (status.ok() && (!phase.context || !phase.uncontext)) {
        status = failure(*phase.prompt_ids, *phase.negative_ids,
                         segment_field(*a.run, a.index, from_step));
        if (status.ok()) status = absl::InternalError("a switched prompt has no context");
      }
    }
    if (!status.ok()) {
      --outstanding_;
      failed.push_back(a.run);
      a.run->Finish(status);
      continue;
    }
    if (kept != i) arrivals[kept] = std::move(a);
    ++kept;
  }
  arrivals.resize(kept);
}

void TrajectoryBatcher::Iterate(std::vector<Active>& active) {
  DropStopped(active);
  ReportActive(static_cast<int>(active.size()));
  if (active.empty()) return;
  for (Active& a : active) ApplySwitches(a);
  ChooseBatch(active);
  const int rows = FillBatch(active);
  absl::Time forward_start;
  const absl::Status forward = Forward(rows, &forward_start);
  CreditDecodes(absl::Now() - forward_start, static_cast<int>(batch_choice_.keys()));
  ApplyAndEmit(active, forward, forward_start);
  DecodeAndDeliver(/*drain=*/active.empty());
  // Also after the last trajectories finish, so an idle replica reads 0
  // (the HPA scales on this gauge).
  ReportActive(static_cast<int>(active.size()));
}

void TrajectoryBatcher::ReportActive(int active) {
  if (observer_ && active != reported_active_) observer_->OnActiveChange(active - reported_active_);
  reported_active_ = active;
}

// How far a run's caller may fall behind: the option, but never less than
// four of the run's steps at most (every trajectory's latent, x0 and two
// images), so that a caller who reads is not ended by a large request.
int64_t TrajectoryBatcher::UndeliveredBound(const Run& run) const {
  const int64_t per_event = 2 * model_->latent_numel() * int64_t{sizeof(float)} +
                            2 * model_->manifest().ImageNumel();
  const auto trajectories = static_cast<int64_t>(run.request_.trajectories.size());
  return std::max(options_.max_undelivered_bytes, 4 * trajectories * per_event);
}

// Drops trajectories whose run was cancelled, timed out or already failed.
void TrajectoryBatcher::DropStopped(std::vector<Active>& active) {
  const absl::Time now = absl::Now();
  const int64_t iteration = forwards_.load(std::memory_order_relaxed);
  size_t kept = 0;
  for (size_t i = 0; i < active.size(); ++i) {
    Active& a = active[i];
    Run& run = *a.run;
    AskCaller(run, iteration);
    absl::Status stop = StopReason(run, now);
    if (stop.ok()) {
      std::lock_guard<std::mutex> lock(run.mu_);
      if (run.events_bytes_ > UndeliveredBound(run)) {
        // A caller that stopped reading: its events would pile up unbounded.
        stop = absl::ResourceExhaustedError(absl::StrCat(
            "the caller has not read ", run.events_bytes_ >> 20, " MiB of this run's events"));
      }
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
}

void TrajectoryBatcher::AskCaller(Run& run, int64_t iteration) {
  if (run.caller_asked_at_ == iteration) return;  // once per run and iteration
  run.caller_asked_at_ = iteration;
  if (run.CallerGone()) run.Cancel();
}

absl::Status TrajectoryBatcher::StopReason(Run& run, absl::Time now) {
  // The deadline first, as in EndStoppedJobs: past it the caller's context
  // reads as cancelled too.
  if (now > run.request_.deadline) {
    return absl::DeadlineExceededError("deadline passed before the trajectory finished");
  }
  if (run.cancelled()) return absl::CancelledError("run cancelled by the caller");
  std::lock_guard<std::mutex> lock(run.mu_);
  if (!run.done_) return absl::OkStatus();
  return run.status_.ok() ? absl::InternalError("run ended") : run.status_;
}

// The fairness policy is BatchChoice (batch_choice.h); this only lists the
// candidates for it.
void TrajectoryBatcher::ChooseBatch(const std::vector<Active>& active) {
  candidates_.resize(active.size());
  for (size_t i = 0; i < active.size(); ++i) {
    const Active& a = active[i];
    candidates_[i] = {a.fairness_key, a.fairness_rank, a.arrival, a.rows};
  }
  chosen_ = batch_choice_.Choose(candidates_, options_.max_batch);
}

// A run takes the arrival of its key's oldest trajectory still here, so that
// a key keeps its first arrival while it has trajectories: equal grids then
// finish in the order they came, where a grid's rows, which arrive once its
// trunk has run, would queue behind the trunk of a grid that came later.
void TrajectoryBatcher::InheritArrivals(const std::vector<Active>& active,
                                        std::vector<Active>& arrivals) {
  for (Active& a : arrivals) {
    for (const Active& here : active) {  // oldest first
      if (here.fairness_key == a.fairness_key) {
        a.arrival = std::min(a.arrival, here.arrival);
        break;
      }
    }
  }
}

// Lays out the chosen trajectories' rows; a guided one's conditional row
// comes first.
int TrajectoryBatcher::FillBatch(const std::vector<Active>& active) {
  const BundleManifest& m = model_->manifest();
  const size_t numel = static_cast<size_t>(m.LatentNumel());
  int rows = 0;
  for (size_t i : chosen_) rows += active[i].rows;
  batch_x_.resize(rows * numel);
  batch_out_.resize(rows * numel);
  batch_t_.resize(rows);
  batch_cond_.resize(rows);
  const size_t per_context = model_->encoding_size();
  batch_context_.resize(rows * per_context);
  const bool size_ids = m.is_text() && m.text.size_ids;
  batch_time_ids_.resize(size_ids ? rows * 6 : 0);
  int row = 0;
  for (size_t i : chosen_) {
    const Active& a = active[i];
    const float t = a.run->schedule_->model_timestep(a.step);
    for (int r = 0; r < a.rows; ++r) {
      std::copy(a.x.begin(), a.x.end(), batch_x_.begin() + (row + r) * numel);
      batch_t_[row + r] = t;
      batch_cond_[row + r] = r == 0 ? a.cond : m.null_label;
      if (m.is_text()) {
        const bool unconditional = r == 1 || a.lone_row_unconditional;
        const std::vector<float>& context = unconditional ? *a.uncontext : *a.context;
        std::copy(context.begin(), context.end(), batch_context_.begin() + (row + r) * per_context);
      }
      if (size_ids) {
        std::copy(a.run->time_ids_.begin(), a.run->time_ids_.end(),
                  batch_time_ids_.begin() + (row + r) * 6);
      }
    }
    row += a.rows;
  }
  return rows;
}

absl::StatusOr<std::vector<uint8_t>> TrajectoryBatcher::DecodeChunks(
    absl::Span<const float> latents, int n, std::vector<char>& non_finite) {
  if (workers_.Split(n).size() == 1) return model_->Decode(latents, n, &non_finite);
  std::vector<uint8_t> pixels(n * model_->manifest().ImageNumel());
  non_finite.assign(n, 0);
  RETURN_IF_ERROR(workers_.Run(n, [&](int begin, int count) {
    return DecodeInto(latents, begin, count, pixels, &non_finite);
  }));
  return pixels;
}

absl::Status TrajectoryBatcher::Forward(int rows, absl::Time* started) {
  if (options_.debug_step_delay > absl::ZeroDuration()) {
    absl::SleepFor(options_.debug_step_delay);
  }
  *started = absl::Now();
  const size_t numel = static_cast<size_t>(model_->latent_numel());
  absl::Status forward = workers_.Run(rows, [&](int begin, int count) {
    return ForwardRows(*model_, batch_x_, batch_t_, batch_cond_, batch_context_, batch_time_ids_,
                       begin, count, absl::MakeSpan(batch_out_).subspan(begin * numel, count * numel));
  });
  forwards_.fetch_add(1, std::memory_order_relaxed);
  if (observer_) {
    // A failed pass of several is run again member by member (ApplyAndEmit),
    // and each member's evaluation is counted there: this pass counts its
    // rows and time alone.
    const int evaluated =
        forward.ok() || chosen_.size() == 1 ? static_cast<int>(chosen_.size()) : 0;
    observer_->OnForward(evaluated, rows, absl::Now() - *started);
  }
  return forward;
}

// Steps each chosen trajectory and sends what it owes. A failure ends only
// the run it belongs to; the others in the batch go on. A failed forward may
// be one member's input (a context the model chokes on): each member then
// runs alone, and only those that fail alone end.
void TrajectoryBatcher::ApplyAndEmit(std::vector<Active>& active, const absl::Status& forward,
                                     absl::Time forward_start) {
  const size_t numel = static_cast<size_t>(model_->manifest().LatentNumel());
  finished_.assign(active.size(), false);
  int row = 0;
  for (size_t i : chosen_) {
    Active& a = active[i];
    absl::Span<float> out(batch_out_.data() + row * numel, a.rows * numel);
    absl::Status stepped = forward;
    if (!forward.ok() && chosen_.size() > 1) {
      // A pass of its own, told as every pass is (forward rows, batch size,
      // seconds): the lone passes went uncounted.
      const absl::Time alone = absl::Now();
      stepped = ForwardRows(*model_, batch_x_, batch_t_, batch_cond_, batch_context_,
                            batch_time_ids_, row, a.rows, out);
      forwards_.fetch_add(1, std::memory_order_relaxed);
      if (observer_) observer_->OnForward(1, a.rows, absl::Now() - alone);
    }
    row += a.rows;
    if (stepped.ok()) {
      if (a.evals == 0 && observer_) {
        observer_->OnQueueWait(forward_start - a.run->enqueued_, a.run->request_.batch_work);
      }
      stepped = Step(a, out);
    }
    if (!stepped.ok()) {
      --outstanding_;
      finished_[i] = true;
      a.run->Finish(stepped);
    } else if (Emit(a)) {
      --outstanding_;
      finished_[i] = true;
      // Ends after its final is delivered (DecodeAndDeliver).
      done_runs_.push_back(a.run);
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < active.size(); ++i) {
    if (finished_[i]) continue;
    if (kept != i) active[kept] = std::move(active[i]);
    ++kept;
  }
  active.resize(kept);
}

absl::Status TrajectoryBatcher::Step(Active& a, absl::Span<float> out) {
  Run& run = *a.run;
  const RunRequest& req = run.request_;
  // The model ran for this trajectory, whatever comes of its output.
  ++a.evals;
  run.model_evals_.fetch_add(1, std::memory_order_relaxed);

  const size_t numel = a.x.size();
  float* eps = out.data();
  if (a.rows == 2) {
    // eps = eps_u + g (eps_c - eps_u); the conditional row comes first.
    const float* uncond = eps + numel;
    const float g = req.sampler.guidance;
    for (size_t j = 0; j < numel; ++j) eps[j] = uncond[j] + g * (eps[j] - uncond[j]);
  }
  // A finite input can still overflow the model (|x| near FLT_MAX): a NaN
  // sample must fail, not come back OK as a black image. Such an input fails
  // on every replica, so when the caller gave one, the error blames it and
  // is not one a retry could fix. A latent of a sampler's scale (unit-
  // variance noise and the data: tens at most) cannot be to blame: the
  // orchestrator sends its captures as start latents, and a replica that
  // turns one into NaN misbehaved, as it would from a seed's x_T: INTERNAL,
  // retried elsewhere (kLatentBeyondAnySampler).
  auto non_finite = [&](const char* what) {
    if (a.latent_max_abs > kLatentBeyondAnySampler) {
      return InvalidFieldError(
          absl::StrCat("trajectories[", a.index, "].latent"),
          absl::StrCat(": the ", what, " became non-finite (NaN or Inf) at step ", a.step,
                       "; the start latent's largest magnitude, ", a.latent_max_abs,
                       ", is outside what this model can denoise"));
    }
    return absl::InternalError(absl::StrCat("model produced non-finite ", what, " at step ", a.step,
                                            " for trajectories[", a.index, "]"));
  };
  if (!AllFinite({eps, numel})) return non_finite("model output");

  const SamplerSchedule& schedule = *run.schedule_;
  const bool noisy = req.sampler.eta > 0.0f;
  if (noisy) {
    noise_.resize(numel);
    const Path& path = req.trajectories[a.index].path;
    FillGaussian({path.NoiseSeedAt(a.step), NoiseStream::kStep, static_cast<uint32_t>(a.step)},
                 absl::MakeSpan(noise_));
  }
  schedule.Apply(a.step, req.sampler.eta, {eps, numel},
                 noisy ? absl::Span<const float>(noise_) : absl::Span<const float>(),
                 absl::MakeSpan(a.x), absl::MakeSpan(a.x0));
  if (!AllFinite(a.x) || !AllFinite(a.x0)) return non_finite("latent after the DDIM update");
  ++a.step;
  return absl::OkStatus();
}

bool TrajectoryBatcher::Emit(Active& a) {
  Run& run = *a.run;
  const RunRequest& req = run.request_;
  const SamplerSchedule& schedule = *run.schedule_;
  if (a.step == a.end_step) {
    RunEvent event;
    event.kind = RunEvent::Kind::kFinal;
    event.trajectory = a.index;
    event.step = a.step;
    event.timestep = schedule.timestep(a.step - 1);  // the last one run
    event.latent = std::move(a.x);
    event.x0 = std::move(a.x0);
    event.model_evals = a.evals;
    emitted_.push_back({a.run, std::move(event), a.latent_max_abs});
    return true;
  }
  if (a.next_capture < req.capture_steps.size() && req.capture_steps[a.next_capture] == a.step) {
    ++a.next_capture;
    RunEvent event;
    event.kind = RunEvent::Kind::kCapture;
    event.trajectory = a.index;
    event.step = a.step;
    event.timestep = schedule.timestep(a.step);
    event.latent = a.x;
    event.x0 = a.x0;
    emitted_.push_back({a.run, std::move(event), a.latent_max_abs});
  }
  return false;
}

void TrajectoryBatcher::DropStoppedEvents() {
  const absl::Time now = absl::Now();
  const int64_t iteration = forwards_.load(std::memory_order_relaxed);
  std::vector<const Run*> stopped;
  const Run* asked = nullptr;  // events of one run sit together mostly
  for (const Emitted& e : emitted_) {
    Run& run = *e.run;
    if (&run == asked) continue;
    asked = &run;
    if (std::find(stopped.begin(), stopped.end(), &run) != stopped.end()) continue;
    // A run whose trajectories all ended is no longer in DropStopped's list.
    AskCaller(run, iteration);
    absl::Status stop = StopReason(run, now);
    if (stop.ok()) continue;
    stopped.push_back(&run);
    // With trajectories still running, DropStopped ends it next iteration,
    // once it has released their slots.
    const auto waiting = std::count_if(done_runs_.begin(), done_runs_.end(),
                                       [&](const auto& done) { return done.get() == &run; });
    bool ended = false;
    {
      std::lock_guard<std::mutex> lock(run.mu_);
      ended = run.remaining_ == waiting;
    }
    if (ended) run.Finish(std::move(stop));
  }
  if (stopped.empty()) return;
  emitted_.erase(std::remove_if(emitted_.begin(), emitted_.end(),
                                [&](const Emitted& e) {
                                  return std::find(stopped.begin(), stopped.end(),
                                                   e.run.get()) != stopped.end();
                                }),
                 emitted_.end());
}

void TrajectoryBatcher::DecodeAndDeliver(bool drain) {
  DropStoppedEvents();
  int other_images = 0;
  const std::vector<size_t> now = EventsGoingNow(drain, &other_images);
  DecodeImages(now, other_images);
  Deliver(now);
}

bool TrajectoryBatcher::OwesImages(const Emitted& e) {
  const RunRequest& r = e.run->request_;
  return r.decode && (e.event.kind == RunEvent::Kind::kFinal || !r.decode_finals_only);
}

std::vector<size_t> TrajectoryBatcher::EventsGoingNow(bool drain, int* other_images) const {
  // The lowest-ranked runs' images go at once; other runs' take turns with
  // the forward passes as Decode requests do (kBesideChunk images while
  // decode_debt_ allows), so one tenant's many finals cannot hold back
  // another's small grid. A run's events keep their order: once one is
  // deferred, so are its later ones. `drain` (nothing else to run) takes
  // everything.
  uint64_t head = std::numeric_limits<uint64_t>::max();
  for (const Emitted& e : emitted_) {
    if (OwesImages(e)) head = std::min(head, e.run->rank_);
  }
  const bool others_may_decode = drain || decode_debt_ <= absl::ZeroDuration();
  std::vector<const Run*> deferred;
  std::vector<size_t> now;
  int images = 0;
  *other_images = 0;
  for (size_t e = 0; e < emitted_.size(); ++e) {
    const Emitted& em = emitted_[e];
    const Run* run = em.run.get();
    bool defer = std::find(deferred.begin(), deferred.end(), run) != deferred.end();
    if (!defer && OwesImages(em)) {
      const int owed = em.event.x0.empty() ? 1 : 2;
      const bool other = run->rank_ != head && !drain;
      // One decoder batch stays bounded (memory, and the wait of a run
      // that arrives meanwhile); the first event always goes.
      defer = (images > 0 && images + owed > max_decode_batch_) ||
              (other && (!others_may_decode || *other_images + owed > decode_chunk_));
      if (!defer) {
        images += owed;
        if (other) *other_images += owed;
      }
    }
    if (!defer) {
      now.push_back(e);
    } else if (std::find(deferred.begin(), deferred.end(), run) == deferred.end()) {
      deferred.push_back(run);
    }
  }
  return now;
}

void TrajectoryBatcher::DecodeImages(const std::vector<size_t>& now, int other_images) {
  // Every image owed now goes through the decoder in one batch: a VAE is far
  // cheaper per image at batch 16 than 16 times at batch 1.
  std::vector<float> latents;
  std::vector<std::pair<size_t, bool>> slots;  // (event, is x0)
  for (size_t e : now) {
    const RunEvent& event = emitted_[e].event;
    if (!OwesImages(emitted_[e])) continue;
    latents.insert(latents.end(), event.latent.begin(), event.latent.end());
    slots.push_back({e, false});
    if (!event.x0.empty()) {
      latents.insert(latents.end(), event.x0.begin(), event.x0.end());
      slots.push_back({e, true});
    }
  }
  if (slots.empty()) return;
  const absl::Time start = absl::Now();
  const int n = static_cast<int>(slots.size());
  std::vector<char> non_finite;
  absl::StatusOr<std::vector<uint8_t>> pixels = DecodeChunks(latents, n, non_finite);
  const absl::Duration took = absl::Now() - start;
  if (observer_) observer_->OnDecode(n, took);
  decode_debt_ += took * other_images / n;
  const size_t per = static_cast<size_t>(model_->manifest().ImageNumel());
  // Slot k's image, from `image`. A latent's image the decoder gave NaN for
  // (it would be black) ends its run; an x0 preview's stays, black: x0 at a
  // schedule's first steps can pass what a decoder takes (an fp16 VAE's
  // range), and a thumbnail is no reason to fail a grid.
  auto place = [&](int k, const uint8_t* image, bool flagged) {
    Emitted& emitted = emitted_[slots[k].first];
    RunEvent& event = emitted.event;
    if (flagged && !slots[k].second) {
      // The rule of a step's failure (Step): the caller is to blame only for
      // a start latent past any sampler's scale, whether the latent decoded
      // is that one (a capture at the start step) or one the engine made
      // from it. A latent the engine grew from a seed's x_T is the replica's.
      const float given = emitted.given_latent_max_abs;
      emitted.run->Finish(
          given > kLatentBeyondAnySampler
              ? InvalidFieldError(
                    absl::StrCat("trajectories[", event.trajectory, "].latent"),
                    absl::StrCat(": decodes to non-finite pixels (NaN or Inf) at step ",
                                 event.step, "; the start latent's largest magnitude, ", given,
                                 ", is outside what this model can take"))
              : absl::InternalError(absl::StrCat(
                    "the decoder produced non-finite pixels (NaN or Inf) from trajectories[",
                    event.trajectory, "]'s latent at step ", event.step)));
    }
    (slots[k].second ? event.x0_pixels : event.pixels).assign(image, image + per);
  };
  if (pixels.ok()) {
    for (int k = 0; k < n; ++k) place(k, pixels->data() + k * per, non_finite[k]);
    return;
  }
  // One run's latents may be what the decoder fails on: each run's images
  // then go through alone, and only a run whose own images fail ends.
  std::map<const Run*, std::vector<int>> by_run;  // its slots, in order
  for (int k = 0; k < n; ++k) by_run[emitted_[slots[k].first].run.get()].push_back(k);
  const size_t latent = latents.size() / n;
  for (const auto& [run, ks] : by_run) {
    absl::StatusOr<std::vector<uint8_t>> mine = pixels.status();
    if (by_run.size() > 1) {
      std::vector<float> own;
      for (int k : ks) {
        own.insert(own.end(), latents.begin() + k * latent, latents.begin() + (k + 1) * latent);
      }
      mine = DecodeChunks(own, static_cast<int>(ks.size()), non_finite);
    }
    if (!mine.ok()) {
      emitted_[slots[ks.front()].first].run->Finish(mine.status());
      continue;
    }
    for (size_t j = 0; j < ks.size(); ++j) place(ks[j], mine->data() + j * per, non_finite[j]);
  }
}

void TrajectoryBatcher::Deliver(const std::vector<size_t>& now) {
  if (now.size() == emitted_.size()) {  // the usual case: everything goes out
    for (Emitted& e : emitted_) e.run->Push(std::move(e.event));
    emitted_.clear();
    for (const auto& run : done_runs_) run->TrajectoryDone();
    done_runs_.clear();
    return;
  }
  std::vector<Emitted> later;
  for (size_t e = 0, k = 0; e < emitted_.size(); ++e) {
    if (k < now.size() && now[k] == e) {
      emitted_[e].run->Push(std::move(emitted_[e].event));
      ++k;
    } else {
      later.push_back(std::move(emitted_[e]));
    }
  }
  emitted_.swap(later);
  // A trajectory ends after its final is delivered: a run with an event
  // still waiting is not done yet.
  auto waiting = [this](const Run* run) {
    return std::any_of(emitted_.begin(), emitted_.end(),
                       [run](const Emitted& e) { return e.run.get() == run; });
  };
  size_t kept = 0;
  for (size_t i = 0; i < done_runs_.size(); ++i) {
    if (waiting(done_runs_[i].get())) {
      done_runs_[kept++] = std::move(done_runs_[i]);
    } else {
      done_runs_[i]->TrajectoryDone();
    }
  }
  done_runs_.resize(kept);
}

}  // namespace dgrid
