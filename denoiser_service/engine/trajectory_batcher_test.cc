#include "denoiser_service/engine/trajectory_batcher.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/philox.h"
#include "common/status_macros.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "gtest/gtest.h"
#include "tests/support/latents.h"

namespace dgrid {
namespace {

std::string Fixtures() {
  const char* dir = std::getenv("DGRID_FIXTURES");
  return dir ? dir : "";
}

using testing::kBatchDrift;
using testing::MaxAbsDiff;

// The Gaussian fixture (tests/fixtures/make_fixtures.py): data N(mu_c, var_c)
// per element for class c, row 2 = unconditional; its model is the exact
// optimal eps-predictor.
struct GaussianParams {
  std::vector<std::vector<double>> mu, var;  // [row][element]
};

GaussianParams ReadParams() {
  GaussianParams p;
  std::ifstream in(Fixtures() + "/gaussian/params.txt");
  std::string text;
  while (std::getline(in, text)) {
    std::istringstream line(text);
    std::string tag;
    line >> tag;
    std::vector<double> v;
    double d;
    while (line >> d) v.push_back(d);
    (tag == "mu" ? p.mu : p.var).push_back(v);
  }
  return p;
}

struct Collected {
  absl::Status status;
  std::vector<RunEvent> events;
  std::map<int, std::vector<float>> finals;
};

Collected Drain(Run& run) {
  Collected c;
  RunEvent e;
  for (Run::Wait w; (w = run.Next(absl::Seconds(30), &e)) != Run::Wait::kDone;) {
    if (w != Run::Wait::kEvent) continue;
    if (e.kind == RunEvent::Kind::kFinal) c.finals[e.trajectory] = e.latent;
    c.events.push_back(std::move(e));
  }
  c.status = run.status();
  return c;
}

// The example at the top of trajectory_batcher.h, line for line: readers
// copy it. `Consume` stands for the caller's use of an event.
absl::Status Sample(TrajectoryBatcher& batcher, RunRequest request,
                    const std::function<void(const RunEvent&)>& Consume) {
  ASSIGN_OR_RETURN(std::shared_ptr<Run> run, batcher.Start(std::move(request)));
  RunEvent event;
  for (Run::Wait w; (w = run->Next(absl::Milliseconds(50), &event)) != Run::Wait::kDone;) {
    // kTimeout delivers no event: it is the caller's chance to poll.
    if (w == Run::Wait::kEvent) Consume(event);
  }
  return run->status();
}

// Holds the batcher thread in its first forward pass until Open(), so that
// runs started meanwhile all join the next iteration together: what each
// iteration chooses is then deterministic. After Open it calls `each` at
// every forward pass, on the batcher thread, before that pass's updates.
class Gate : public BatcherObserver {
 public:
  void OnForward(int, int, absl::Duration) override {
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = true;
    changed_.notify_all();
    changed_.wait(lock, [this] { return open_; });
    if (each_) each_();
  }
  void AwaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [this] { return entered_; });
  }
  void Open(std::function<void()> each = nullptr) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      each_ = std::move(each);
      open_ = true;
    }
    changed_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool entered_ = false, open_ = false;
  std::function<void()> each_;
};

class BatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(Fixtures().empty()) << "DGRID_FIXTURES is not set";
    SetTorchThreads(1);
    auto model = DenoiserModel::Load(Fixtures() + "/gaussian", {"cpu"});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    params_ = ReadParams();
    ASSERT_EQ(params_.mu.size(), 3u);
  }

  Collected RunAll(TrajectoryBatcher& batcher, RunRequest request) {
    auto run = batcher.Start(std::move(request));
    if (!run.ok()) return {run.status(), {}, {}};
    return Drain(**run);
  }

  RunRequest Request(int n, float eta, uint64_t seed_base = 1) {
    RunRequest r;
    r.sampler = {50, eta, Spacing::kLeading, 1.0f};
    for (int i = 0; i < n; ++i) {
      r.trajectories.push_back({Path{seed_base + i, {{0, 1000 + seed_base + i}}}, {}});
    }
    return r;
  }

  // One deterministic-or-not DDIM step in double with the closed-form eps of
  // row `row` (the analytic reference for the engine).
  double Eps(const DdimSchedule& s, int i, int row, size_t j, double x) const {
    const double a = s.alpha_bar(i);
    return std::sqrt(1 - a) * (x - std::sqrt(a) * params_.mu[row][j]) /
           (a * params_.var[row][j] + 1 - a);
  }
  double StepDet(const DdimSchedule& s, int i, double eta, double eps, double x) const {
    const double a = s.alpha_bar(i), ap = s.alpha_bar_prev(i), sig = s.sigma(i, eta);
    const double x0 = (x - std::sqrt(1 - a) * eps) / std::sqrt(a);
    return std::sqrt(ap) * x0 + std::sqrt(1 - ap - sig * sig) * eps;
  }

  // Starts a one-step run and waits until the batcher is held in its
  // forward pass (see Gate). Drain the returned run after Open.
  std::shared_ptr<dgrid::Run> HoldAtGate(TrajectoryBatcher& batcher, Gate& gate) {
    RunRequest hold = Request(1, 1.0f, 999);
    hold.sampler.steps = 1;
    auto run = batcher.Start(std::move(hold));
    EXPECT_TRUE(run.ok()) << run.status();
    gate.AwaitEntered();
    return *run;
  }

  // A one-trajectory, 10-step run of key 2 and rank 10: a small grid.
  RunRequest SmallRun() {
    RunRequest small = Request(1, 1.0f, 7);
    small.sampler.steps = 10;
    small.fairness_key = 2;
    small.fairness_rank = 10;
    return small;
  }
  // Opens the gate and counts the forward passes, from the gate on, that ran
  // before `small`'s 10 steps were done.
  static std::shared_ptr<int> CountPassesUntilDone(Gate& gate, std::shared_ptr<dgrid::Run> small) {
    auto passes = std::make_shared<int>(0);
    gate.Open([passes, small] {
      if (small->model_evals() < 10) ++*passes;
    });
    return passes;
  }

  std::unique_ptr<DenoiserModel> model_;
  GaussianParams params_;
};

// With eta = 1 the sampler plugs E[x0 | x_t] into the DDPM posterior, which
// drops Var[x0 | x_t] at every step: at 50 steps the output variance is ~0.78
// of the data's, at the full 1000 steps it is the data's. So this test uses
// 1000 steps, and checks the engine against the exact law of the sampler at
// any step count (the recurrence below).
TEST_F(BatcherTest, ClosedFormSamplerReproducesTheDataDistribution) {
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 1024});
  constexpr int kSamples = 4096;
  constexpr int kSteps = 1000;
  RunRequest request = Request(kSamples, 1.0f);
  request.sampler.steps = kSteps;
  // Trailing: every train timestep, 999 to 0 (the fixture's leading spacing
  // with steps_offset 1 stops at 999 steps).
  request.sampler.spacing = Spacing::kTrailing;
  Collected c = RunAll(batcher, request);
  ASSERT_TRUE(c.status.ok()) << c.status;
  ASSERT_EQ(c.finals.size(), size_t{kSamples});

  // Every step is linear-Gaussian: x' = A x + B + sigma z. Propagating mean
  // and variance from N(0, 1) gives the exact law of the sampler's output.
  auto schedule = DdimSchedule::Create(model_->manifest().schedule, kSteps, Spacing::kTrailing);
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  const size_t numel = 16;
  for (size_t j = 0; j < numel; ++j) {
    double mean = 0, var = 1;
    for (int i = 0; i < kSteps; ++i) {
      const double b = StepDet(*schedule, i, 1.0, Eps(*schedule, i, 2, j, 0.0), 0.0);
      const double a = StepDet(*schedule, i, 1.0, Eps(*schedule, i, 2, j, 1.0), 1.0) - b;
      const double sig = schedule->sigma(i, 1.0f);
      mean = a * mean + b;
      var = a * a * var + sig * sig;
    }
    double sum = 0, sq = 0;
    for (const auto& [_, x] : c.finals) {
      sum += x[j];
      sq += double(x[j]) * x[j];
    }
    const double sample_mean = sum / kSamples;
    const double sample_var = sq / kSamples - sample_mean * sample_mean;
    // 5 standard errors of the sample mean and variance.
    EXPECT_NEAR(sample_mean, mean, 5 * std::sqrt(var / kSamples)) << "element " << j;
    EXPECT_NEAR(sample_var, var, 5 * var * std::sqrt(2.0 / kSamples)) << "element " << j;
    // And at 1000 steps the sampler's law is the data's: mean within 0.005,
    // variance within 5% (measured: at most 4% low, on the narrowest element).
    EXPECT_NEAR(mean, params_.mu[2][j], 0.005) << "element " << j;
    EXPECT_NEAR(var / params_.var[2][j], 1.0, 0.05) << "element " << j;
    if (j < 3) {
      std::cout << "element " << j << ": mu " << params_.mu[2][j] << " sample " << sample_mean
                << " | s^2 " << params_.var[2][j] << " sample " << sample_var << "\n";
    }
  }
}

