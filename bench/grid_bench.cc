// dgrid-bench grid: the same grid (default and classic presets, same model,
// this machine, one run) through every variant, one JSON line each:
//
//   limit              model evaluations / the engine's best raw forward rate
//   limit_all          every forward the grid needs at each part's best raw
//                      rate: the UNet along the wavefront (each step's rows
//                      in one forward, the trunk's steps one after another),
//                      the text encodings and the decodes the pair asks for
//   inprocess          the engine runs the plan as a wavefront, no RPC
//   inprocess_whole    inprocess with every forward whole on intra-op threads
//                      (no chunks per core: the engine before forward_workers.h)
//   pair_1, pair_2     the full pair over gRPC on loopback, 1 or 2 replicas
//   pair_1_whole       pair_1 likewise without chunks
//   seed_style         the original app: trunk, then each branch alone at
//                      batch 1, shared prefix reused
//   from_scratch       every cell its own trajectory from step 0
//   python_seed_style  bench/baselines/grid_baseline.py, the seed's algorithm
//   python_batched     the same script, each row's branches batched
//   pair_1_1t          pair_1 with one replica's share of the threads: the
//                      unit that pair_2 runs twice
//
// Rounds interleave the variants and ratios are medians of per-round ratios,
// so the shared machine's noise falls on every variant alike.
#include <grpcpp/grpcpp.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <thread>
#include <tuple>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_json.h"
#include "common/wire.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "bench/raw_forward.h"
#include "denoiser_service/engine/trajectory_batcher.h"
#include "denoiser_service/text/tokenizer.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grid_orchestrator/plan/grid_plan.h"
#include "tests/support/stack.h"

ABSL_FLAG(int, runs, 5, "dgrid-bench grid: timed runs per variant (median reported).");
ABSL_FLAG(std::vector<std::string>, grids, std::vector<std::string>({"default", "classic"}),
          "dgrid-bench grid: presets to run.");
ABSL_FLAG(std::vector<std::string>, variants,
          std::vector<std::string>({"limit", "limit_all", "inprocess", "inprocess_whole", "pair_1",
                                    "pair_1_whole", "pair_2", "seed_style", "from_scratch",
                                    "python_seed_style", "python_batched", "pair_1_1t"}),
          "dgrid-bench grid: variants to run.");
ABSL_FLAG(std::string, grid_prompt, "sneaker", "dgrid-bench grid: prompt ('' = unconditional).");
ABSL_FLAG(int, grid_steps, 0, "dgrid-bench grid: override the preset's steps (0 = keep).");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "Python with Debian's python3-torch.");
ABSL_FLAG(double, limit_seconds, 0.5,
          "dgrid-bench grid: seconds of raw forwards per batch size when measuring the limit.");

