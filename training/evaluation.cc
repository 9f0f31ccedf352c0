#include "evaluation.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/png_image.h"
#include "common/status_macros.h"
#include "denoiser_service/engine/ddim_schedule.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/engine/trajectory_batcher.h"
#include "frechet.h"
#include "idx_reader.h"
#include "sample_classifier.h"

namespace dgrid::training {

const GuidanceEval& EvalResult::at_default() const {
  for (const GuidanceEval& g : by_guidance) {
    if (g.guidance == default_guidance) return g;
  }
  return by_guidance.front();  // RunEvaluation always adds the default
}

namespace {

// Disjoint seed ranges per use, so that no two trajectories of one
// evaluation share noise unless they are meant to (a branch's prefix).
enum class SeedUse : uint64_t { kSampleInit, kSampleNoise, kTrunkInit, kTrunkNoise, kBranch };

uint64_t SeedFor(uint64_t seed, SeedUse use, uint64_t index) {
  return (seed << 40) | (static_cast<uint64_t>(use) << 32) | (index & 0xffffffffu);
}

// A progress line on stderr at most every 10 s, and at the end of a phase.
class Progress {
 public:
  Progress(std::string phase, int64_t total)
      : phase_(std::move(phase)), total_(total), start_(absl::Now()), last_(start_) {}

  void Add(int64_t n) {
    done_ += n;
    const absl::Time now = absl::Now();
    if (done_ < total_ && now - last_ < absl::Seconds(10)) return;
    last_ = now;
    const double elapsed = absl::ToDoubleSeconds(now - start_);
    const double eta = done_ > 0 ? elapsed * (total_ - done_) / done_ : 0;
    std::cerr << absl::StrFormat("[dgrid-eval] %-28s %6d/%-6d %5.1f%%  %6.0f s  eta %4.0f s\n",
                                 phase_, done_, total_, 100.0 * done_ / total_, elapsed, eta);
  }

 private:
  std::string phase_;
  int64_t total_;
  int64_t done_ = 0;
  absl::Time start_, last_;
};

// Delivers every event of `run` to `on_event`; counts finals as progress.
absl::Status Drain(Run& run, Progress& progress, const std::function<void(RunEvent&)>& on_event) {
  while (true) {
    RunEvent event;
    const Run::Wait wait = run.Next(absl::Seconds(1), &event);
    if (wait == Run::Wait::kDone) return run.status();
    if (wait == Run::Wait::kTimeout) continue;
    if (event.kind == RunEvent::Kind::kFinal) progress.Add(1);
    on_event(event);
  }
}

int Rows(const SamplerSettings& s, bool conditional) {
  return conditional && s.guidance != 0.0f && s.guidance != 1.0f ? 2 : 1;
}

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "unknown";
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

double EntropyBits(const std::vector<int>& histogram) {
  double total = 0, h = 0;
  for (int c : histogram) total += c;
  for (int c : histogram) {
    if (c > 0) h -= c / total * std::log2(c / total);
  }
  return h;
}

// The pieces every phase needs.
struct Context {
  const EvalOptions& options;
  DenoiserModel& model;
  TrajectoryBatcher& batcher;
  SampleClassifier& classifier;
  int num_classes;
  int height, width;
  int64_t latent_numel;
  SamplerSettings sampler;  // the bundle's defaults, at options.steps
  FeatureMoments test_moments;
};

// The engine's decoder gives the 8-bit images a user sees; the classifier
// scores those, as it scores the dataset's. `pixels`, if given, keeps them.
absl::StatusOr<Classified> DecodeAndClassify(Context& ctx, const std::vector<float>& latents,
                                             std::vector<uint8_t>* pixels_out = nullptr) {
  const int64_t n = static_cast<int64_t>(latents.size()) / ctx.latent_numel;
  ASSIGN_OR_RETURN(std::vector<uint8_t> pixels, ctx.model.Decode(latents, static_cast<int>(n)));
  ASSIGN_OR_RETURN(Classified c, ctx.classifier.Classify(pixels, n, ctx.height, ctx.width));
  for (int label : c.labels) {
    if (label < 0 || label >= ctx.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "classifier predicts class ", label, " of a model with ", ctx.num_classes, " classes"));
    }
  }
  if (pixels_out) *pixels_out = std::move(pixels);
  return c;
}

