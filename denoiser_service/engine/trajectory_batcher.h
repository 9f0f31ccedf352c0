// Iteration-level (continuous) batching of denoising trajectories, as Orca
// and vLLM do for tokens. The batcher keeps a set of active trajectories from
// all concurrent runs; each iteration takes up to max_batch forward rows
// (a guided trajectory counts two: conditional and unconditional rows share
// the batch), runs one forward pass, applies each trajectory's own DDIM
// update at its own timestep, and emits captures and finals. New runs join at
// the next iteration, so a grid's trunk and branches at different steps
// share forward passes instead of waiting for each other.
//
// Each iteration orders its rows across the fairness keys (tenants) that have
// work: lower fairness_rank first (the orchestrator ranks a grid by its
// planned evaluations: shortest job first, so one tenant's large grid cannot
// starve another's small one), equal ranks in the order the keys arrived (so
// equal grids finish one after another instead of all slowly together);
// within a key, the oldest trajectory goes first.
//
//   TrajectoryBatcher batcher(model.get(), {.max_batch = 64, .max_queue = 1024});
//
//   absl::Status Sample(TrajectoryBatcher& batcher, RunRequest request) {
//     ASSIGN_OR_RETURN(std::shared_ptr<Run> run, batcher.Start(std::move(request)));
//     RunEvent event;
//     for (Run::Wait w; (w = run->Next(absl::Milliseconds(50), &event)) != Run::Wait::kDone;) {
//       // kTimeout delivers no event: it is the caller's chance to poll.
//       if (w == Run::Wait::kEvent) Consume(event);
//     }
//     return run->status();
//   }
//
// (trajectory_batcher_test.cc runs this example.) Forward passes run on the
// batcher's own thread and its ForwardWorkers (a batch split across cores),
// never on the caller's (an RPC thread). Torch- and protobuf-free header.
#ifndef DGRID_DENOISER_ENGINE_TRAJECTORY_BATCHER_H_
#define DGRID_DENOISER_ENGINE_TRAJECTORY_BATCHER_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/path.h"
#include "common/run_event.h"
#include "denoiser_service/engine/batch_choice.h"
#include "denoiser_service/engine/context_cache.h"
#include "denoiser_service/engine/forward_workers.h"
#include "denoiser_service/engine/sampler_schedule.h"

namespace dgrid {

class DenoiserModel;

struct SamplerSettings {
  int steps = 50;
  float eta = 1.0f;
  Spacing spacing = Spacing::kLeading;
  // 0: unconditional pass only; 1: conditional only; else both, guided.
  float guidance = 1.0f;
  Sampler sampler = Sampler::kDdim;
};

struct TrajectoryStart {
  Path path;
  // The latent at the run's start_step; may be empty when start_step is 0,
  // and x_T is then drawn from path.init_seed.
  std::vector<float> latent;
};

struct RunRequest {
  SamplerSettings sampler;
  // What the run is conditioned on. A class model: the class index, or -1
  // for unconditional. A text model: the prompt, and the negative prompt that
  // guidance steers away from (empty: the empty prompt). A trajectory's path
  // segments may switch it from their from_step on (Segment::conditioning; a
  // class model's by class_index, or by name in prompt). The batcher
  // tokenizes every distinct prompt at Start and encodes each once at
  // admission (docs/ARCHITECTURE.md, "Conditioning").
  int64_t class_index = -1;
  std::string prompt;
  std::string negative_prompt;
  // SDXL-style models: size and crop conditioning (time_ids), the same for
  // every trajectory and segment; zeros are the model's defaults.
  SizeConditioning size;
  int start_step = 0;
  // Exclusive: the final latent is the one at end_step; 0 means sampler.steps.
  int end_step = 0;
  std::vector<TrajectoryStart> trajectories;
  // Steps in [start_step, end_step) whose latents are streamed as captures
  // (one at start_step is the start latent, sent at once).
  std::vector<int> capture_steps;
  bool previews = false;
  // Decode every capture and final (and x0 preview) to pixels, batched, on
  // the batcher's thread.
  bool decode = false;
  // With decode: captures stay undecoded (pixels empty); finals only.
  bool decode_finals_only = false;
  absl::Time deadline = absl::InfiniteFuture();
  // The tenant (a grid). Runs of one key share its place in the order,
  // oldest trajectory first.
  uint64_t fairness_key = 0;
  // Keys of lower rank get rows first; equal ranks go in the order their
  // keys arrived (see BatchChoice). A run ranks no lower than its own work
  // (trajectories x steps), whatever it claims.
  uint64_t fairness_rank = 0;
  // Batch work (a decision curve's), which queues by design: its queue
  // wait is observed apart (BatcherObserver::OnQueueWait).
  bool batch_work = false;
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
  // `gone` tells whether the caller went away (a gRPC call's IsCancelled):
  // the batcher asks it once per run at each iteration and cancels the run
  // when it says so, so that the caller's thread need not wake up to poll.
  // DetachCaller() must come before whatever `gone` reads ends; after it
  // returns, `gone` is not called again.
  void AttachCaller(std::function<bool()> gone);
  void DetachCaller();
  absl::Status status() const;
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  // Model evaluations (trajectory-steps) run so far, by all of the run's
  // trajectories, finished ones included; it also counts the steps of a run
  // that then failed. Grows while the run goes, so a caller can tell a slow
  // run from a stuck one.
  int64_t model_evals() const { return model_evals_.load(std::memory_order_relaxed); }

