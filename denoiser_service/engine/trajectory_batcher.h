// Iteration-level (continuous) batching of denoising trajectories, as Orca
// and vLLM do for tokens. The batcher keeps a set of active trajectories from
// all concurrent runs; each iteration takes up to max_batch forward rows
// (a guided trajectory counts two: conditional and unconditional rows share
// the batch), runs one forward pass, applies each trajectory's own DDIM
// update at its own timestep, and emits captures and finals. New runs join at
// the next iteration, so a grid's trunk and branches at different steps
// share forward passes instead of waiting for each other.
//
//   TrajectoryBatcher batcher(model.get(), {.max_batch = 64, .max_queue = 1024});
//   ASSIGN_OR_RETURN(std::shared_ptr<Run> run, batcher.Start(std::move(request)));
//   RunEvent event;
//   while (run->Next(absl::Milliseconds(50), &event) != Run::Wait::kDone) { ... }
//   RETURN_IF_ERROR(run->status());
//
// Forward passes run only on the batcher's own thread, never on the caller's
// (an RPC thread). Torch- and protobuf-free header.
#ifndef DGRID_DENOISER_ENGINE_TRAJECTORY_BATCHER_H_
#define DGRID_DENOISER_ENGINE_TRAJECTORY_BATCHER_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/path.h"
#include "denoiser_service/engine/ddim_schedule.h"

namespace dgrid {

class DenoiserModel;

struct SamplerSettings {
  int steps = 50;
  float eta = 1.0f;
  Spacing spacing = Spacing::kLeading;
  // 0: unconditional pass only; 1: conditional only; else both, guided.
  float guidance = 1.0f;
};

struct TrajectoryStart {
  Path path;
  // The latent at the run's start_step; may be empty when start_step is 0,
  // and x_T is then drawn from path.init_seed.
  std::vector<float> latent;
};

struct RunRequest {
  SamplerSettings sampler;
  // Class index, or -1 for unconditional.
  int64_t class_index = -1;
  int start_step = 0;
  // Exclusive: the final latent is the one at end_step; 0 means sampler.steps.
  int end_step = 0;
  std::vector<TrajectoryStart> trajectories;
  // Steps in [start_step, end_step) whose latents are streamed as captures
  // (one at start_step is the start latent, sent at once).
  std::vector<int> capture_steps;
  bool previews = false;
  absl::Time deadline = absl::InfiniteFuture();
};

struct RunEvent {
  enum class Kind { kCapture, kFinal };
  Kind kind = Kind::kFinal;
  int trajectory = 0;
  // The latent is the one at `step`; timestep is the one that step runs
  // (for a final at the end of sampling, the last timestep run).
  int step = 0;
  int timestep = 0;
  std::vector<float> latent;
  // The x0 predicted by the step that produced `latent` (when previews;
  // empty for a capture at the start step, which no step produced).
  std::vector<float> x0;
  int model_evals = 0;
};

// A handle on one submitted RunRequest. Thread-safe.
class Run {
 public:
  enum class Wait { kEvent, kTimeout, kDone };
  // Delivers the next event, or waits up to `timeout`. kDone once every event
  // was delivered and the run ended; status() then tells how.
  Wait Next(absl::Duration timeout, RunEvent* event);
  // Stops the run's trajectories at the next iteration; status CANCELLED.
  void Cancel();
  absl::Status status() const;
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  friend class TrajectoryBatcher;
  void Push(RunEvent event);
  // First call wins; later calls (other trajectories of a failed run) no-op.
  void Finish(absl::Status status);
  void TrajectoryDone();

  // std::mutex rather than absl::Mutex: Debian's abseil is not built with
  // ThreadSanitizer, which then cannot see absl::Mutex's ordering, while
  // libstdc++'s mutex goes through pthread calls it intercepts. So the TSan
  // build checks this code for real.
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<RunEvent> events_;  // guarded by mu_
  bool done_ = false;            // guarded by mu_
  absl::Status status_;          // guarded by mu_
  int remaining_ = 0;            // guarded by mu_
  std::atomic<bool> cancelled_{false};

  // Fixed at Start.
  RunRequest request_;
  std::shared_ptr<const DdimSchedule> schedule_;
  absl::Time enqueued_;
};

// Observes the engine for metrics. Called on the batcher thread.
class BatcherObserver {
 public:
  virtual ~BatcherObserver() = default;
  virtual void OnForward(int trajectories, int rows, absl::Duration forward) {}
  // Time from Start to a trajectory's first forward pass.
  virtual void OnQueueWait(absl::Duration wait) {}
  virtual void OnActive(int trajectories) {}
};

class TrajectoryBatcher {
 public:
  struct Options {
    // Forward rows per iteration.
    int max_batch = 64;
    // Trajectories admitted (queued or active) at once; past it, Start
    // answers RESOURCE_EXHAUSTED.
    int max_queue = 4096;
    // Test-only: sleep this long before each forward pass (a slow replica).
    absl::Duration debug_step_delay = absl::ZeroDuration();
  };

  TrajectoryBatcher(DenoiserModel* model, Options options, BatcherObserver* observer = nullptr);
  ~TrajectoryBatcher();
  TrajectoryBatcher(const TrajectoryBatcher&) = delete;
  TrajectoryBatcher& operator=(const TrajectoryBatcher&) = delete;

  // Validates the request against the model (errors name the request field)
  // and queues its trajectories.
  absl::StatusOr<std::shared_ptr<Run>> Start(RunRequest request);

  const DenoiserModel& model() const { return *model_; }
  int outstanding() const { return outstanding_.load(); }

 private:
  struct Active;

  absl::Status Validate(const RunRequest& request) const;
  absl::StatusOr<std::shared_ptr<const DdimSchedule>> ScheduleFor(int steps, Spacing spacing);
  void Loop();
  void Iterate(std::vector<Active>& active);
  void FailAll(std::vector<Active>& active, const absl::Status& status);

  DenoiserModel* const model_;
  const Options options_;
  BatcherObserver* const observer_;
  std::atomic<int> outstanding_{0};

  // std primitives, as in Run, so that TSan sees them.
  std::mutex mu_;
  std::condition_variable work_;
  std::vector<Active> pending_;  // guarded by mu_
  bool stop_ = false;            // guarded by mu_

  std::mutex schedule_mu_;
  std::vector<std::pair<std::pair<int, Spacing>, std::shared_ptr<const DdimSchedule>>>
      schedules_;  // guarded by schedule_mu_

  // Reused across iterations: no allocation on the hot path.
  std::vector<float> batch_x_, batch_out_, noise_;
  std::vector<int64_t> batch_t_, batch_cond_;

  std::thread thread_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_TRAJECTORY_BATCHER_H_