TEST_F(BatcherTest, EtaZeroIsDeterministicAndMatchesTheFormulasStepByStep) {
  TrajectoryBatcher batcher(model_.get(), {});
  RunRequest request = Request(3, 0.0f);
  for (int s = 1; s < 50; ++s) request.capture_steps.push_back(s);
  request.previews = true;
  Collected first = RunAll(batcher, request);
  Collected second = RunAll(batcher, request);
  ASSERT_TRUE(first.status.ok()) << first.status;
  EXPECT_EQ(first.finals, second.finals);

  auto schedule = DdimSchedule::Create(model_->manifest().schedule, 50, Spacing::kLeading);
  // Reference: x_T from the same Philox stream, then double-precision DDIM.
  std::map<int, std::vector<double>> x;
  for (int t = 0; t < 3; ++t) {
    std::vector<float> init(16);
    FillGaussian({request.trajectories[t].path.init_seed, NoiseStream::kInitialLatent, 0},
                 absl::MakeSpan(init));
    x[t].assign(init.begin(), init.end());
  }
  std::map<std::pair<int, int>, std::vector<float>> captured;
  for (const RunEvent& e : first.events) captured[{e.trajectory, e.step}] = e.latent;
  double worst = 0;
  for (int i = 0; i < 50; ++i) {
    for (int t = 0; t < 3; ++t) {
      for (size_t j = 0; j < 16; ++j) {
        x[t][j] = StepDet(*schedule, i, 0.0, Eps(*schedule, i, 2, j, x[t][j]), x[t][j]);
      }
      const std::vector<float>& got = captured[{t, i + 1}];
      ASSERT_EQ(got.size(), 16u) << "no capture at step " << i + 1;
      for (size_t j = 0; j < 16; ++j) {
        EXPECT_NEAR(got[j], x[t][j], 1e-4 * (1 + std::abs(x[t][j]))) << "step " << i + 1;
        worst = std::max(worst, std::abs(got[j] - x[t][j]));
      }
    }
  }
  std::cout << "eta=0: worst |engine - double reference| over 50 steps = " << worst << "\n";
}

TEST_F(BatcherTest, NoiseIsBitIdenticalAloneAndAtAnyPositionInABatchOf17) {
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 64});
  const TrajectoryStart probe{Path{77, {{0, 5}, {10, 6}}}, {}};
  RunRequest alone = Request(0, 1.0f);
  alone.trajectories = {probe};
  Collected reference = RunAll(batcher, alone);
  ASSERT_TRUE(reference.status.ok());
  for (int position : {0, 8, 16}) {
    RunRequest batch = Request(17, 1.0f, 100 + position);
    batch.trajectories[position] = probe;
    Collected c = RunAll(batcher, batch);
    ASSERT_TRUE(c.status.ok());
    EXPECT_EQ(c.finals[position], reference.finals[0]) << "position " << position;
    EXPECT_NE(c.finals[(position + 1) % 17], reference.finals[0]);
  }
}

TEST_F(BatcherTest, TrunkAndBranchShareTheirPrefixExactly) {
  TrajectoryBatcher batcher(model_.get(), {});
  constexpr int k = 20;
  const Path trunk{9, {{0, 100}}};
  RunRequest trunk_run = Request(0, 1.0f);
  trunk_run.trajectories = {{trunk, {}}};
  trunk_run.capture_steps = {k};
  Collected t = RunAll(batcher, trunk_run);
  ASSERT_TRUE(t.status.ok());
  ASSERT_EQ(t.events.front().kind, RunEvent::Kind::kCapture);  // capture before final
  const std::vector<float> at_k = t.events.front().latent;

  // The branch path run from step 0 reaches the trunk's latent at step k.
  RunRequest prefix = Request(0, 1.0f);
  prefix.trajectories = {{trunk.BranchAt(k, 555), {}}};
  prefix.end_step = k;
  Collected p = RunAll(batcher, prefix);
  ASSERT_TRUE(p.status.ok());
  EXPECT_EQ(p.finals[0], at_k);

  // Resuming from the capture equals running the branch path from scratch.
  RunRequest from_capture = Request(0, 1.0f);
  from_capture.start_step = k;
  from_capture.trajectories = {{trunk.BranchAt(k, 555), at_k}, {trunk.BranchAt(k, 556), at_k}};
  RunRequest from_scratch = Request(0, 1.0f);
  from_scratch.trajectories = {{trunk.BranchAt(k, 555), {}}};
  Collected resumed = RunAll(batcher, from_capture);
  Collected scratch = RunAll(batcher, from_scratch);
  ASSERT_TRUE(resumed.status.ok() && scratch.status.ok());
  EXPECT_EQ(resumed.finals[0], scratch.finals[0]);
  EXPECT_EQ(resumed.events.size(), 2u);
  // Different paths, different results.
  EXPECT_NE(resumed.finals[0], resumed.finals[1]);
  EXPECT_NE(resumed.finals[0], t.finals[0]);
}

// Euler ancestral keeps every rule DDIM keeps: a trajectory's noise is its
// path's, keyed by (seed, step), so it is the same alone or in a batch, and a
// branch resumed from the trunk's capture equals its path run from step 0.
// With trailing spacing x_T is scaled as diffusers' init_noise_sigma.
TEST_F(BatcherTest, EulerAncestralTrajectoriesFollowTheirPathsLikeDdim) {
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 64});
  for (Spacing spacing : {Spacing::kLeading, Spacing::kTrailing}) {
    SCOPED_TRACE(spacing == Spacing::kLeading ? "leading" : "trailing");
    auto euler = [&](RunRequest r) {
      r.sampler.sampler = Sampler::kEulerAncestral;
      r.sampler.spacing = spacing;
      return r;
    };
    const Path trunk{9, {{0, 100}}};
    RunRequest alone = euler(Request(0, 1.0f));
    alone.trajectories = {{trunk, {}}};
    alone.capture_steps = {0, 20};
    Collected reference = RunAll(batcher, alone);
    ASSERT_TRUE(reference.status.ok()) << reference.status;
    RunRequest batch = euler(Request(9, 1.0f, 300));
    batch.trajectories[4] = {trunk, {}};
    Collected batched = RunAll(batcher, batch);
    ASSERT_TRUE(batched.status.ok());
    EXPECT_EQ(batched.finals[4], reference.finals[0]);

    // x_T: the seed's N(0, 1) draw, times initial_scale (trailing only).
    std::vector<float> z(reference.events.front().latent.size());
    FillGaussian({trunk.init_seed, NoiseStream::kInitialLatent, 0}, absl::MakeSpan(z));
    const std::vector<float>& x_t = reference.events.front().latent;
    if (spacing == Spacing::kLeading) {
      EXPECT_EQ(x_t, z);
    } else {
      EXPECT_LT(x_t[0] / z[0], 1.0f);
      EXPECT_GT(x_t[0] / z[0], 0.99f);
    }

    const std::vector<float>& at_20 = reference.events[1].latent;
    RunRequest resumed = euler(Request(0, 1.0f));
    resumed.start_step = 20;
    resumed.trajectories = {{trunk.BranchAt(20, 555), at_20}};
    RunRequest scratch = euler(Request(0, 1.0f));
    scratch.trajectories = {{trunk.BranchAt(20, 555), {}}};
    Collected r = RunAll(batcher, resumed), s = RunAll(batcher, scratch);
    ASSERT_TRUE(r.status.ok() && s.status.ok());
    EXPECT_EQ(r.finals[0], s.finals[0]);
    EXPECT_NE(r.finals[0], reference.finals[0]);

    // The same path under DDIM is another trajectory.
    RunRequest ddim = Request(0, 1.0f);
    ddim.sampler.spacing = spacing;
    ddim.trajectories = {{trunk, {}}};
    Collected d = RunAll(batcher, ddim);
    ASSERT_TRUE(d.status.ok());
    EXPECT_NE(d.finals[0], reference.finals[0]);
  }
}

