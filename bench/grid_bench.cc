// dgrid-bench grid: the same grid (default and classic presets, same model,
// this machine, one run) through every variant, one JSON line each:
//
//   limit              model evaluations / the engine's best raw forward rate
//   inprocess          the engine runs the plan as a wavefront, no RPC
//   pair_1, pair_2     the full pair over gRPC on loopback, 1 or 2 replicas
//   seed_style         the original app: trunk, then each branch alone at
//                      batch 1, shared prefix reused
//   from_scratch       every cell its own trajectory from step 0
//   python_seed_style  bench/baselines/grid_baseline.py, the seed's algorithm
//   python_batched     the same script, each row's branches batched
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_json.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/engine/trajectory_batcher.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grid_orchestrator/plan/grid_plan.h"
#include "tests/support/stack.h"

ABSL_FLAG(int, runs, 5, "dgrid-bench grid: timed runs per variant (median reported).");
ABSL_FLAG(std::vector<std::string>, grids, std::vector<std::string>({"default", "classic"}),
          "dgrid-bench grid: presets to run.");
ABSL_FLAG(std::vector<std::string>, variants,
          std::vector<std::string>({"limit", "inprocess", "pair_1", "pair_2", "seed_style",
                                    "from_scratch", "python_seed_style", "python_batched"}),
          "dgrid-bench grid: variants to run.");
ABSL_FLAG(std::string, grid_prompt, "sneaker", "dgrid-bench grid: prompt ('' = unconditional).");
ABSL_FLAG(int, grid_steps, 0, "dgrid-bench grid: override the preset's steps (0 = keep).");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "Python with Debian's python3-torch.");