// Rows: classes; columns: a class's first samples; 3x nearest-neighbour so
// that 28-pixel items are visible in a README.
absl::Status WriteSampleGrid(const Context& ctx, const std::vector<uint8_t>& pixels,
                             const std::string& path) {
  constexpr int kScale = 3, kGap = 2, kColumns = 10;
  const int per_class = ctx.options.per_class;
  const int cols = std::min(per_class, kColumns), rows = ctx.num_classes;
  const int cell_w = ctx.width * kScale + kGap, cell_h = ctx.height * kScale + kGap;
  const int w = cols * cell_w + kGap, h = rows * cell_h + kGap;
  std::vector<uint8_t> grid(static_cast<size_t>(w) * h, 255);
  for (int c = 0; c < rows; ++c) {
    for (int i = 0; i < cols; ++i) {
      const uint8_t* img =
          pixels.data() + (static_cast<int64_t>(c) * per_class + i) * ctx.width * ctx.height;
      for (int y = 0; y < ctx.height * kScale; ++y) {
        for (int x = 0; x < ctx.width * kScale; ++x) {
          grid[static_cast<size_t>(kGap + c * cell_h + y) * w + kGap + i * cell_w + x] =
              img[(y / kScale) * ctx.width + x / kScale];
        }
      }
    }
  }
  ASSIGN_OR_RETURN(std::string png, EncodePng(grid, w, h, 1));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << png;
  if (!out.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// per_class samples of every class at guidance g; the same seeds at every g.
absl::StatusOr<GuidanceEval> EvaluateGuidance(Context& ctx, float g) {
  const absl::Time start = absl::Now();
  const int per_class = ctx.options.per_class;
  const int k = ctx.num_classes;
  SamplerSettings sampler = ctx.sampler;
  sampler.guidance = g;

  // One run per class (a run has one conditioning); the batcher interleaves
  // them, oldest first.
  std::vector<std::shared_ptr<Run>> runs;
  for (int c = 0; c < k; ++c) {
    RunRequest request;
    request.sampler = sampler;
    request.class_index = c;
    for (int i = 0; i < per_class; ++i) {
      const uint64_t index = static_cast<uint64_t>(c) * per_class + i;
      request.trajectories.push_back(
          {Path{SeedFor(ctx.options.seed, SeedUse::kSampleInit, index),
                {{0, SeedFor(ctx.options.seed, SeedUse::kSampleNoise, index)}}},
           {}});
    }
    ASSIGN_OR_RETURN(std::shared_ptr<Run> run, ctx.batcher.Start(std::move(request)));
    runs.push_back(std::move(run));
  }
  GuidanceEval out;
  out.guidance = g;
  out.samples = per_class * k;
  out.label_used = g != 0.0f;
  Progress progress(absl::StrFormat("guidance %g", g), out.samples);
  std::vector<float> latents(static_cast<size_t>(out.samples) * ctx.latent_numel);
  int64_t evals = 0;
  for (int c = 0; c < k; ++c) {
    RETURN_IF_ERROR(Drain(*runs[c], progress, [&](RunEvent& e) {
      if (e.kind != RunEvent::Kind::kFinal) return;
      std::copy(e.latent.begin(), e.latent.end(),
                latents.begin() +
                    (static_cast<int64_t>(c) * per_class + e.trajectory) * ctx.latent_numel);
      evals += e.model_evals;
    }));
  }
  out.image_forwards = evals * Rows(sampler, true);

  std::vector<uint8_t> pixels;
  ASSIGN_OR_RETURN(Classified classified, DecodeAndClassify(ctx, latents, &pixels));
  out.predicted_histogram.assign(k, 0);
  out.per_class_accuracy.assign(k, 0);
  int correct = 0;
  for (int c = 0; c < k; ++c) {
    int class_correct = 0;
    for (int i = 0; i < per_class; ++i) {
      const int label = classified.labels[c * per_class + i];
      ++out.predicted_histogram[label];
      class_correct += label == c;
    }
    out.per_class_accuracy[c] = static_cast<double>(class_correct) / per_class;
    correct += class_correct;
  }
  out.accuracy = static_cast<double>(correct) / out.samples;
  if (g == ctx.sampler.guidance && !ctx.options.samples_png.empty()) {
    RETURN_IF_ERROR(WriteSampleGrid(ctx, pixels, ctx.options.samples_png));
  }
  out.predicted_entropy_bits = EntropyBits(out.predicted_histogram);
  ASSIGN_OR_RETURN(FeatureMoments moments,
                   ComputeMoments(classified.features, classified.feature_dim));
  ASSIGN_OR_RETURN(out.frechet_distance, FrechetDistance(moments, ctx.test_moments));
  out.seconds = Seconds(start);
  std::cerr << absl::StrFormat(
      "[dgrid-eval] guidance %g: accuracy %.3f%s, Fréchet distance %.2f, %.0f s\n", g, out.accuracy,
      out.label_used ? "" : " (label unused: chance level)", out.frechet_distance, out.seconds);
  return out;
}

// Summarises one branch step from per-trunk fractions of changed branches.
SpeciationPoint Summarise(const std::vector<double>& fraction, std::mt19937_64& rng) {
  SpeciationPoint p;
  const int n = static_cast<int>(fraction.size());
  double sum = 0, sq = 0;
  for (double f : fraction) sum += f;
  p.p_change = sum / n;
  for (double f : fraction) sq += (f - p.p_change) * (f - p.p_change);
  p.standard_error = n > 1 ? std::sqrt(sq / (n - 1) / n) : 0;
  constexpr int kResamples = 2000;
  std::vector<double> means(kResamples);
  std::uniform_int_distribution<int> pick(0, n - 1);
  for (double& m : means) {
    double s = 0;
    for (int i = 0; i < n; ++i) s += fraction[pick(rng)];
    m = s / n;
  }
  std::sort(means.begin(), means.end());
  p.ci95_lo = means[static_cast<size_t>(0.025 * (kResamples - 1))];
  p.ci95_hi = means[static_cast<size_t>(0.975 * (kResamples - 1))];
  return p;
}

absl::StatusOr<SpeciationEval> EvaluateSpeciation(Context& ctx) {
  const absl::Time start = absl::Now();
  const EvalOptions& o = ctx.options;
  SamplerSettings sampler = ctx.sampler;
  sampler.guidance = 0.0f;  // unconditional: the model picks the class itself
  const int steps = sampler.steps;
  std::vector<int> branch_steps;
  for (int k = 0; k < steps; k += o.branch_every) branch_steps.push_back(k);
  const int num_k = static_cast<int>(branch_steps.size());
  ASSIGN_OR_RETURN(DdimSchedule schedule,
                   DdimSchedule::Create(ctx.model.manifest().schedule, steps, sampler.spacing));

  SpeciationEval out;
  out.trunks = o.trunks;
  out.branches = o.branches;
  out.steps = steps;

  // Trunks, capturing their latents at every branch step.
  RunRequest trunk_request;
  trunk_request.sampler = sampler;
  trunk_request.capture_steps = branch_steps;
  std::vector<Path> trunk_paths;
  for (int t = 0; t < o.trunks; ++t) {
    trunk_paths.push_back(Path{SeedFor(o.seed, SeedUse::kTrunkInit, t),
                               {{0, SeedFor(o.seed, SeedUse::kTrunkNoise, t)}}});
    trunk_request.trajectories.push_back({trunk_paths.back(), {}});
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Run> trunk_run, ctx.batcher.Start(std::move(trunk_request)));
  std::vector<std::vector<std::vector<float>>> captured(o.trunks,
                                                        std::vector<std::vector<float>>(num_k));
  std::vector<float> trunk_finals(static_cast<size_t>(o.trunks) * ctx.latent_numel);
  int64_t evals = 0;
  {
    Progress progress("speciation trunks", o.trunks);
    RETURN_IF_ERROR(Drain(*trunk_run, progress, [&](RunEvent& e) {
      if (e.kind == RunEvent::Kind::kCapture) {
        captured[e.trajectory][e.step / o.branch_every] = std::move(e.latent);
      } else {
        std::copy(e.latent.begin(), e.latent.end(),
                  trunk_finals.begin() + e.trajectory * ctx.latent_numel);
        evals += e.model_evals;
      }
    }));
  }
  ASSIGN_OR_RETURN(Classified trunk_classes, DecodeAndClassify(ctx, trunk_finals));

  // Branches: all of them share the trunk's prefix (path and captured
  // latent) and continue with their own noise from step k.
  std::vector<std::shared_ptr<Run>> runs;
  for (int ki = 0; ki < num_k; ++ki) {
    const int k = branch_steps[ki];
    RunRequest request;
    request.sampler = sampler;
    request.start_step = k;
    for (int t = 0; t < o.trunks; ++t) {
      if (captured[t][ki].empty()) {
        return absl::InternalError(absl::StrCat("trunk ", t, " has no capture at step ", k));
      }
      for (int b = 0; b < o.branches; ++b) {
        const uint64_t index = (static_cast<uint64_t>(t) * num_k + ki) * o.branches + b;
        request.trajectories.push_back(
            {trunk_paths[t].BranchAt(k, SeedFor(o.seed, SeedUse::kBranch, index)),
             captured[t][ki]});
      }
    }
    ASSIGN_OR_RETURN(std::shared_ptr<Run> run, ctx.batcher.Start(std::move(request)));
    runs.push_back(std::move(run));
  }
  const int per_k = o.trunks * o.branches;
  std::vector<float> branch_finals(static_cast<size_t>(num_k) * per_k * ctx.latent_numel);
  {
    Progress progress(absl::StrFormat("speciation branches (%d k)", num_k), num_k * per_k);
    for (int ki = 0; ki < num_k; ++ki) {
      RETURN_IF_ERROR(Drain(*runs[ki], progress, [&](RunEvent& e) {
        if (e.kind != RunEvent::Kind::kFinal) return;
        std::copy(e.latent.begin(), e.latent.end(),
                  branch_finals.begin() +
                      (static_cast<int64_t>(ki) * per_k + e.trajectory) * ctx.latent_numel);
        evals += e.model_evals;
      }));
    }
  }
  out.image_forwards = evals;  // unconditional: one row per step
  ASSIGN_OR_RETURN(Classified branch_classes, DecodeAndClassify(ctx, branch_finals));

  out.trunk_histogram.assign(ctx.num_classes, 0);
  for (int label : trunk_classes.labels) ++out.trunk_histogram[label];
  double collide = 0;
  for (int c : out.trunk_histogram) collide += static_cast<double>(c) * c;
  out.p_change_independent = 1 - collide / (static_cast<double>(o.trunks) * o.trunks);

  std::mt19937_64 rng(o.seed);
  for (int ki = 0; ki < num_k; ++ki) {
    std::vector<double> fraction(o.trunks);
    for (int t = 0; t < o.trunks; ++t) {
      int changed = 0;
      for (int b = 0; b < o.branches; ++b) {
        changed +=
            branch_classes.labels[ki * per_k + t * o.branches + b] != trunk_classes.labels[t];
      }
      fraction[t] = static_cast<double>(changed) / o.branches;
    }
    SpeciationPoint p = Summarise(fraction, rng);
    p.step = branch_steps[ki];
    p.timestep = schedule.timestep(p.step);
    p.pairs = per_k;
    out.points.push_back(p);
    std::cerr << absl::StrFormat(
        "[dgrid-eval] branch at step %2d (t=%3d): P(class changes) %.3f ± %.3f\n", p.step,
        p.timestep, p.p_change, p.standard_error);
  }
  // Where the curve falls to half its start.
  const double half = out.points.front().p_change / 2;
  for (size_t i = 1; i < out.points.size() && half > 0; ++i) {
    const SpeciationPoint& a = out.points[i - 1];
    const SpeciationPoint& b = out.points[i];
    if (b.p_change <= half) {
      const double frac =
          a.p_change > b.p_change ? (a.p_change - half) / (a.p_change - b.p_change) : 0.0;
      out.half_step = a.step + frac * (b.step - a.step);
      break;
    }
  }
  out.seconds = Seconds(start);
  return out;
}

absl::Status Validate(const EvalOptions& o) {
  if (o.bundle_dir.empty()) return absl::InvalidArgumentError("--bundle is required");
  if (o.per_class < 2) return absl::InvalidArgumentError("--per_class must be at least 2");
  if (o.trunks < 2) return absl::InvalidArgumentError("--trunks must be at least 2");
  if (o.branches < 1) return absl::InvalidArgumentError("--branches must be at least 1");
  if (o.branch_every < 1) return absl::InvalidArgumentError("--branch_every must be >= 1");
  if (o.steps < 0) return absl::InvalidArgumentError("--steps must be >= 0");
  if (o.max_batch < 2) return absl::InvalidArgumentError("--max_batch must be at least 2");
  if (o.real_images < 0) return absl::InvalidArgumentError("--real_images must be >= 0");
  for (float g : o.guidance) {
    if (!(g >= 0)) return absl::InvalidArgumentError("--guidance scales must be >= 0");
  }
  return absl::OkStatus();
}

// `count` images of `split`, evenly spaced through it.
std::vector<uint8_t> Strided(const IdxImages& images, int64_t count) {
  const int64_t numel = images.rows * images.cols;
  const int64_t stride = std::max<int64_t>(1, images.count / count);
  std::vector<uint8_t> out;
  out.reserve(count * numel);
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* p = images.pixels.data() + (i * stride) * numel;
    out.insert(out.end(), p, p + numel);
  }
  return out;
}

}  // namespace