TEST_F(BatcherTest, GuidanceMixesConditionalAndUnconditionalPasses) {
  TrajectoryBatcher batcher(model_.get(), {});
  auto run_with = [&](float g) {
    RunRequest r = Request(1, 0.0f);
    r.class_index = 0;
    r.sampler.guidance = g;
    return RunAll(batcher, r).finals[0];
  };
  auto schedule = DdimSchedule::Create(model_->manifest().schedule, 50, Spacing::kLeading);
  std::vector<float> init(16);
  FillGaussian({1, NoiseStream::kInitialLatent, 0}, absl::MakeSpan(init));
  auto reference = [&](double g) {
    std::vector<double> x(init.begin(), init.end());
    for (int i = 0; i < 50; ++i) {
      for (size_t j = 0; j < 16; ++j) {
        const double eu = Eps(*schedule, i, 2, j, x[j]), ec = Eps(*schedule, i, 0, j, x[j]);
        x[j] = StepDet(*schedule, i, 0.0, eu + g * (ec - eu), x[j]);
      }
    }
    return x;
  };
  for (float g : {0.0f, 1.0f, 3.0f}) {
    const std::vector<float> got = run_with(g);
    const std::vector<double> want = reference(g);
    for (size_t j = 0; j < 16; ++j) {
      EXPECT_NEAR(got[j], want[j], 1e-3 * (1 + std::abs(want[j]))) << "g=" << g;
    }
  }
}

TEST_F(BatcherTest, FullQueueAnswersResourceExhausted) {
  TrajectoryBatcher batcher(model_.get(),
                            {.max_batch = 4, .max_queue = 4,
                             .debug_step_delay = absl::Milliseconds(2)});
  auto first = batcher.Start(Request(3, 1.0f));
  ASSERT_TRUE(first.ok());
  auto second = batcher.Start(Request(2, 1.0f));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(second.status().message().find("queue is full"), absl::string_view::npos);
  EXPECT_TRUE(Drain(**first).status.ok());
  // Slots come back once the first run ends.
  EXPECT_TRUE(RunAll(batcher, Request(4, 1.0f)).status.ok());
  EXPECT_EQ(batcher.outstanding(), 0);
}

TEST_F(BatcherTest, DeadlinesAndCancellationStopWork) {
  TrajectoryBatcher batcher(model_.get(), {.debug_step_delay = absl::Milliseconds(5)});
  RunRequest late = Request(2, 1.0f);
  late.deadline = absl::Now() + absl::Milliseconds(30);
  EXPECT_EQ(RunAll(batcher, late).status.code(), absl::StatusCode::kDeadlineExceeded);

  auto run = batcher.Start(Request(2, 1.0f));
  ASSERT_TRUE(run.ok());
  absl::SleepFor(absl::Milliseconds(20));
  (*run)->Cancel();
  Collected cancelled = Drain(**run);
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(cancelled.finals.empty());

  RunRequest expired = Request(1, 1.0f);
  expired.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(RunAll(batcher, expired).status.code(), absl::StatusCode::kDeadlineExceeded);
  // The engine keeps serving.
  EXPECT_TRUE(RunAll(batcher, Request(1, 1.0f)).status.ok());
  EXPECT_EQ(batcher.outstanding(), 0);
}