namespace dgrid {

std::string GridBenchModelDir();
int GridBenchThreads();

namespace {

struct Timing {
  std::vector<double> walls;
  int64_t model_evals = 0;
  double Median() const {
    std::vector<double> v = walls;
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
  }
  double Min() const { return walls.empty() ? 0 : *std::min_element(walls.begin(), walls.end()); }
  double Max() const { return walls.empty() ? 0 : *std::max_element(walls.begin(), walls.end()); }
};

v1::ModelInfo InfoFor(const BundleManifest& m) {
  v1::ModelInfo info;
  info.set_name(m.name);
  for (const std::string& p : m.class_labels) info.add_prompts(p);
  info.set_train_timesteps(m.schedule.train_timesteps);
  info.set_steps_offset(m.schedule.steps_offset);
  info.mutable_defaults()->set_steps(m.defaults.steps);
  info.mutable_defaults()->set_eta(m.defaults.eta);
  info.mutable_defaults()->set_guidance(m.defaults.guidance);
  info.mutable_defaults()->set_spacing(m.defaults.spacing == Spacing::kLeading
                                           ? v1::SPACING_LEADING
                                           : v1::SPACING_TRAILING);
  return info;
}

v1::GridRequest RequestFor(const std::string& preset, uint64_t seed) {
  v1::GridRequest r;
  r.set_preset(preset);
  r.set_seed(seed);
  r.set_prompt(absl::GetFlag(FLAGS_grid_prompt));
  if (absl::GetFlag(FLAGS_grid_steps) > 0) r.mutable_steps()->set_value(absl::GetFlag(FLAGS_grid_steps));
  return r;
}

int RowsPerEval(const GridPlanSpec& plan) {
  return plan.class_index >= 0 && plan.guidance != 0.0f && plan.guidance != 1.0f ? 2 : 1;
}

RunRequest EngineRequest(const GridPlanSpec& plan) {
  RunRequest r;
  r.sampler = {plan.steps, plan.eta, plan.spacing, plan.guidance};
  r.class_index = plan.class_index;
  return r;
}

// Runs a request to the end; returns the finals by trajectory and the captures by step.
struct Drained {
  std::map<int, std::vector<float>> captures;
  int64_t evals = 0;
};
Drained Drain(Run& run, const std::function<void(const RunEvent&)>& on_event = nullptr) {
  Drained d;
  RunEvent e;
  while (run.Next(absl::Seconds(600), &e) != Run::Wait::kDone) {
    if (on_event) on_event(e);
    if (e.kind == RunEvent::Kind::kCapture) d.captures[e.step] = e.latent;
    if (e.kind == RunEvent::Kind::kFinal) d.evals += e.model_evals;
  }
  return d;
}

// The plan's wavefront on the engine alone: rows start as the trunk's
// captures arrive, every run shares the batcher.
int64_t RunInProcess(TrajectoryBatcher& batcher, const GridPlanSpec& plan) {
  RunRequest trunk = EngineRequest(plan);
  trunk.trajectories = {{plan.trunk, {}}};
  trunk.capture_steps = plan.trunk_captures;
  std::vector<std::shared_ptr<Run>> rows;
  auto start_row = [&](const PlannedRow& row, const std::vector<float>& latent) {
    RunRequest r = EngineRequest(plan);
    r.start_step = row.branch_step;
    for (const Path& cell : row.cells) r.trajectories.push_back({cell, latent});
    rows.push_back(*batcher.Start(std::move(r)));
  };
  for (const PlannedRow& row : plan.rows) {
    if (row.branch_step == 0) start_row(row, {});
  }
  auto trunk_run = *batcher.Start(std::move(trunk));
  int64_t evals = Drain(*trunk_run, [&](const RunEvent& e) {
                    if (e.kind != RunEvent::Kind::kCapture) return;
                    // Rows at step 0 left already: they need no capture.
                    for (const PlannedRow& row : plan.rows) {
                      if (row.branch_step == e.step && e.step > 0) start_row(row, e.latent);
                    }
                  }).evals;
  for (auto& r : rows) evals += Drain(*r).evals;
  return evals;
}

// The original app: the trunk, then every branch on its own at batch 1.
int64_t RunSeedStyle(TrajectoryBatcher& batcher, const GridPlanSpec& plan) {
  RunRequest trunk = EngineRequest(plan);
  trunk.trajectories = {{plan.trunk, {}}};
  for (const PlannedRow& row : plan.rows) {
    if (row.branch_step > 0) trunk.capture_steps.push_back(row.branch_step);
  }
  Drained t = Drain(**batcher.Start(std::move(trunk)));
  int64_t evals = t.evals;
  for (const PlannedRow& row : plan.rows) {
    for (const Path& cell : row.cells) {
      RunRequest r = EngineRequest(plan);
      r.start_step = row.branch_step;
      r.trajectories = {{cell, row.branch_step > 0 ? t.captures[row.branch_step]
                                                   : std::vector<float>()}};
      evals += Drain(**batcher.Start(std::move(r))).evals;
    }
  }
  return evals;
}

// No branching: every cell and the trunk from step 0, batched.
int64_t RunFromScratch(TrajectoryBatcher& batcher, const GridPlanSpec& plan) {
  RunRequest r = EngineRequest(plan);
  r.trajectories.push_back({plan.trunk, {}});
  for (const PlannedRow& row : plan.rows) {
    for (const Path& cell : row.cells) r.trajectories.push_back({cell, {}});
  }
  return Drain(**batcher.Start(std::move(r))).evals;
}

// The best of three rounds at each batch size: the machine is shared and
// noisy, and the limit should be the hardware's, not a bad moment's. Small
// batches are in the sweep: here the best rate can come at a batch whose
// activations stay in the per-core cache.
double BestRawImagesPerSecond(DenoiserModel& model) {
  double best = 0;
  const int64_t numel = model.latent_numel();
  for (int round = 0; round < 3; ++round)
  for (int batch : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
    std::vector<float> x(batch * numel, 0.1f), out(batch * numel);
    std::vector<int64_t> t(batch, 500), cond(batch, model.manifest().null_label);
    double ips = 0;
    std::thread([&] {
      for (int i = 0; i < 2; ++i) (void)model.Forward(x, t, cond, batch, absl::MakeSpan(out));
      int64_t images = 0;
      const absl::Time start = absl::Now();
      while (absl::Now() - start < absl::Seconds(1) || images < 4 * batch) {
        (void)model.Forward(x, t, cond, batch, absl::MakeSpan(out));
        images += batch;
      }
      ips = images / absl::ToDoubleSeconds(absl::Now() - start);
    }).join();
    std::cerr << "limit: round " << round << " batch " << batch << ": " << ips << " images/s\n";
    best = std::max(best, ips);
  }
  return best;
}

Timing TimePair(int replicas, const std::string& preset, int runs) {
  testing::StackOptions options;
  options.model_dir = GridBenchModelDir();
  options.denoisers = replicas;
  // The whole machine's threads, split evenly between the replicas.
  options.denoiser_threads = std::max(1, GridBenchThreads() / replicas);
  options.orchestrator_flags = {"--cache_mb=0", "--cells_per_job=2"};
  Timing timing;
  auto stack = testing::Stack::Start(options, absl::StrCat("bench-pair-", replicas));
  if (!stack.ok()) {
    std::cerr << "dgrid-bench grid: " << stack.status() << "\n";
    return timing;
  }
  auto stub = (*stack)->Orchestrator();
  for (int i = -1; i < runs; ++i) {  // run -1 warms up
    grpc::ClientContext context;
    v1::Grid grid;
    const absl::Time start = absl::Now();
    const grpc::Status status = stub->CreateGrid(&context, RequestFor(preset, 100 + i), &grid);
    if (!status.ok()) {
      std::cerr << "dgrid-bench grid: pair_" << replicas << ": " << status.error_message() << "\n";
      return timing;
    }
    if (i >= 0) timing.walls.push_back(absl::ToDoubleSeconds(absl::Now() - start));
    timing.model_evals = grid.model_evals();
  }
  return timing;
}

Timing TimePython(const std::string& mode, const GridPlanSpec& plan, int runs) {
  Timing timing;
  std::vector<std::string> rows;
  for (const PlannedRow& row : plan.rows) rows.push_back(std::to_string(row.branch_step));
  const std::string command = absl::StrCat(
      absl::GetFlag(FLAGS_python), " ", DGRID_SOURCE_DIR, "/bench/baselines/grid_baseline.py",
      " --bundle ", GridBenchModelDir(), " --mode ", mode, " --steps ", plan.steps, " --eta ",
      plan.eta, " --guidance ", plan.guidance, " --class_index ", plan.class_index,
      " --branch_steps ", absl::StrJoin(rows, ","), " --branches ", plan.branches, " --runs ",
      runs, " --threads ", GridBenchThreads());
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return timing;
  char buffer[4096];
  std::string out;
  while (fgets(buffer, sizeof(buffer), pipe)) out += buffer;
  if (pclose(pipe) != 0) {
    std::cerr << "dgrid-bench grid: " << mode << " baseline failed:\n" << out;
    return timing;
  }
  // Last line: {"walls": [...], "model_evals": N}
  google::protobuf::Struct result;
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  if (lines.empty() ||
      !google::protobuf::util::JsonStringToMessage(lines.back(), &result).ok()) {
    std::cerr << "dgrid-bench grid: unreadable baseline output:\n" << out;
    return timing;
  }
  for (const auto& v : result.fields().at("walls").list_value().values()) {
    timing.walls.push_back(v.number_value());
  }
  timing.model_evals = static_cast<int64_t>(result.fields().at("model_evals").number_value());
  return timing;
}

}  // namespace

int RunGridBench() {
  SetTorchThreads(GridBenchThreads());
  auto model = DenoiserModel::Load(GridBenchModelDir(), {"auto"});
  if (!model.ok()) {
    std::cerr << "dgrid-bench grid: " << model.status().message() << "\n";
    return 1;
  }
  const v1::ModelInfo info = InfoFor((*model)->manifest());
  const int runs = absl::GetFlag(FLAGS_runs);
  const std::vector<std::string> variants = absl::GetFlag(FLAGS_variants);
  auto wanted = [&](const char* v) {
    return std::find(variants.begin(), variants.end(), v) != variants.end();
  };
  const double best_ips = wanted("limit") ? BestRawImagesPerSecond(**model) : 0;

  for (const std::string& preset : absl::GetFlag(FLAGS_grids)) {
    auto plan = PlanGrid(RequestFor(preset, 1), info, {});
    if (!plan.ok()) {
      std::cerr << "dgrid-bench grid: " << plan.status().message() << "\n";
      return 1;
    }
    const int rows_per_eval = RowsPerEval(*plan);
    std::map<std::string, Timing> timings;
    if (wanted("limit")) {
      Timing t;
      t.walls = {plan->model_evals * rows_per_eval / best_ips};
      t.model_evals = plan->model_evals;
      timings["limit"] = t;
    }
    TrajectoryBatcher batcher(model->get(), {.max_batch = 256});
    auto time_engine = [&](const char* name, auto fn, int n) {
      Timing t;
      for (int i = -1; i < n; ++i) {
        auto p = PlanGrid(RequestFor(preset, 100 + i), info, {});
        const absl::Time start = absl::Now();
        t.model_evals = fn(batcher, *p);
        if (i >= 0) t.walls.push_back(absl::ToDoubleSeconds(absl::Now() - start));
      }
      timings[name] = t;
    };
    if (wanted("inprocess")) time_engine("inprocess", RunInProcess, runs);
    if (wanted("seed_style")) time_engine("seed_style", RunSeedStyle, runs);
    if (wanted("from_scratch")) time_engine("from_scratch", RunFromScratch, runs);
    if (wanted("pair_1")) timings["pair_1"] = TimePair(1, preset, runs);
    if (wanted("pair_2")) timings["pair_2"] = TimePair(2, preset, runs);
    if (wanted("python_seed_style")) {
      timings["python_seed_style"] = TimePython("seed_style", *plan, runs);
    }
    if (wanted("python_batched")) timings["python_batched"] = TimePython("batched", *plan, runs);

    const double limit = timings.count("limit") ? timings["limit"].Median() : 0;
    for (const std::string& variant : variants) {
      if (!timings.count(variant) || timings[variant].walls.empty()) continue;
      const Timing& t = timings[variant];
      BenchLine line;
      line.Set("variant", variant)
          .Set("grid", preset)
          .Set("model", info.name())
          .Set("wall_s", t.Median())
          .Set("wall_min_s", t.Min())
          .Set("wall_max_s", t.Max())
          .Set("runs", static_cast<double>(t.walls.size()))
          .Set("model_evals", static_cast<double>(t.model_evals))
          .Set("plan_model_evals", static_cast<double>(plan->model_evals))
          .Set("from_scratch_evals", static_cast<double>(plan->from_scratch_evals))
          .Set("images_per_s", t.model_evals * rows_per_eval / t.Median())
          .Set("ratio_to_limit", limit > 0 ? limit / t.Median() : 0)
          .Set("threads", GridBenchThreads());
      for (const char* baseline : {"inprocess", "pair_1", "seed_style", "from_scratch",
                                   "python_seed_style", "python_batched"}) {
        if (baseline != variant && timings.count(baseline) && !timings[baseline].walls.empty()) {
          line.Set(absl::StrCat("speedup_vs_", baseline), timings[baseline].Median() / t.Median());
        }
      }
      line.Print();
    }
  }
  return 0;
}

}  // namespace dgrid