 private:
  friend class TrajectoryBatcher;
  void Push(RunEvent event);
  // First call wins; later calls (other trajectories of a failed run) no-op.
  void Finish(absl::Status status);
  void TrajectoryDone();
  bool CallerGone();

  // std::mutex rather than absl::Mutex: Debian's abseil is not built with
  // ThreadSanitizer, which then cannot see absl::Mutex's ordering, while
  // libstdc++'s mutex goes through pthread calls it intercepts. So the TSan
  // build checks this code for real.
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<RunEvent> events_;  // guarded by mu_
  int64_t events_bytes_ = 0;     // guarded by mu_: their latents and pixels
  bool done_ = false;            // guarded by mu_
  absl::Status status_;          // guarded by mu_
  int remaining_ = 0;            // guarded by mu_
  std::atomic<bool> cancelled_{false};
  std::atomic<int64_t> model_evals_{0};
  // Held while `caller_gone_` runs, so that DetachCaller waits it out.
  std::mutex caller_mu_;
  std::function<bool()> caller_gone_;  // guarded by caller_mu_
  // The batcher thread's: the forward count at which it last asked.
  int64_t caller_asked_at_ = -1;

  // Fixed at Start.
  RunRequest request_;
  // Text models: the prompt's and the negative prompt's ids, padded. Empty
  // negative ids: the zero encoding (an empty negative prompt of a model
  // with zeros_for_empty_negative).
  std::vector<int64_t> prompt_ids_;
  std::vector<int64_t> negative_ids_;
  // A model with size ids: the run's time_ids row.
  std::array<float, 6> time_ids_{};
  std::shared_ptr<const SamplerSchedule> schedule_;
  uint64_t rank_ = 0;  // the fairness rank it runs at
  // Text models: the ids of the prompts its segments switch to, with their
  // negative prompts (a deque: trajectories point into it).
  std::deque<std::pair<std::vector<int64_t>, std::vector<int64_t>>> switch_ids_;
  absl::Time enqueued_;
};

// Observes the engine for metrics. Called on the batcher thread.
class BatcherObserver {
 public:
  virtual ~BatcherObserver() = default;
  // One forward pass of `rows` rows; `trajectories` the evaluations it
  // gave (0 for a failed pass of several, whose members run again alone,
  // each a pass of its own).
  virtual void OnForward(int trajectories, int rows, absl::Duration forward) {}
  // Time from Start to a trajectory's first forward pass; `batch_work`:
  // its run's RunRequest::batch_work.
  virtual void OnQueueWait(absl::Duration wait, bool batch_work) {}
  // The batcher's active trajectories changed by `delta` (every batcher of a
  // process may share one observer: the sum of the deltas is the process's
  // count, and a batcher that stops returns its share).
  virtual void OnActiveChange(int delta) {}
  // Text models: prompts looked up in the context cache, and the encoder
  // pass that computed the misses (zero when all hit).
  virtual void OnTextContexts(int hits, int misses, absl::Duration encode) {}
  // Images decoded in one batched decoder pass.
  virtual void OnDecode(int images, absl::Duration decode) {}
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
    // Text models: encoded prompts kept, least recently used out first.
    int text_cache_entries = 256;
    // Cores for the model's passes: a pass of enough rows runs as parallel
    // chunks, one per core (forward_workers.h), each chunk at least
    // min_chunk_rows rows.
    int cores = 1;
    int min_chunk_rows = 1;
    // A run whose caller has not taken this many bytes of its events (it
    // stopped reading) ends RESOURCE_EXHAUSTED rather than hold them all;
    // for a run whose four steps make more, those (UndeliveredBound).
    int64_t max_undelivered_bytes = int64_t{256} << 20;
  };

  TrajectoryBatcher(DenoiserModel* model, Options options, BatcherObserver* observer = nullptr);
  ~TrajectoryBatcher();
  TrajectoryBatcher(const TrajectoryBatcher&) = delete;
  TrajectoryBatcher& operator=(const TrajectoryBatcher&) = delete;

