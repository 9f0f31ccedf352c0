// dgrid-eval: measures a model bundle's samples through the real engine.
//
//   dgrid-eval --bundle models/fashion-mnist --json [--per_class 100]
//       [--guidance 0,1,2,4] [--trunks 200 --branches 4] [--threads 2]
//       [--out_dir models/fashion-mnist/eval]
//
// Writes <out_dir>/eval.json, speciation.png and samples.png (the default
// guidance's samples, a row per class); progress goes to
// stderr, the report (JSON with --json, else text) to stdout.
// Wiring only: the work is in evaluation.cc, eval_report.cc and
// speciation_plot.cc.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "eval_report.h"
#include "evaluation.h"
#include "speciation_plot.h"

ABSL_FLAG(std::string, bundle, "models/fashion-mnist", "model bundle folder");
ABSL_FLAG(bool, json, false, "print the report as one JSON object (else as text)");
ABSL_FLAG(int, per_class, 100, "samples per class at every guidance scale");
ABSL_FLAG(std::string, guidance, "0,1,2,4",
          "guidance scales to measure; the bundle's default is always added");
ABSL_FLAG(int, trunks, 200, "speciation: unconditional trunks");
ABSL_FLAG(int, branches, 4, "speciation: branches per trunk and branch step");
ABSL_FLAG(int, branch_every, 5, "speciation: branch at steps 0, N, 2N, ...");
ABSL_FLAG(int, steps, 0, "sampler steps (0: the bundle's default); fewer for smoke tests");
ABSL_FLAG(int, threads, 2, "torch CPU threads");
ABSL_FLAG(int, max_batch, 64, "engine forward rows per iteration");
ABSL_FLAG(int64_t, real_images, 0,
          "real images per split (0: the whole test split, as many train images)");
ABSL_FLAG(uint64_t, seed, 1, "seed of every sample, trunk and branch path");
ABSL_FLAG(std::string, data_dir, dgrid::training::kEvalDataDir,
          "folder of the Fashion-MNIST .gz files");
ABSL_FLAG(std::string, out_dir, "",
          "where eval.json, speciation.png and samples.png go (<bundle>/eval)");

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "dgrid-eval: %s\n", s.ToString().c_str());
  return 1;
}

absl::StatusOr<std::vector<float>> ParseScales(const std::string& text) {
  std::vector<float> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    float g = 0;
    if (!absl::SimpleAtof(part, &g) || !(g >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--guidance wants non-negative numbers, got '", text, "'"));
    }
    out.push_back(g);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dgrid-eval --bundle models/fashion-mnist [--json] [--per_class 100] "
      "[--guidance 0,1,2,4] [--trunks 200 --branches 4] [--out_dir DIR]");
  absl::ParseCommandLine(argc, argv);

  dgrid::training::EvalOptions o;
  o.bundle_dir = absl::GetFlag(FLAGS_bundle);
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.per_class = absl::GetFlag(FLAGS_per_class);
  absl::StatusOr<std::vector<float>> scales = ParseScales(absl::GetFlag(FLAGS_guidance));
  if (!scales.ok()) return Fail(scales.status());
  o.guidance = *scales;
  o.trunks = absl::GetFlag(FLAGS_trunks);
  o.branches = absl::GetFlag(FLAGS_branches);
  o.branch_every = absl::GetFlag(FLAGS_branch_every);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.max_batch = absl::GetFlag(FLAGS_max_batch);
  o.real_images = absl::GetFlag(FLAGS_real_images);
  o.seed = absl::GetFlag(FLAGS_seed);
  std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  if (out_dir.empty()) out_dir = o.bundle_dir + "/eval";
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec)
    return Fail(
        absl::UnavailableError(absl::StrCat("cannot create ", out_dir, ": ", ec.message())));

  o.samples_png = out_dir + "/samples.png";
  absl::StatusOr<dgrid::training::EvalResult> result = dgrid::training::RunEvaluation(o);
  if (!result.ok()) return Fail(result.status());
  const std::string plot = out_dir + "/speciation.png";
  absl::Status plotted = dgrid::training::WriteSpeciationPlot(*result, plot);
  if (!plotted.ok()) return Fail(plotted);
  result->plot_path = plot;

  absl::StatusOr<std::string> json = dgrid::training::EvalReportJson(*result);
  if (!json.ok()) return Fail(json.status());
  absl::Status written = dgrid::training::WriteTextFile(out_dir + "/eval.json", *json);
  if (!written.ok()) return Fail(written);
  std::cout << (absl::GetFlag(FLAGS_json) ? *json : dgrid::training::EvalReportText(*result));
  std::cerr << "[dgrid-eval] wrote eval.json, speciation.png and samples.png in " << out_dir
            << "\n";
  return 0;
}