namespace dgrid {

std::string GridBenchModelDir();
int GridBenchThreads();

namespace {

v1::ModelInfo InfoFor(const BundleManifest& m) { return ModelInfoFromManifest(m); }

v1::GridRequest RequestFor(const std::string& preset, uint64_t seed) {
  v1::GridRequest r;
  r.set_preset(preset);
  r.set_seed(seed);
  r.set_prompt(absl::GetFlag(FLAGS_grid_prompt));
  if (absl::GetFlag(FLAGS_grid_steps) > 0) r.mutable_steps()->set_value(absl::GetFlag(FLAGS_grid_steps));
  return r;
}

// Forward rows per model evaluation: 2 under guidance (a text model's
// prompt and negative prompt, a class model's class and null label).
int RowsPerEval(const GridPlanSpec& plan) {
  const bool conditional = plan.text ? plan.prompt != plan.negative_prompt : plan.class_index >= 0;
  return conditional && plan.guidance != 0.0f && plan.guidance != 1.0f ? 2 : 1;
}

RunRequest EngineRequest(const GridPlanSpec& plan) {
  RunRequest r;
  r.sampler = {plan.steps, plan.eta, plan.spacing, plan.guidance};
  r.class_index = plan.class_index;
  if (plan.text) {
    r.prompt = plan.prompt;
    r.negative_prompt = plan.negative_prompt;
  }
  // As the pair does: every capture and final decoded to an image, so that
  // a VAE's cost is on both sides of the ratio.
  r.decode = true;
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
  for (Run::Wait w; (w = run.Next(absl::Seconds(600), &e)) != Run::Wait::kDone;) {
    if (w != Run::Wait::kEvent) continue;  // a timeout delivers no event
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

// Seconds of one raw forward at each batch size of the sweep, `seconds` of
// forwards at each, the better of the two ways the engine can run it on
// `cores` (bench/raw_forward.h). Small batches are in the sweep: here the
// best rate can come at a batch whose activations stay in the per-core cache.
std::map<int, double> ForwardSecondsByBatch(DenoiserModel& model, absl::Duration seconds,
                                            int cores) {
  std::map<int, double> by_batch;
  ForwardWorkers whole({.cores = cores, .min_chunk_rows = 0});
  ForwardWorkers chunked({.cores = cores, .min_chunk_rows = 1});
  for (int batch : {1, 2, 4, 8, 16, 32, 64, 128, 256}) {
    double best = SecondsPerForward(model, whole, batch, seconds);
    if (batch > 1) best = std::min(best, SecondsPerForward(model, chunked, batch, seconds));
    by_batch[batch] = best;
  }
  return by_batch;
}

double BestRate(const std::map<int, double>& seconds_by_batch) {
  double best = 0;
  for (const auto& [batch, seconds] : seconds_by_batch) best = std::max(best, batch / seconds);
  return best;
}

// The engine's best raw forward rate over batch sizes, `seconds` at each.
double RawImagesPerSecond(DenoiserModel& model, absl::Duration seconds, int cores) {
  return BestRate(ForwardSecondsByBatch(model, seconds, cores));
}

// One forward of `rows` rows, from the sweep: linear between the sizes
// measured, and past the largest, that size's rate.
double ForwardSeconds(const std::map<int, double>& by_batch, int rows) {
  auto above = by_batch.lower_bound(rows);
  if (above == by_batch.end()) {
    const auto& [batch, seconds] = *by_batch.rbegin();
    return seconds * rows / batch;
  }
  if (above->first == rows || above == by_batch.begin()) return above->second;
  const auto below = std::prev(above);
  const double f = double(rows - below->first) / (above->first - below->first);
  return below->second + f * (above->second - below->second);
}

// The best rates of the decoder (images/s; whole or a chunk per core, as
// the engine can) and the text encoder (prompts/s, 0 for a class model),
// `seconds` at each batch size up to the engine's.
std::pair<double, double> DecodeAndEncodeRates(DenoiserModel& model, absl::Duration seconds,
                                               int cores) {
  double decode = 0, encode = 0;
  ForwardWorkers whole({.cores = cores, .min_chunk_rows = 0});
  ForwardWorkers chunked({.cores = cores, .min_chunk_rows = 1});
  for (int batch : {1, 2, 4, 8, 16, 32}) {
    for (ForwardWorkers* workers : {&whole, &chunked}) {
      const double each = SecondsPerDecode(model, *workers, batch, seconds);
      if (each > 0) decode = std::max(decode, batch / each);
    }
  }
  if (const Tokenizer* tokenizer = model.tokenizer()) {
    const std::vector<int64_t> one = tokenizer->Padded(tokenizer->Encode("a photo of a cat"));
    for (int batch : {1, 2, 4, 8}) {
      std::vector<int64_t> ids;
      for (int i = 0; i < batch; ++i) ids.insert(ids.end(), one.begin(), one.end());
      std::vector<float> out(batch * model.encoding_size());
      int prompts = 0;
      const absl::Time start = absl::Now();
      while (absl::Now() - start < seconds || prompts < 2 * batch) {
        (void)model.EncodeText(ids, batch, absl::MakeSpan(out));
        prompts += batch;
      }
      encode = std::max(encode, prompts / absl::ToDoubleSeconds(absl::Now() - start));
    }
  }
  return {decode, encode};
}

// What limit_all adds up for one grid, in seconds.
struct LimitAll {
  double unet = 0, encode = 0, decode = 0;
  int images = 0, prompts = 0;
  double total() const { return unet + encode + decode; }
};

LimitAll LimitAllOf(const GridPlanSpec& plan, int rows_per_eval,
                    const std::map<int, double>& forward_by_batch, double decode_rate,
                    double encode_rate) {
  LimitAll limit;
  // The wavefront: at step s the trunk and every branch of a row that
  // branched at or before s share one forward.
  for (int s = 0; s < plan.steps; ++s) {
    int trajectories = 1;
    for (const PlannedRow& row : plan.rows) {
      if (row.branch_step <= s) trajectories += static_cast<int>(row.cells.size());
    }
    limit.unet += ForwardSeconds(forward_by_batch, trajectories * rows_per_eval);
  }
  // What the pair decodes for a figure: every cell's final, the trunk's
  // final and x0 preview, each trunk capture with its x0 preview (x_T alone).
  for (const PlannedRow& row : plan.rows) limit.images += static_cast<int>(row.cells.size());
  limit.images += 2;
  for (int step : plan.trunk_captures) limit.images += step == 0 ? 1 : 2;
  limit.decode = limit.images / decode_rate;
  if (plan.text) {
    limit.prompts = plan.prompt == plan.negative_prompt ? 1 : 2;
    limit.encode = encode_rate > 0 ? limit.prompts / encode_rate : 0;
  }
  return limit;
}

// The full pair, started once and reused by every round and grid.
class PairRunner {
 public:
  // `whole`: every forward whole, on intra-op threads (no chunks).
  static absl::StatusOr<std::unique_ptr<PairRunner>> Start(int replicas, int threads, bool whole) {
    testing::StackOptions options;
    options.model_dir = GridBenchModelDir();
    options.denoisers = replicas;
    options.denoiser_threads = threads;
    if (whole) options.denoiser_flags = {"--min_chunk_rows=0"};
    options.orchestrator_flags = {"--cache_mb=0", "--cells_per_job=2"};
    auto stack = testing::Stack::Start(options, absl::StrCat("bench-pair-", replicas, "x", threads));
    if (!stack.ok()) return stack.status();
    auto runner = std::unique_ptr<PairRunner>(new PairRunner());
    runner->stub_ = (*stack)->Orchestrator();
    runner->stack_ = std::move(*stack);
    return runner;
  }

  absl::StatusOr<double> Run(const std::string& preset, uint64_t seed, int64_t* evals) {
    grpc::ClientContext context;
    v1::Grid grid;
    const absl::Time start = absl::Now();
    const grpc::Status status = stub_->CreateGrid(&context, RequestFor(preset, seed), &grid);
    if (!status.ok()) return absl::UnavailableError(status.error_message());
    *evals = grid.model_evals();
    return absl::ToDoubleSeconds(absl::Now() - start);
  }

 private:
  PairRunner() = default;
  std::unique_ptr<testing::Stack> stack_;
  std::unique_ptr<v1::Orchestrator::Stub> stub_;
};

// bench/baselines/grid_baseline.py --serve as a coprocess: it loads the model
// and warms up once, then runs one grid per request line, so its rounds
// interleave with the others' like any variant.
class PythonBaseline {
 public:
  static absl::StatusOr<std::unique_ptr<PythonBaseline>> Start(const GridPlanSpec& plan) {
    std::vector<std::string> rows;
    for (const PlannedRow& row : plan.rows) rows.push_back(std::to_string(row.branch_step));
    const std::vector<std::string> argv = {
        absl::GetFlag(FLAGS_python), absl::StrCat(DGRID_SOURCE_DIR, "/bench/baselines/grid_baseline.py"),
        "--serve", "--bundle", GridBenchModelDir(), "--steps", std::to_string(plan.steps),
        "--eta", absl::StrCat(plan.eta), "--guidance", absl::StrCat(plan.guidance),
        "--class_index", std::to_string(plan.class_index), "--branch_steps",
        absl::StrJoin(rows, ","), "--branches", std::to_string(plan.branches), "--threads",
        std::to_string(GridBenchThreads())};
    // Built before fork: the child may only exec (this process has threads).
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) {
      return absl::InternalError("python baseline: pipe failed");
    }
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("python baseline: fork failed");
    if (pid == 0) {
      dup2(to_child[0], STDIN_FILENO);
      dup2(from_child[1], STDOUT_FILENO);
      close(to_child[0]);
      close(to_child[1]);
      close(from_child[0]);
      close(from_child[1]);
      execv(args[0], args.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    auto b = std::unique_ptr<PythonBaseline>(new PythonBaseline());
    b->pid_ = pid;
    b->in_ = fdopen(to_child[1], "w");
    b->out_ = fdopen(from_child[0], "r");
    return b;
  }

  ~PythonBaseline() {
    if (in_) fclose(in_);  // EOF ends the serve loop
    if (out_) fclose(out_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }

  absl::StatusOr<double> Run(const std::string& mode, uint64_t seed, int64_t* evals) {
    std::fprintf(in_, "%s %lu\n", mode.c_str(), static_cast<unsigned long>(seed));
    std::fflush(in_);
    char buffer[4096];
    if (!std::fgets(buffer, sizeof(buffer), out_)) {
      return absl::UnavailableError("python baseline ended (see its stderr above)");
    }
    // {"wall": seconds, "model_evals": N}
    google::protobuf::Struct result;
    if (!google::protobuf::util::JsonStringToMessage(buffer, &result).ok() ||
        !result.fields().count("wall")) {
      return absl::InternalError(absl::StrCat("python baseline: unreadable line: ", buffer));
    }
    *evals = static_cast<int64_t>(result.fields().at("model_evals").number_value());
    return result.fields().at("wall").number_value();
  }

 private:
  PythonBaseline() = default;
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

double MedianOf(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int RunGridBench() {
  // A baseline that dies must fail its round, not end this process on write.
  signal(SIGPIPE, SIG_IGN);
  SetTorchThreads(GridBenchThreads());
  auto model = DenoiserModel::Load(GridBenchModelDir(), {"auto"});
  if (!model.ok()) {
    std::cerr << "dgrid-bench grid: " << model.status().message() << "\n";
    return 1;
  }
  const v1::ModelInfo info = InfoFor((*model)->manifest());
  const int runs = std::max(1, absl::GetFlag(FLAGS_runs));
  const std::vector<std::string> variants = absl::GetFlag(FLAGS_variants);
  auto wanted = [&](const std::string& v) {
    return std::find(variants.begin(), variants.end(), v) != variants.end();
  };
  const absl::Duration limit_seconds = absl::Seconds(absl::GetFlag(FLAGS_limit_seconds));
  const int threads = GridBenchThreads();

  // Pairs start once: pair_1 with the machine's threads, pair_2 with them
  // split between its replicas, pair_1_1t with one replica's share.
  std::map<std::string, std::unique_ptr<PairRunner>> pairs;
  for (const auto& [name, replicas, per_replica] :
       std::vector<std::tuple<std::string, int, int>>{
           {"pair_1", 1, threads},
           {"pair_1_whole", 1, threads},
           {"pair_2", 2, std::max(1, threads / 2)},
           {"pair_1_1t", 1, std::max(1, threads / 2)}}) {
    if (!wanted(name)) continue;
    auto runner = PairRunner::Start(replicas, per_replica, absl::EndsWith(name, "_whole"));
    if (!runner.ok()) {
      std::cerr << "dgrid-bench grid: " << name << ": " << runner.status() << "\n";
      return 1;
    }
    pairs[name] = std::move(*runner);
  }

  TrajectoryBatcher batcher(model->get(), {.max_batch = 256, .cores = threads});
  TrajectoryBatcher whole_batcher(model->get(),
                                  {.max_batch = 256, .cores = threads, .min_chunk_rows = 0});
  for (const std::string& preset : absl::GetFlag(FLAGS_grids)) {
    auto plan = PlanGrid(RequestFor(preset, 1), info, {});
    if (!plan.ok()) {
      std::cerr << "dgrid-bench grid: " << plan.status().message() << "\n";
      return 1;
    }
    const int rows_per_eval = RowsPerEval(*plan);
    std::unique_ptr<PythonBaseline> python;
    if (wanted("python_seed_style") || wanted("python_batched")) {
      auto started = PythonBaseline::Start(*plan);
      if (!started.ok()) {
        std::cerr << "dgrid-bench grid: " << started.status() << "\n";
        return 1;
      }
      python = std::move(*started);
    }

    // One way to run each variant once; returns its wall time.
    std::map<std::string, std::function<absl::StatusOr<double>(uint64_t, int64_t*)>> run_once;
    auto engine = [&](auto fn, TrajectoryBatcher* on = nullptr) {
      TrajectoryBatcher* b = on ? on : &batcher;
      return [&, b, fn](uint64_t seed, int64_t* evals) -> absl::StatusOr<double> {
        auto p = PlanGrid(RequestFor(preset, seed), info, {});
        if (!p.ok()) return p.status();
        const absl::Time start = absl::Now();
        *evals = fn(*b, *p);
        return absl::ToDoubleSeconds(absl::Now() - start);
      };
    };
    // The limit: this grid's image-forwards at the best raw rate measured now.
    run_once["limit"] = [&](uint64_t, int64_t* evals) -> absl::StatusOr<double> {
      *evals = plan->model_evals;
      return plan->model_evals * rows_per_eval / RawImagesPerSecond(**model, limit_seconds, threads);
    };
    LimitAll last_limit_all;
    run_once["limit_all"] = [&](uint64_t, int64_t* evals) -> absl::StatusOr<double> {
      *evals = plan->model_evals;
      const auto [decode_rate, encode_rate] =
          DecodeAndEncodeRates(**model, limit_seconds / 5, threads);
      last_limit_all = LimitAllOf(*plan, rows_per_eval,
                                  ForwardSecondsByBatch(**model, limit_seconds, threads),
                                  decode_rate, encode_rate);
      return last_limit_all.total();
    };
    run_once["inprocess"] = engine(RunInProcess);
    run_once["inprocess_whole"] = engine(RunInProcess, &whole_batcher);
    run_once["seed_style"] = engine(RunSeedStyle);
    run_once["from_scratch"] = engine(RunFromScratch);
    for (auto& [name, runner] : pairs) {
      PairRunner* r = runner.get();
      run_once[name] = [r, preset](uint64_t seed, int64_t* evals) {
        return r->Run(preset, seed, evals);
      };
    }
    for (const char* mode : {"seed_style", "batched"}) {
      run_once[absl::StrCat("python_", mode)] = [&python, mode](uint64_t seed, int64_t* evals) {
        return python->Run(mode, seed, evals);
      };
    }

    std::vector<std::string> order;
    for (const std::string& v : variants) {
      if (run_once.count(v)) order.push_back(v);
      else std::cerr << "dgrid-bench grid: unknown variant " << v << "\n";
    }
    // Rounds interleave the variants (each round starts one later), so a
    // noisy moment on this shared machine lands on all of them alike, and
    // ratios are taken within a round. Round -1 warms every variant up.
    std::map<std::string, std::vector<double>> walls;
    std::map<std::string, int64_t> evals;
    for (int round = -1; round < runs; ++round) {
      for (size_t k = 0; k < order.size(); ++k) {
        const std::string& v = order[(k + std::max(round, 0)) % order.size()];
        int64_t n = 0;
        absl::StatusOr<double> wall = run_once[v](100 + std::max(round, 0), &n);
        if (!wall.ok()) {
          std::cerr << "dgrid-bench grid: " << preset << "/" << v << ": " << wall.status() << "\n";
          return 1;
        }
        if (round >= 0) walls[v].push_back(*wall);
        evals[v] = n;
      }
      if (round >= 0) std::cerr << "dgrid-bench grid: " << preset << " round " << round + 1 << "/" << runs << "\n";
    }

    // Median over rounds of a per-round ratio.
    auto ratio = [&](const std::string& num, const std::string& den) {
      std::vector<double> r;
      for (int i = 0; i < runs; ++i) r.push_back(walls[num][i] / walls[den][i]);
      return MedianOf(r);
    };
    for (const std::string& variant : order) {
      const std::vector<double>& w = walls[variant];
      const double median = MedianOf(w);
      BenchLine line;
      line.Set("variant", variant)
          .Set("grid", preset)
          .Set("model", info.name())
          .Set("wall_s", median)
          .Set("wall_min_s", *std::min_element(w.begin(), w.end()))
          .Set("wall_max_s", *std::max_element(w.begin(), w.end()))
          .Set("runs", static_cast<double>(w.size()))
          .Set("model_evals", static_cast<double>(evals[variant]))
          .Set("plan_model_evals", static_cast<double>(plan->model_evals))
          .Set("from_scratch_evals", static_cast<double>(plan->from_scratch_evals))
          .Set("images_per_s", evals[variant] * rows_per_eval / median)
          .Set("ratio_to_limit", walls.count("limit") ? ratio("limit", variant) : 0)
          .Set("ratio_to_limit_all", walls.count("limit_all") ? ratio("limit_all", variant) : 0)
          .Set("threads", threads)
          .Set("cpu", CpuModel());
      if (variant == "limit_all") {
        // The last round's split.
        line.Set("unet_s", last_limit_all.unet)
            .Set("encode_s", last_limit_all.encode)
            .Set("decode_s", last_limit_all.decode)
            .Set("images", last_limit_all.images)
            .Set("prompts", last_limit_all.prompts);
      }
      for (const std::string& baseline : order) {
        if (baseline == variant || absl::StartsWith(baseline, "limit")) continue;
        line.Set(absl::StrCat("speedup_vs_", baseline), ratio(baseline, variant));
      }
      line.Print();
    }
  }
  return 0;
}

}  // namespace dgrid