// A caller that stops reading (a Branch client that never reads its stream)
// does not make the replica hold its events without bound.
TEST_F(BatcherTest, ARunWhoseCallerStopsReadingEndsAtItsUndeliveredBound) {
  const int64_t bound = 4 * model_->latent_numel() * int64_t{sizeof(float)};
  TrajectoryBatcher batcher(model_.get(), {.max_undelivered_bytes = bound});
  RunRequest request = Request(2, 1.0f);
  for (int k = 0; k < 50; ++k) request.capture_steps.push_back(k);
  auto run = batcher.Start(request);
  ASSERT_TRUE(run.ok());
  // Nobody reads until the batcher is done with it.
  for (const absl::Time until = absl::Now() + absl::Seconds(30);
       batcher.outstanding() > 0 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const Collected stopped = Drain(**run);
  EXPECT_EQ(stopped.status.code(), absl::StatusCode::kResourceExhausted) << stopped.status;
  EXPECT_TRUE(stopped.events.empty());  // a failed run's events are dropped
  // A caller that reads keeps its run, under the same bound.
  EXPECT_TRUE(RunAll(batcher, Request(2, 1.0f)).status.ok());
}

// A process runs one batcher per model, all reporting to one observer (the
// metrics): the active-trajectories gauge is their sum, not whichever batcher
// spoke last, and reads 0 once both are idle.
TEST_F(BatcherTest, ActiveTrajectoriesAddUpAcrossBatchers) {
  class Sum : public BatcherObserver {
   public:
    void OnActiveChange(int delta) override {
      const int now = total.fetch_add(delta) + delta;
      int seen = largest.load();
      while (now > seen && !largest.compare_exchange_weak(seen, now)) {
      }
    }
    std::atomic<int> total{0}, largest{0};
  } sum;
  {
    TrajectoryBatcher first(model_.get(), {.debug_step_delay = absl::Milliseconds(4)}, &sum);
    TrajectoryBatcher second(model_.get(), {.debug_step_delay = absl::Milliseconds(4)}, &sum);
    auto a = first.Start(Request(3, 1.0f));
    auto b = second.Start(Request(2, 1.0f));
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(Drain(**a).status.ok());
    EXPECT_TRUE(Drain(**b).status.ok());
    EXPECT_EQ(sum.largest.load(), 5);  // 50 steps of 4 ms each: the runs overlap
    // Each batcher reports its last change after the run's finals went out.
    auto settles_at = [&sum](int total) {
      const absl::Time give_up = absl::Now() + absl::Seconds(10);
      while (sum.total.load() != total && absl::Now() < give_up) {
        absl::SleepFor(absl::Milliseconds(1));
      }
      return sum.total.load();
    };
    EXPECT_EQ(settles_at(0), 0);
    // A batcher that stops with work in hand takes its share back.
    auto c = first.Start(Request(2, 1.0f));
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(settles_at(2), 2);
  }
  EXPECT_EQ(sum.total.load(), 0);
}

TEST_F(BatcherTest, TheBatcherCancelsARunWhoseCallerWentAway) {
  TrajectoryBatcher batcher(model_.get(), {.debug_step_delay = absl::Milliseconds(2)});
  RunRequest request = Request(2, 1.0f);
  request.sampler.steps = 999;
  request.capture_steps = {0, 3};
  auto run = batcher.Start(request);
  ASSERT_TRUE(run.ok());
  std::atomic<bool> gone{false};
  std::atomic<int> asked{0};
  (*run)->AttachCaller([&] {
    ++asked;
    return gone.load();
  });
  // Nobody polls: the run's waiter sleeps until the batcher ends the run.
  RunEvent event;
  int captures = 0;
  while (captures < 4) {
    ASSERT_EQ((*run)->Next(absl::Seconds(30), &event), Run::Wait::kEvent);
    ++captures;
  }
  gone = true;
  Run::Wait w;
  while ((w = (*run)->Next(absl::Seconds(30), &event)) == Run::Wait::kEvent) {
  }
  EXPECT_EQ(w, Run::Wait::kDone);
  EXPECT_EQ((*run)->status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT((*run)->model_evals(), 2 * 1000);
  // Once per run and iteration, not once per trajectory.
  EXPECT_LE(asked.load(), (*run)->model_evals() / 2 + 1);

  // A detached caller is never asked again; the run goes on to the end.
  RunRequest short_run = Request(2, 1.0f);
  short_run.sampler.steps = 20;
  auto second = batcher.Start(short_run);
  ASSERT_TRUE(second.ok());
  std::atomic<int> asked_after{0};
  std::atomic<bool> detached{false};
  (*second)->AttachCaller([&] {
    if (!detached) return false;
    ++asked_after;
    return true;  // would cancel, were it still asked
  });
  (*second)->DetachCaller();
  detached = true;
  Collected done = Drain(**second);
  EXPECT_TRUE(done.status.ok()) << done.status;
  EXPECT_EQ(done.finals.size(), 2u);
  EXPECT_EQ(asked_after.load(), 0);
  EXPECT_EQ(batcher.outstanding(), 0);
}

TEST_F(BatcherTest, WorkBesideTheTrajectoriesRunsEachItemOnceInTurnsAcrossTheCores) {
  TrajectoryBatcher batcher(model_.get(), {.cores = 2});
  // Trajectories running meanwhile: the work takes turns with their passes.
  auto run = batcher.Start(Request(4, 1.0f));
  ASSERT_TRUE(run.ok());
  const int items = 21;  // three turns, the last one short
  std::vector<std::atomic<int>> seen(items);
  std::mutex mu;
  std::set<std::thread::id> threads;
  ASSERT_TRUE(batcher
                  .RunBeside(items,
                             [&](int begin, int count) {
                               for (int i = begin; i < begin + count; ++i) ++seen[i];
                               std::lock_guard<std::mutex> lock(mu);
                               threads.insert(std::this_thread::get_id());
                               return absl::OkStatus();
                             })
                  .ok());
  for (int i = 0; i < items; ++i) EXPECT_EQ(seen[i], 1) << "item " << i;
  EXPECT_EQ(threads.size(), 2u);  // a turn is split over the forward workers
  EXPECT_TRUE(Drain(**run).status.ok());

  // The first failure ends the job; a passed deadline or a caller that went
  // away ends it before its next turn.
  int turns = 0;
  EXPECT_EQ(batcher
                .RunBeside(items,
                           [&](int begin, int) {
                             if (begin == 0) ++turns;
                             return begin == 0 ? absl::DataLossError("broken")
                                               : absl::OkStatus();
                           })
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(turns, 1);
  auto nothing = [](int, int) { return absl::InternalError("must not run"); };
  EXPECT_EQ(batcher.RunBeside(items, nothing, absl::Now() - absl::Seconds(1)).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(batcher.RunBeside(items, nothing, absl::InfiniteFuture(), [] { return true; }).code(),
            absl::StatusCode::kCancelled);
  EXPECT_TRUE(batcher.RunBeside(0, nothing).ok());
}

// Work beside no trajectory (a Decode or a curve's judging on an idle
// replica) took no one's turn: the runs that come next do not wait it out
// (it used to hold every later job, and other runs' images, until the
// forward passes had paid it back).
TEST_F(BatcherTest, WorkOnAnIdleReplicaLeavesNoDebtForTheNextRuns) {
  TrajectoryBatcher batcher(model_.get(), {.debug_step_delay = absl::Milliseconds(20), .cores = 1});
  ASSERT_TRUE(batcher
                  .RunBeside(1, [](int, int) {
                    absl::SleepFor(absl::Milliseconds(300));
                    return absl::OkStatus();
                  })
                  .ok());
  const int64_t before = batcher.forwards();
  auto run = batcher.Start(Request(1, 1.0f));  // 50 steps of 20 ms and more
  ASSERT_TRUE(run.ok());
  while (batcher.forwards() < before + 2) absl::SleepFor(absl::Milliseconds(1));  // running
  int64_t ran_at = -1;
  ASSERT_TRUE(batcher
                  .RunBeside(1, [&](int, int) {
                    ran_at = batcher.forwards();
                    return absl::OkStatus();
                  })
                  .ok());
  EXPECT_TRUE(Drain(**run).status.ok());
  EXPECT_LT(ran_at - before, 25) << "the job waited for the run";
}

// Equal grids finish in the order they came: a grid keeps its place while
// it has trajectories here, though its later runs (a grid's rows) arrive
// after another grid's first. They used to queue behind that grid.
TEST_F(BatcherTest, AKeyKeepsItsFirstArrivalWhileItRuns) {
  // Slow passes: the first run is still going when the others arrive.
  TrajectoryBatcher batcher(model_.get(),
                            {.max_batch = 1, .debug_step_delay = absl::Milliseconds(10)});
  auto request = [&](uint64_t key, uint64_t seed) {
    RunRequest r = Request(1, 1.0f, seed);
    r.sampler.steps = 20;
    r.fairness_key = key;
    return r;
  };
  auto first = batcher.Start(request(1, 1));
  ASSERT_TRUE(first.ok());
  while (batcher.forwards() < 2) absl::SleepFor(absl::Milliseconds(1));
  auto other = batcher.Start(request(2, 2));  // another grid, equal in size
  auto later = batcher.Start(request(1, 3));  // the first grid's next run
  ASSERT_TRUE(other.ok() && later.ok());
  std::mutex mu;
  std::vector<int> finished;
  auto drain = [&](dgrid::Run& run, int id) {
    const bool ok = Drain(run).status.ok();
    std::lock_guard<std::mutex> lock(mu);
    finished.push_back(ok ? id : -id);
  };
  std::thread a(drain, std::ref(**first), 1), b(drain, std::ref(**other), 2),
      c(drain, std::ref(**later), 3);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(finished, (std::vector<int>{1, 3, 2}));
}

TEST_F(BatcherTest, AJobWhoseCallerLeftEndsWithoutWaitingForTheJobsAheadOfIt) {
  TrajectoryBatcher batcher(model_.get(), {.cores = 1});
  // Two jobs ahead hold the batcher's thread, each until it is let go.
  std::promise<void> first_started, release_first, release_second;
  std::shared_future<void> first_go = release_first.get_future().share();
  std::shared_future<void> second_go = release_second.get_future().share();
  auto first = std::async(std::launch::async, [&] {
    return batcher.RunBeside(1, [&](int, int) {
      first_started.set_value();
      first_go.wait();
      return absl::OkStatus();
    });
  });
  first_started.get_future().wait();
  auto second = std::async(std::launch::async, [&] {
    return batcher.RunBeside(1, [&](int, int) {
      second_go.wait();
      return absl::OkStatus();
    });
  });
  absl::SleepFor(absl::Milliseconds(200));  // queued behind the first
  std::atomic<bool> gone{false};
  auto left = std::async(std::launch::async, [&] {
    return batcher.RunBeside(1, [](int, int) { return absl::InternalError("must not run"); },
                             absl::InfiniteFuture(), [&] { return gone.load(); });
  });
  auto expired = std::async(std::launch::async, [&] {
    return batcher.RunBeside(1, [](int, int) { return absl::InternalError("must not run"); },
                             absl::Now() + absl::Milliseconds(300));
  });
  absl::SleepFor(absl::Milliseconds(400));  // both queued behind the second
  gone = true;
  release_first.set_value();
  // Both end while the second job still holds the batcher.
  const bool left_ended = left.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  const bool expired_ended =
      expired.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  const bool second_running = second.wait_for(std::chrono::seconds(0)) != std::future_status::ready;
  release_second.set_value();
  EXPECT_TRUE(first.get().ok());
  EXPECT_TRUE(second.get().ok());
  ASSERT_TRUE(left_ended && expired_ended);
  EXPECT_TRUE(second_running);
  EXPECT_EQ(left.get().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(expired.get().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(BatcherTest, InvalidRequestsNameTheField) {
  TrajectoryBatcher batcher(model_.get(), {});
  struct Case {
    std::function<void(RunRequest&)> mutate;
    const char* field;
  };
  const Case cases[] = {
      {[](RunRequest& r) { r.sampler.steps = 0; }, "sampler.steps"},
      {[](RunRequest& r) { r.sampler.steps = 5000; }, "sampler.steps"},
      {[](RunRequest& r) { r.sampler.eta = 1.5f; }, "sampler.eta"},
      {[](RunRequest& r) { r.sampler.eta = -0.1f; }, "sampler.eta"},
      {[](RunRequest& r) { r.sampler.eta = NAN; }, "sampler.eta"},
      {[](RunRequest& r) { r.sampler.guidance = -1; }, "sampler.guidance"},
      // Fractional timesteps, and the fixture's model takes whole ones.
      {[](RunRequest& r) {
         r.sampler.sampler = Sampler::kEulerAncestral;
         r.sampler.spacing = Spacing::kLinspace;
       },
       "sampler.spacing"},
      {[](RunRequest& r) { r.class_index = 7; }, "class_index"},
      {[](RunRequest& r) { r.start_step = 50; }, "start_step"},
      {[](RunRequest& r) { r.end_step = 51; }, "end_step"},
      {[](RunRequest& r) { r.capture_steps = {10, 5}; }, "capture_steps[1]"},
      {[](RunRequest& r) { r.trajectories.clear(); }, "trajectories"},
      {[](RunRequest& r) { r.trajectories[0].path.segments = {{0, 1}, {9, 2}, {4, 3}}; },
       "trajectories[0].path.segments[2].from_step"},
      {[](RunRequest& r) { r.trajectories[1].path.segments = {{0, 1}, {7, 2}, {7, 3}}; },
       "trajectories[1].path.segments[2].from_step"},
      {[](RunRequest& r) { r.trajectories[0].latent = {1, 2, 3}; }, "trajectories[0].latent"},
      {[](RunRequest& r) { r.start_step = 3; }, "trajectories[0].latent"},
      {[](RunRequest& r) {
         r.trajectories[1].latent.assign(16, 0.0f);
         r.trajectories[1].latent[3] = NAN;
       },
       "trajectories[1].latent"},
      {[](RunRequest& r) {
         r.trajectories[0].latent.assign(16, 0.0f);
         r.trajectories[0].latent[15] = -INFINITY;
       },
       "trajectories[0].latent"},
  };
  for (const Case& c : cases) {
    RunRequest r = Request(2, 1.0f);
    c.mutate(r);
    auto run = batcher.Start(r);
    ASSERT_FALSE(run.ok()) << c.field;
    EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
    // RunRequest's names (the adapter puts the wire's on them).
    EXPECT_TRUE(absl::StartsWith(run.status().message(), c.field)) << run.status().message();
  }
  EXPECT_EQ(batcher.outstanding(), 0);
  EXPECT_TRUE(RunAll(batcher, Request(1, 1.0f)).status.ok());
}

TEST_F(BatcherTest, ASmallRunOfAnotherKeyIsNotStarvedByALargeOne) {
  Gate gate;
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 4}, &gate);
  std::shared_ptr<dgrid::Run> hold = HoldAtGate(batcher, gate);
  // Key 1: four runs of 8 trajectories x 50 steps, 400 forward passes of 4
  // rows. Then key 2: one 10-step trajectory, submitted last.
  std::vector<RunRequest> large;
  std::vector<std::shared_ptr<dgrid::Run>> large_runs;
  // Ranked as the orchestrator ranks grids: by their planned evaluations.
  for (int r = 0; r < 4; ++r) {
    large.push_back(Request(8, 1.0f, 100 + 8 * r));
    large.back().fairness_key = 1;
    large.back().fairness_rank = 4 * 8 * 50;
    large_runs.push_back(*batcher.Start(large.back()));
  }
  const RunRequest small = SmallRun();
  std::shared_ptr<dgrid::Run> small_run = *batcher.Start(small);
  const std::shared_ptr<int> passes = CountPassesUntilDone(gate, small_run);
  Collected small_result = Drain(*small_run);
  ASSERT_TRUE(small_result.status.ok()) << small_result.status;
  std::vector<Collected> large_results;
  for (auto& run : large_runs) large_results.push_back(Drain(*run));
  EXPECT_TRUE(Drain(*hold).status.ok());
  // The held pass, then one row in each of the next 10: oldest-first would
  // make it wait for all 400 of key 1's passes.
  EXPECT_EQ(*passes, 11);

  // Sharing changes no result: each run gives what it gives alone.
  TrajectoryBatcher alone(model_.get(), {.max_batch = 4});
  EXPECT_EQ(small_result.finals, RunAll(alone, small).finals);
  for (size_t r = 0; r < large.size(); ++r) {
    ASSERT_TRUE(large_results[r].status.ok()) << large_results[r].status;
    EXPECT_EQ(large_results[r].finals, RunAll(alone, large[r]).finals) << "run " << r;
  }
}

TEST_F(BatcherTest, LowerRanksGoFirstAndEqualRanksInArrivalOrder) {
  // Three tenants, 4 rows per pass, 6 trajectories each (300 steps of work,
  // below every rank here): the rank-1000 key runs first although it arrived
  // last; the two rank-5000 keys follow in the order they arrived, not
  // interleaved (which would finish both late).
  Gate gate;
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 4}, &gate);
  std::shared_ptr<dgrid::Run> hold = HoldAtGate(batcher, gate);
  struct Tenant {
    uint64_t key, rank;
  };
  const std::vector<Tenant> tenants = {{30, 5000}, {10, 5000}, {20, 1000}};
  std::vector<std::shared_ptr<dgrid::Run>> runs;
  for (const Tenant& t : tenants) {
    RunRequest r = Request(6, 1.0f, t.key);
    r.fairness_key = t.key;
    r.fairness_rank = t.rank;
    runs.push_back(*batcher.Start(std::move(r)));
  }
  // The forward pass at which each run ended.
  std::vector<int> ended(runs.size(), -1);
  int pass = 0;
  gate.Open([&] {
    for (size_t k = 0; k < runs.size(); ++k) {
      if (ended[k] < 0 && runs[k]->model_evals() == 6 * 50) ended[k] = pass;
    }
    ++pass;
  });
  for (auto& run : runs) EXPECT_TRUE(Drain(*run).status.ok());
  EXPECT_TRUE(Drain(*hold).status.ok());
  // A run that ended after the last gated pass ended last.
  for (int& e : ended) {
    if (e < 0) e = pass;
  }
  // 6 trajectories x 50 steps at 4 rows a pass: a tenant first in line ends
  // after 100 passes (4, then 2 trajectories at a time), the next after 150,
  // the last after 225. Interleaved evenly, all three would end near 225.
  EXPECT_LT(ended[2], ended[0]);  // rank 1000 before rank 5000
  EXPECT_LT(ended[0], ended[1]);  // of equal ranks, the one that came first
  EXPECT_LE(ended[2], 105);
  EXPECT_LE(ended[0], 160);
}

// A caller chooses its rank (issue 24: Branch calls claiming rank 0 sent
// straight to a replica completed no normal grid in 30 s). A run's rank is at
// least its own work, so a claim buys no more than an honest small grid has.
TEST_F(BatcherTest, AClaimedRankBuysNoMoreThanTheRunsOwnWork) {
  Gate gate;
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 4}, &gate);
  std::shared_ptr<dgrid::Run> hold = HoldAtGate(batcher, gate);
  RunRequest greedy = Request(8, 1.0f, 100);  // 400 steps of work
  greedy.fairness_key = 1;
  greedy.fairness_rank = 0;
  std::shared_ptr<dgrid::Run> greedy_run = *batcher.Start(greedy);
  std::shared_ptr<dgrid::Run> small_run = *batcher.Start(SmallRun());
  const std::shared_ptr<int> passes = CountPassesUntilDone(gate, small_run);
  EXPECT_TRUE(Drain(*small_run).status.ok());
  EXPECT_TRUE(Drain(*greedy_run).status.ok());
  EXPECT_TRUE(Drain(*hold).status.ok());
  // The held pass, then the small run's 10: it went first although the
  // greedy run claimed rank 0 (taken at face value, it would wait 100).
  EXPECT_EQ(*passes, 11);
}

// Issue 25: a path segment may switch the conditioning from its step on.
// With the same noise (the trunk's seed), a switch at step 0 is the plain run
// of the new class; a switch to the request's own class changes nothing; a
// later switch keeps the trunk's latents up to its step; and mixed
// conditionings in one batch give what each gives alone.
TEST_F(BatcherTest, ASegmentSwitchesTheConditioningFromItsStep) {
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 64});
  auto run_of = [&](int64_t request_class, const Path& path, int capture = -1) {
    RunRequest r = Request(1, 1.0f, 1);
    r.class_index = request_class;
    r.trajectories[0].path = path;
    if (capture >= 0) r.capture_steps = {capture};
    return RunAll(batcher, r);
  };
  auto to_class = [](int c) { return SegmentConditioning{"", "", c}; };
  const Path trunk{5, {{0, 77}}};
  const Collected plain0 = run_of(0, trunk, 30);
  const Collected plain1 = run_of(1, trunk);
  ASSERT_TRUE(plain0.status.ok() && plain1.status.ok()) << plain0.status << plain1.status;
  ASSERT_NE(plain0.finals.at(0), plain1.finals.at(0));

  const Collected at0 = run_of(0, trunk.BranchAt(0, 77, to_class(1)));
  EXPECT_EQ(at0.finals.at(0), plain1.finals.at(0));
  const Collected same = run_of(0, trunk.BranchAt(20, 77, to_class(0)));
  EXPECT_EQ(same.finals.at(0), plain0.finals.at(0));
  const Collected at30 = run_of(0, trunk.BranchAt(30, 77, to_class(1)), 30);
  ASSERT_TRUE(at30.status.ok()) << at30.status;
  EXPECT_EQ(at30.events.front().latent, plain0.events.front().latent);  // the capture at 30
  EXPECT_NE(at30.finals.at(0), plain0.finals.at(0));
  EXPECT_NE(at30.finals.at(0), plain1.finals.at(0));
  // By name, as a class model's prompts name classes.
  const std::string name = model_->manifest().class_labels[1];
  EXPECT_EQ(run_of(0, trunk.BranchAt(0, 77, SegmentConditioning{name, "", -1})).finals.at(0),
            plain1.finals.at(0));

  // Eight trajectories switching at different steps to either class or to
  // none (unconditional),
  // in one batch: each as alone.
  RunRequest mixed = Request(8, 1.0f, 1);
  mixed.class_index = 1;
  for (int i = 0; i < 8; ++i) {
    mixed.trajectories[i].path = Path{5, {{0, 77}}}.BranchAt(i * 6, 77 + i, to_class(i % 3 - 1));
  }
  const Collected together = RunAll(batcher, mixed);
  ASSERT_TRUE(together.status.ok()) << together.status;
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(together.finals.at(i), run_of(1, mixed.trajectories[i].path).finals.at(0)) << i;
  }
}