absl::StatusOr<EvalResult> RunEvaluation(const EvalOptions& options) {
  RETURN_IF_ERROR(Validate(options));
  const absl::Time start = absl::Now();
  EvalResult r;
  r.bundle_dir = options.bundle_dir;
  r.torch_threads = SetTorchThreads(options.threads);
  ASSIGN_OR_RETURN(std::unique_ptr<DenoiserModel> model,
                   DenoiserModel::Load(options.bundle_dir, {"cpu"}));
  const BundleManifest& m = model->manifest();
  if (m.class_labels.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.bundle_dir, ": the model is not class-conditional"));
  }
  if (m.image_shape.size() != 3 || m.image_shape[2] != 1) {
    return absl::FailedPreconditionError("the classifier scores 1-channel images only");
  }
  r.model_name = m.name;
  r.class_labels = m.class_labels;
  r.classifier_path =
      options.bundle_dir + "/" + (m.classifier.empty() ? "classifier.pt" : m.classifier);
  ASSIGN_OR_RETURN(std::unique_ptr<SampleClassifier> classifier,
                   SampleClassifier::Load(r.classifier_path));

  TrajectoryBatcher batcher(model.get(), {.max_batch = options.max_batch, .max_queue = 1 << 22});
  Context ctx{options,
              *model,
              batcher,
              *classifier,
              static_cast<int>(m.class_labels.size()),
              static_cast<int>(m.image_shape[0]),
              static_cast<int>(m.image_shape[1]),
              m.LatentNumel(),
              {options.steps > 0 ? options.steps : m.defaults.steps, m.defaults.eta,
               m.defaults.spacing, m.defaults.guidance},
              {}};
  r.steps = ctx.sampler.steps;
  r.eta = ctx.sampler.eta;
  r.spacing = ctx.sampler.spacing == Spacing::kLeading ? "leading" : "trailing";
  r.default_guidance = m.defaults.guidance;
  r.host = HostName();
  r.cpu = CpuModel();
  r.logical_cores = static_cast<int>(std::thread::hardware_concurrency());
  r.device = model->device();
  r.max_batch = options.max_batch;

  // Real images: the test split is the reference; train images give the
  // real-vs-real floor.
  {
    const absl::Time real_start = absl::Now();
    std::cerr << "[dgrid-eval] classifying real images from " << options.data_dir << "\n";
    ASSIGN_OR_RETURN(LabeledImages test, ReadSplit(options.data_dir, "t10k", ctx.num_classes));
    ASSIGN_OR_RETURN(LabeledImages train, ReadSplit(options.data_dir, "train", ctx.num_classes));
    if (test.images.rows != ctx.height || test.images.cols != ctx.width) {
      return absl::FailedPreconditionError(absl::StrCat("dataset images are ", test.images.rows,
                                                        "x", test.images.cols, ", the model's ",
                                                        ctx.height, "x", ctx.width));
    }
    r.test_images = options.real_images > 0
                        ? std::min<int64_t>(options.real_images, test.images.count)
                        : test.images.count;
    const int64_t numel = test.images.rows * test.images.cols;
    const std::vector<uint8_t> test_pixels(test.images.pixels.begin(),
                                           test.images.pixels.begin() + r.test_images * numel);
    ASSIGN_OR_RETURN(Classified test_c,
                     classifier->Classify(test_pixels, r.test_images, ctx.height, ctx.width));
    int correct = 0;
    for (int64_t i = 0; i < r.test_images; ++i) correct += test_c.labels[i] == test.labels[i];
    r.classifier_test_accuracy = static_cast<double>(correct) / r.test_images;
    r.feature_dim = test_c.feature_dim;
    ASSIGN_OR_RETURN(ctx.test_moments, ComputeMoments(test_c.features, test_c.feature_dim));

    r.floor_train_images = std::min<int64_t>(r.test_images, train.images.count);
    ASSIGN_OR_RETURN(Classified floor_c,
                     classifier->Classify(Strided(train.images, r.floor_train_images),
                                          r.floor_train_images, ctx.height, ctx.width));
    ASSIGN_OR_RETURN(FeatureMoments floor_m, ComputeMoments(floor_c.features, r.feature_dim));
    ASSIGN_OR_RETURN(r.floor_frechet, FrechetDistance(floor_m, ctx.test_moments));

    r.matched_floor_train_images = std::min<int64_t>(
        static_cast<int64_t>(options.per_class) * ctx.num_classes, train.images.count);
    ASSIGN_OR_RETURN(Classified matched_c,
                     classifier->Classify(Strided(train.images, r.matched_floor_train_images),
                                          r.matched_floor_train_images, ctx.height, ctx.width));
    ASSIGN_OR_RETURN(FeatureMoments matched_m, ComputeMoments(matched_c.features, r.feature_dim));
    ASSIGN_OR_RETURN(r.matched_floor_frechet, FrechetDistance(matched_m, ctx.test_moments));
    r.real_seconds = Seconds(real_start);
    std::cerr << absl::StrFormat(
        "[dgrid-eval] classifier test accuracy %.4f; real-vs-real Fréchet distance %.2f "
        "(%d train images), %.2f (%d), %.0f s\n",
        r.classifier_test_accuracy, r.floor_frechet, r.floor_train_images, r.matched_floor_frechet,
        r.matched_floor_train_images, r.real_seconds);
  }

  std::vector<float> scales = options.guidance;
  scales.push_back(m.defaults.guidance);
  std::sort(scales.begin(), scales.end());
  scales.erase(std::unique(scales.begin(), scales.end()), scales.end());
  for (float g : scales) {
    ASSIGN_OR_RETURN(GuidanceEval e, EvaluateGuidance(ctx, g));
    r.image_forwards += e.image_forwards;
    r.by_guidance.push_back(std::move(e));
  }
  ASSIGN_OR_RETURN(r.speciation, EvaluateSpeciation(ctx));
  r.image_forwards += r.speciation.image_forwards;
  r.total_seconds = Seconds(start);
  return r;
}

}  // namespace dgrid::training