  // Validates the request against the model (errors name the RunRequest
  // field, as field_error.h has it) and queues its trajectories. A run whose
  // model output or latent turns non-finite fails alone: INVALID_ARGUMENT
  // naming trajectories[i].latent when the caller gave that latent and it is
  // far past any sampler's scale (it would fail on any replica), else
  // INTERNAL (a replica misbehaving; retried elsewhere).
  absl::StatusOr<std::shared_ptr<Run>> Start(RunRequest request);

  // Latents [batch, C, H, W] to 8-bit images, on the batcher's thread between
  // iterations (the model is not thread-safe, and RPC threads never run it):
  // RunBeside's work, and its deadline and cancellation.
  absl::StatusOr<std::vector<uint8_t>> Decode(std::vector<float> latents, int batch,
                                              absl::Time deadline = absl::InfiniteFuture(),
                                              std::function<bool()> cancelled = nullptr);

  // Runs `work` over `items` (a Decode request's images, a judge's) beside
  // the trajectories: between iterations, a turn of at most kBesideChunk
  // items at a time, each turn split over the forward workers as a pass is,
  // so work(begin, count) runs on several threads at once, each on items of
  // its own. Turns share the replica with the trajectories as one fairness
  // key does (RunBesideTurn). Waits for the last turn. DEADLINE_EXCEEDED or
  // CANCELLED when `deadline` passes or `cancelled` says so while it waits:
  // between two iterations, however many jobs are ahead of it.
  absl::Status RunBeside(int items, std::function<absl::Status(int begin, int count)> work,
                         absl::Time deadline = absl::InfiniteFuture(),
                         std::function<bool()> cancelled = nullptr);

  const DenoiserModel& model() const { return *model_; }
  int outstanding() const { return outstanding_.load(); }
  // Forward passes run since the batcher started, for every caller: how a
  // queued call tells its caller that the replica is busy, not stuck.
  int64_t forwards() const { return forwards_.load(std::memory_order_relaxed); }

 private:
  struct Active;
  struct BesideJob;
  struct Emitted;