TEST_F(BatcherTest, ASegmentConditioningTheModelCannotTakeIsRefusedByField) {
  TrajectoryBatcher batcher(model_.get(), {});
  RunRequest r = Request(2, 1.0f, 1);
  r.trajectories[1].path = Path{5, {{0, 77}}}.BranchAt(3, 9, SegmentConditioning{"", "", 99});
  EXPECT_EQ(batcher.Start(r).status().message().substr(0, 52),
            "trajectories[1].path.segments[1].conditioning.class_");
  r.trajectories[1].path =
      Path{5, {{0, 77}}}.BranchAt(3, 9, SegmentConditioning{"no such class", "", -1});
  EXPECT_EQ(batcher.Start(r).status().code(), absl::StatusCode::kInvalidArgument);
  r.trajectories[1].path = Path{5, {{0, 77}}}.BranchAt(3, 9, SegmentConditioning{"", "blurry", -1});
  EXPECT_NE(batcher.Start(r).status().message().find("conditioning.negative_prompt"),
            std::string::npos);
}

TEST_F(BatcherTest, ModelEvalsGrowsWithEveryStepAndEndsAtTheFinalsSum) {
  Gate gate;
  TrajectoryBatcher batcher(model_.get(), {.max_batch = 2}, &gate);
  std::shared_ptr<dgrid::Run> hold = HoldAtGate(batcher, gate);
  RunRequest request = Request(3, 1.0f);
  request.sampler.steps = 30;
  request.end_step = 20;
  std::shared_ptr<dgrid::Run> run = *batcher.Start(request);
  EXPECT_EQ(run->model_evals(), 0);
  // As seen by each forward pass: two trajectories at a time, then the
  // third alone once the first two have finished (which still count).
  std::vector<int64_t> seen;
  gate.Open([&] { seen.push_back(run->model_evals()); });
  Collected c = Drain(*run);
  ASSERT_TRUE(c.status.ok()) << c.status;
  EXPECT_TRUE(Drain(*hold).status.ok());
  std::vector<int64_t> want = {0};  // the held pass, before the run joined
  for (int64_t e = 0; e < 40; e += 2) want.push_back(e);
  for (int64_t e = 40; e < 60; ++e) want.push_back(e);
  EXPECT_EQ(seen, want);
  int64_t finals_sum = 0;
  for (const RunEvent& e : c.events) {
    if (e.kind == RunEvent::Kind::kFinal) finals_sum += e.model_evals;
  }
  EXPECT_EQ(finals_sum, 60);
  EXPECT_EQ(run->model_evals(), finals_sum);
}

TEST_F(BatcherTest, AHugeStartLatentFailsItsOwnRunOnly) {
  // Finite, but a conv net's sums overflow on it and the output goes NaN: the
  // run must fail, not end OK with a NaN sample (a black image). A run that
  // shares its forward passes is unaffected.
  auto conv = DenoiserModel::Load(Fixtures() + "/tinyconv", {"cpu"});
  ASSERT_TRUE(conv.ok()) << conv.status();
  Gate gate;
  TrajectoryBatcher batcher(conv->get(), {}, &gate);
  std::shared_ptr<dgrid::Run> hold = HoldAtGate(batcher, gate);
  RunRequest huge = Request(2, 1.0f, 40);
  huge.start_step = 10;
  huge.trajectories[0].latent.assign(64, 0.5f);
  for (int j = 0; j < 64; ++j) huge.trajectories[1].latent.push_back(j % 2 ? 3e38f : -3e38f);
  RunRequest normal = Request(2, 1.0f, 50);
  std::shared_ptr<dgrid::Run> huge_run = *batcher.Start(huge);
  std::shared_ptr<dgrid::Run> normal_run = *batcher.Start(normal);
  gate.Open();
  Collected failed = Drain(*huge_run);
  Collected fine = Drain(*normal_run);
  EXPECT_TRUE(Drain(*hold).status.ok());
  EXPECT_EQ(failed.status.code(), absl::StatusCode::kInvalidArgument) << failed.status;
  EXPECT_NE(failed.status.message().find("trajectories[1].latent"), std::string::npos)
      << failed.status;
  EXPECT_NE(failed.status.message().find("non-finite"), std::string::npos) << failed.status;
  EXPECT_TRUE(failed.finals.empty());
  ASSERT_TRUE(fine.status.ok()) << fine.status;
  ASSERT_EQ(fine.finals.size(), 2u);
  for (const auto& [_, x] : fine.finals) {
    for (float v : x) ASSERT_TRUE(std::isfinite(v));
  }
  TrajectoryBatcher alone(conv->get(), {});
  EXPECT_EQ(fine.finals, RunAll(alone, normal).finals);
  EXPECT_EQ(batcher.outstanding(), 0);
}

TEST_F(BatcherTest, TheHeaderExampleDeliversEachEventOnce) {
  // Steps slower than the example's 50 ms poll, so Next also times out.
  TrajectoryBatcher slow(model_.get(), {.debug_step_delay = absl::Milliseconds(70)});
  RunRequest request = Request(2, 1.0f);
  request.sampler.steps = 3;
  request.capture_steps = {1};
  std::vector<RunEvent> consumed;
  auto consume = [&](const RunEvent& e) { consumed.push_back(e); };
  ASSERT_TRUE(Sample(slow, request, consume).ok());
  ASSERT_EQ(consumed.size(), 4u);  // two captures at step 1, two finals
  int64_t evals = 0;
  for (const RunEvent& e : consumed) {
    EXPECT_EQ(e.latent.size(), 16u);
    if (e.kind == RunEvent::Kind::kFinal) evals += e.model_evals;
  }
  EXPECT_EQ(evals, 6);

  // And on the header's own batcher.
  std::unique_ptr<DenoiserModel>& model = model_;
  TrajectoryBatcher batcher(model.get(), {.max_batch = 64, .max_queue = 1024});
  consumed.clear();
  ASSERT_TRUE(Sample(batcher, request, consume).ok());
  EXPECT_EQ(consumed.size(), 4u);
}