  absl::Status Validate(const RunRequest& request) const;
  // A text model's padded ids for a negative prompt: none (the zero
  // encoding) for an empty one when the model says so.
  std::vector<int64_t> NegativeIds(const std::string& text) const;
  // Admission control: reserves n of the queue's places, or refuses them all.
  absl::Status ReserveSlots(int n);
  // x at the start step: the caller's latent, or x_T drawn from the path's
  // initial seed and scaled for the sampler.
  void SetStartLatent(TrajectoryStart& start, const SamplerSchedule& schedule, Active& a) const;
  absl::StatusOr<std::shared_ptr<const SamplerSchedule>> ScheduleFor(const SamplerChoice& choice);
  void Loop();
  // Joins new trajectories: their text contexts, and the capture at their
  // start step.
  void Admit(std::vector<Active>& arrivals);
  // Text contexts; runs whose prompt the encoder fails on end and leave.
  void ResolveContexts(std::vector<Active>& arrivals);
  struct Phase;
  // The conditioning `c` gives a trajectory of `request`: its rows, class
  // and, for a text model, its prompts' ids (kept in `run`; the request's
  // own text is not tokenized again).
  Phase PhaseFor(const SegmentConditioning& c, const RunRequest& request, Run& run) const;
  // Moves a trajectory to the conditioning of the segment its step is in.
  static void ApplySwitches(Active& a);
  // Queues `job` for the batcher's thread and waits until it is done.
  absl::Status RunJob(std::shared_ptr<BesideJob> job);
  // Runs the next turn of the job beside the trajectories whose turn it is.
  void RunBesideTurn();
  // Ends the queued jobs whose caller left or whose deadline passed.
  void EndStoppedJobs();
  // A forward pass of `forward` beside `keys` fairness keys earns the work
  // beside them (jobs, other runs' images) its one key's share.
  void CreditDecodes(absl::Duration forward, int keys);
  // Items of a job's turn, and images of lower-priority runs decoded at once.
  static constexpr int kBesideChunk = 8;
  static constexpr int kMaxDecodeBatch = 32;
  // Those, and options_.max_batch, within the bundle's max_batch.
  int decode_chunk_ = kBesideChunk;
  int max_decode_batch_ = kMaxDecodeBatch;
  // Decodes the emitted events that want images, in one pass, then delivers
  // them in order and ends the runs that finished. Images of runs ranked
  // behind the lowest wait their turn (see the definition) unless `drain`.
  void DecodeAndDeliver(bool drain);
  // DecodeAndDeliver's parts. Drops the events of runs that were cancelled,
  // passed their deadline or failed while the events waited for their turn
  // (their images are not decoded), and ends those runs whose trajectories
  // have all ended.
  void DropStoppedEvents();
  // Whether an emitted event carries images.
  static bool OwesImages(const Emitted& e);
  // Indices into emitted_, in order, of the events that go out now; counts
  // the images of runs behind the lowest-ranked in `other_images`.
  std::vector<size_t> EventsGoingNow(bool drain, int* other_images) const;
  // Decodes the images those events owe in one decoder batch.
  void DecodeImages(const std::vector<size_t>& now, int other_images);
  // Pushes those events to their runs; the rest wait for the next turn.
  void Deliver(const std::vector<size_t>& now);
  // One iteration: the steps below, in order.
  void Iterate(std::vector<Active>& active);
  void DropStopped(std::vector<Active>& active);
  // Cancels `run` if its caller went away, asking once per iteration.
  static void AskCaller(Run& run, int64_t iteration);
  // Why `run` stops now: past its deadline, cancelled, or already ended; OK
  // while it goes on.
  static absl::Status StopReason(Run& run, absl::Time now);
  int64_t UndeliveredBound(const Run& run) const;
  void ChooseBatch(const std::vector<Active>& active);  // into chosen_
  static void InheritArrivals(const std::vector<Active>& active, std::vector<Active>& arrivals);
  int FillBatch(const std::vector<Active>& active);     // returns the rows
  absl::Status Forward(int rows, absl::Time* started);
  void ApplyAndEmit(std::vector<Active>& active, const absl::Status& forward,
                    absl::Time forward_start);
  // One trajectory's DDIM step from its rows of the forward output.
  absl::Status Step(Active& a, absl::Span<float> out);
  // Sends the capture or final due after a step; true when it was the final.
  bool Emit(Active& a);
  void FailAll(std::vector<Active>& active, const absl::Status& status);
  // Tells observer_ how the active count moved since it was last told.
  void ReportActive(int active);
  // The decoder over `n` latents, in the workers' chunks; the images it
  // gives non-finite values for flagged in `non_finite` (DenoiserModel::Decode).
  absl::StatusOr<std::vector<uint8_t>> DecodeChunks(absl::Span<const float> latents, int n,
                                                    std::vector<char>& non_finite);
  // Decodes latents [begin, begin + count) into their images' place in
  // `pixels` (and flags, when given, in `non_finite`); chunks of one pass
  // write apart.
  absl::Status DecodeInto(absl::Span<const float> latents, int begin, int count,
                          std::vector<uint8_t>& pixels, std::vector<char>* non_finite = nullptr);

  DenoiserModel* const model_;
  Options options_;  // max_batch capped by the bundle's at construction
  BatcherObserver* const observer_;
  int reported_active_ = 0;  // batcher thread: the count observer_ was last told
  std::atomic<int> outstanding_{0};
  std::atomic<int64_t> forwards_{0};
  std::atomic<uint64_t> next_arrival_{0};

  // std primitives, as in Run, so that TSan sees them.
  std::mutex mu_;
  std::condition_variable work_;
  std::vector<Active> pending_;                       // guarded by mu_
  std::vector<std::shared_ptr<BesideJob>> besides_;  // guarded by mu_
  // Batcher thread only: jobs beside the trajectories taking turns, and the
  // time they (and other runs' images) took not yet matched by forward
  // passes.
  std::deque<std::shared_ptr<BesideJob>> beside_queue_;
  absl::Duration decode_debt_;
  bool stop_ = false;                                 // guarded by mu_

  std::mutex schedule_mu_;
  std::vector<std::pair<SamplerChoice, std::shared_ptr<const SamplerSchedule>>>
      schedules_;  // guarded by schedule_mu_

  // Batcher thread only. Reused across iterations: no allocation on the hot
  // path.
  std::vector<float> batch_x_, batch_out_, noise_, batch_context_, batch_time_ids_;
  std::vector<float> batch_t_;
  std::vector<int64_t> batch_cond_;
  std::unique_ptr<ContextCache> contexts_;
  ForwardWorkers workers_;
  // The encoding of no prompt (zeros; empty for a class model).
  const std::shared_ptr<const std::vector<float>> zero_encoding_;
  std::vector<Emitted> emitted_;
  std::vector<std::shared_ptr<Run>> done_runs_;
  BatchChoice batch_choice_;
  std::vector<BatchCandidate> candidates_;
  std::vector<size_t> chosen_;  // indices into the active list
  std::vector<bool> finished_;

  std::thread thread_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_ENGINE_TRAJECTORY_BATCHER_H_