TEST(ExternalModelTest, PythonExportedModelAndDecoderLoadAndRun) {
  ASSERT_FALSE(Fixtures().empty());
  auto model = DenoiserModel::Load(Fixtures() + "/tinyconv", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->latent_numel(), 64);
  TrajectoryBatcher batcher(model->get(), {});
  RunRequest r;
  r.sampler = {10, 1.0f, Spacing::kTrailing, 2.0f};
  r.class_index = 1;
  r.trajectories = {{Path{3, {{0, 4}}}, {}}};
  auto run = batcher.Start(r);
  ASSERT_TRUE(run.ok());
  Collected c = Drain(**run);
  ASSERT_TRUE(c.status.ok()) << c.status;
  ASSERT_EQ(c.finals[0].size(), 64u);
  auto pixels = (*model)->Decode(c.finals[0], 1);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  EXPECT_EQ(pixels->size(), 16u * 16u);  // the decoder upsamples 8x8 to 16x16
}

// The decoder's batches: how many, and the largest.
class DecoderBatches : public BatcherObserver {
 public:
  void OnDecode(int images, absl::Duration) override {
    int seen = largest.load();
    while (images > seen && !largest.compare_exchange_weak(seen, images)) {
    }
    calls.fetch_add(1);
    this->images.fetch_add(images);
  }
  std::atomic<int> largest{0}, calls{0}, images{0};
};

// Decode requests used to run whole before every forward pass: 256 emoji
// latents held every grid on the replica for 11 s (issue 24). Now they run in
// chunks of at most 8 images, taking turns with the forward passes, and give
// the same pixels.
TEST(ExternalModelTest, ALargeDecodeRunsInChunksBesideTrajectories) {
  ASSERT_FALSE(Fixtures().empty());
  auto model = DenoiserModel::Load(Fixtures() + "/tinyconv", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  DecoderBatches chunks;
  TrajectoryBatcher batcher(model->get(), {}, &chunks);
  constexpr int kImages = 300;
  std::vector<float> latents(kImages * 64);
  FillGaussian({5, NoiseStream::kInitialLatent, 0}, absl::MakeSpan(latents));
  absl::StatusOr<std::vector<uint8_t>> decoded;
  std::thread decode([&] { decoded = batcher.Decode(latents, kImages); });
  RunRequest r;
  r.sampler = {20, 1.0f, Spacing::kTrailing, 2.0f};
  r.class_index = 1;
  r.trajectories = {{Path{3, {{0, 4}}}, {}}};
  auto run = batcher.Start(r);
  ASSERT_TRUE(run.ok());
  EXPECT_TRUE(Drain(**run).status.ok());
  decode.join();
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_LE(chunks.largest.load(), 8);
  EXPECT_GE(chunks.calls.load(), kImages / 8);
  auto whole = (*model)->Decode(latents, kImages);
  ASSERT_TRUE(whole.ok());
  ASSERT_EQ(decoded->size(), whole->size());
  int off_by_more_than_one = 0;  // a batch's size may change a conv's rounding
  for (size_t i = 0; i < whole->size(); ++i) {
    off_by_more_than_one += std::abs(int{(*decoded)[i]} - int{(*whole)[i]}) > 1;
  }
  EXPECT_EQ(off_by_more_than_one, 0);
  // A request of no images answers at once.
  auto none = batcher.Decode({}, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // A caller whose deadline passed, or who went away, gets no more turns
  // (a Decode call once ran to its end regardless).
  EXPECT_EQ(batcher.Decode(latents, kImages, absl::Now() - absl::Seconds(1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(
      batcher.Decode(latents, kImages, absl::InfiniteFuture(), [] { return true; }).status().code(),
      absl::StatusCode::kCancelled);
}

// A run's images used to be decoded in one unranked batch with every other
// run's (issue 24: 4 large grids' finals held a small grid for seconds).
// Now no decoder batch exceeds 32 images, and every run of two ranks still
// gets each image. (That the lowest rank's go first depends on which
// iteration each run ends in; bench/abuse_bench.py measures its effect.)
// n decoded trajectories of class 1 over `steps`, with guidance 2, under a
// fairness key and rank.
RunRequest RankedRun(int n, int steps, uint64_t key, uint64_t rank) {
  RunRequest r;
  r.sampler = {steps, 1.0f, Spacing::kTrailing, 2.0f};
  r.class_index = 1;
  r.decode = true;
  r.fairness_key = key;
  r.fairness_rank = rank;
  for (int i = 0; i < n; ++i) r.trajectories.push_back({Path{10u + i, {{0, 20u + i}}}, {}});
  return r;
}

TEST(ExternalModelTest, ImagesOfTwoRanksComeInBoundedBatches) {
  ASSERT_FALSE(Fixtures().empty());
  auto model = DenoiserModel::Load(Fixtures() + "/tinyconv", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  DecoderBatches batches;
  TrajectoryBatcher batcher(model->get(), {.max_batch = 256}, &batches);
  auto big = batcher.Start(RankedRun(100, 3, 1, 100000));
  auto small = batcher.Start(RankedRun(1, 3, 2, 3));
  ASSERT_TRUE(big.ok() && small.ok());
  Collected small_result = Drain(**small);
  Collected big_result = Drain(**big);
  ASSERT_TRUE(small_result.status.ok()) << small_result.status;
  ASSERT_TRUE(big_result.status.ok()) << big_result.status;
  EXPECT_LE(batches.largest.load(), 32);
  int big_images = 0;
  for (const RunEvent& e : big_result.events) big_images += !e.pixels.empty();
  EXPECT_EQ(big_images, 100);
  ASSERT_EQ(small_result.events.size(), 1u);
  EXPECT_EQ(small_result.events[0].pixels.size(), 16u * 16u);
}

// A run whose finals wait their decoder turn behind another's work is still
// stopped by its cancel: it ends CANCELLED, and its images are not decoded.
TEST(ExternalModelTest, ARunCancelledWhileItsImagesWaitEndsWithoutThem) {
  ASSERT_FALSE(Fixtures().empty());
  auto model = DenoiserModel::Load(Fixtures() + "/tinyconv", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  DecoderBatches batches;
  TrajectoryBatcher batcher(model->get(),
                            {.max_batch = 256, .debug_step_delay = absl::Milliseconds(20)},
                            &batches);
  // The head run keeps the batcher iterating (20 ms each) and owes images
  // at every step, so the big run's finals (2 images each) take 8-image
  // turns beside it: 4 an iteration, long after its 2 steps are done.
  RunRequest first = RankedRun(1, 300, 2, 3);
  for (int step = 0; step < 300; ++step) first.capture_steps.push_back(step);
  auto head = batcher.Start(first);
  auto big = batcher.Start(RankedRun(400, 2, 1, 100000));
  ASSERT_TRUE(head.ok() && big.ok());
  RunEvent event;
  int received = 0;
  while (received < 60) {  // 15 turns: its trajectories have all ended
    const Run::Wait w = (*big)->Next(absl::Seconds(30), &event);
    ASSERT_NE(w, Run::Wait::kDone) << (*big)->status();
    received += w == Run::Wait::kEvent;
  }
  (*big)->Cancel();
  Collected rest = Drain(**big);
  EXPECT_EQ(rest.status.code(), absl::StatusCode::kCancelled) << rest.status;
  EXPECT_LT(received + static_cast<int>(rest.events.size()), 400);
  (*head)->Cancel();
  Drain(**head);
  EXPECT_EQ(batcher.outstanding(), 0);
}

// A caller that branches from captures but shows only finals (decision
// curves) asks for decode_finals_only: its captures come undecoded, its
// finals decoded, and the decoder runs for the finals alone.
TEST(ExternalModelTest, DecodeFinalsOnlyLeavesCapturesUndecoded) {
  ASSERT_FALSE(Fixtures().empty());
  auto model = DenoiserModel::Load(Fixtures() + "/tinyconv", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  for (const bool finals_only : {false, true}) {
    SCOPED_TRACE(finals_only ? "finals only" : "every event");
    DecoderBatches batches;
    TrajectoryBatcher batcher(model->get(), {}, &batches);
    RunRequest r;
    r.sampler = {4, 1.0f, Spacing::kTrailing, 1.0f};
    r.class_index = 1;
    r.decode = true;
    r.decode_finals_only = finals_only;
    r.capture_steps = {0, 2};
    for (int i = 0; i < 3; ++i) r.trajectories.push_back({Path{10u + i, {{0, 20u + i}}}, {}});
    auto run = batcher.Start(r);
    ASSERT_TRUE(run.ok()) << run.status();
    Collected c = Drain(**run);
    ASSERT_TRUE(c.status.ok()) << c.status;
    int captures = 0, finals = 0;
    for (const RunEvent& e : c.events) {
      const bool final = e.kind == RunEvent::Kind::kFinal;
      (final ? finals : captures) += 1;
      EXPECT_EQ(e.pixels.empty(), !final && finals_only);
      EXPECT_FALSE(e.latent.empty());
    }
    EXPECT_EQ(captures, 6);
    EXPECT_EQ(finals, 3);
    EXPECT_EQ(batches.images.load(), finals_only ? 3 : 9);
  }
}

// Issue 25: trajectories of a text model switching to different prompts at
// different steps share every forward pass, and each distinct prompt is
// encoded once.
TEST(ExternalModelTest, SwitchingPromptsShareForwardPassesAndEncodeOnce) {
  ASSERT_FALSE(Fixtures().empty());
  auto model = DenoiserModel::Load(Fixtures() + "/textlatent", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  class Counts : public BatcherObserver {
   public:
    void OnForward(int trajectories, int, absl::Duration) override {
      ++passes;
      largest = std::max(largest, trajectories);
    }
    void OnTextContexts(int, int misses, absl::Duration) override { encoded += misses; }
    int passes = 0, largest = 0, encoded = 0;  // the batcher thread's only
  } counts;
  TrajectoryBatcher batcher(model->get(), {.max_batch = 64}, &counts);
  RunRequest r;
  r.sampler = {8, 1.0f, Spacing::kLeading, 3.0f};
  r.prompt = "a photo of a cat";
  for (int i = 0; i < 6; ++i) {
    const char* to = i % 2 ? "a red car" : "a dog";
    r.trajectories.push_back(
        {Path{1, {{0, 2}}}.BranchAt(1 + i, 3, SegmentConditioning{to, "", -1}), {}});
  }
  auto run = batcher.Start(r);
  ASSERT_TRUE(run.ok()) << run.status();
  const Collected together = Drain(**run);
  ASSERT_TRUE(together.status.ok()) << together.status;
  EXPECT_EQ(counts.passes, 8);  // one per step, all six in each
  EXPECT_EQ(counts.largest, 6);
  EXPECT_EQ(counts.encoded, 4);  // the cat, "", the car and the dog
  // Each as alone, and different from the unswitched trajectory.
  for (int i = 0; i < 6; ++i) {
    RunRequest alone = r;
    alone.trajectories = {r.trajectories[i]};
    auto one = batcher.Start(alone);
    ASSERT_TRUE(one.ok());
    const Collected c = Drain(**one);
    ASSERT_TRUE(c.status.ok()) << c.status;
    EXPECT_LE(MaxAbsDiff(c.finals.at(0), together.finals.at(i)), kBatchDrift) << i;
  }
  RunRequest plain = r;
  plain.trajectories = {{Path{1, {{0, 2}}}.BranchAt(1, 3), {}}};
  auto unswitched = batcher.Start(plain);
  ASSERT_TRUE(unswitched.ok());
  const float apart = MaxAbsDiff(Drain(**unswitched).finals.at(0), together.finals.at(0));
  std::cout << "switched and unswitched finals differ by up to " << apart << "\n";
  EXPECT_GT(apart, 100 * kBatchDrift);
}

// A call that leaves while it waits for the pass in progress is dropped
// before its admission: its prompt is encoded for no one (before, a
// text-encoder pass on the batcher's thread, and a cache miss counted).
TEST(ExternalModelTest, ACallThatLeftWhileQueuedIsNotEncodedFor) {
  ASSERT_FALSE(Fixtures().empty());
  auto model = DenoiserModel::Load(Fixtures() + "/textlatent", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  class Counts : public Gate {
   public:
    void OnTextContexts(int, int misses, absl::Duration) override { encoded += misses; }
    std::atomic<int> encoded{0};
  } counts;
  TrajectoryBatcher batcher(model->get(), {}, &counts);
  RunRequest r;
  r.sampler = {4, 0.0f, Spacing::kLeading, 1.0f};
  r.prompt = "a photo of a cat";
  r.trajectories = {{Path{1, {{0, 2}}}, {}}};
  auto held = batcher.Start(r);
  ASSERT_TRUE(held.ok()) << held.status();
  counts.AwaitEntered();  // the cat's first pass, its prompt encoded
  const int before = counts.encoded;
  EXPECT_GT(before, 0);
  r.prompt = "a red car";
  auto gone = batcher.Start(r);
  ASSERT_TRUE(gone.ok()) << gone.status();
  (*gone)->Cancel();
  counts.Open();
  EXPECT_EQ(Drain(**gone).status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(Drain(**held).status.ok());
  EXPECT_EQ(counts.encoded, before);
  EXPECT_EQ(batcher.outstanding(), 0);
}

// A bundle checked at batches up to 4 only (manifest max_batch) never gets
// a larger forward, encode or decode, whatever the batcher's own limit.
TEST(ExternalModelTest, TheBundlesMaxBatchBoundsEveryBatch) {
  ASSERT_FALSE(Fixtures().empty());
  const std::string dir = ::testing::TempDir() + "/max_batch_bundle";
  std::filesystem::remove_all(dir);
  std::filesystem::copy(Fixtures() + "/textlatent", dir);
  {
    std::ifstream in(dir + "/manifest.json");
    std::string manifest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t brace = manifest.rfind('}');
    ASSERT_NE(brace, std::string::npos);
    std::ofstream(dir + "/manifest.json")
        << manifest.substr(0, brace) << ", \"max_batch\": 4}" << manifest.substr(brace + 1);
  }
  auto model = DenoiserModel::Load(dir, {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->manifest().max_batch, 4);
  class Largest : public BatcherObserver {
   public:
    void OnForward(int, int rows, absl::Duration) override { rows_ = std::max(rows_, rows); }
    void OnDecode(int images, absl::Duration) override { images_ = std::max(images_, images); }
    int rows_ = 0, images_ = 0;  // the batcher thread's only
  } largest;
  TrajectoryBatcher batcher(model->get(), {.max_batch = 64}, &largest);
  RunRequest r;
  // Guidance 1: one row each, so four trajectories end together and owe
  // eight images (finals and x0 previews).
  r.sampler = {4, 1.0f, Spacing::kLeading, 1.0f};
  r.prompt = "a photo of a cat";
  r.decode = true;
  r.previews = true;
  for (int i = 0; i < 6; ++i) {
    // Seven prompts to encode (two batches) and six trajectories.
    const std::string to = absl::StrCat("a painting number ", i);
    r.trajectories.push_back(
        {Path{1, {{0, 2}}}.BranchAt(1, 3 + i, SegmentConditioning{to, "", -1}), {}});
  }
  auto run = batcher.Start(r);
  ASSERT_TRUE(run.ok()) << run.status();
  const Collected c = Drain(**run);
  ASSERT_TRUE(c.status.ok()) << c.status;
  EXPECT_EQ(c.finals.size(), 6u);
  EXPECT_EQ(largest.rows_, 4);
  EXPECT_EQ(largest.images_, 4);
  std::filesystem::remove_all(dir);
}

TEST(ExternalModelTest, MissingOrBrokenBundlesFailWithTheFileNamed) {
  auto missing = DenoiserModel::Load("/nonexistent", {"cpu"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(ExternalModelTest, AnErrorInsideTheScriptIsAStatusNotACrash) {
  // An id past the encoder's embedding table makes the TorchScript
  // interpreter throw std::runtime_error (not c10::Error); and ids that do
  // not fill batch x max_length are refused before torch reads them.
  auto model = DenoiserModel::Load(Fixtures() + "/textlatent", {"cpu"});
  ASSERT_TRUE(model.ok()) << model.status();
  const int length = (*model)->context_length();
  std::vector<float> context((*model)->encoding_size());
  std::vector<int64_t> ids(length, int64_t{1} << 40);
  absl::Status status = (*model)->EncodeText(ids, 1, absl::MakeSpan(context));
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("text encoder: "), std::string::npos) << status;
  EXPECT_LE(status.message().size(), 320u) << status;
  ids.resize(2, 0);
  status = (*model)->EncodeText(ids, 1, absl::MakeSpan(context));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

}  // namespace
}  // namespace dgrid
