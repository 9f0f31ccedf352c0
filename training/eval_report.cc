#include "eval_report.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace dgrid::training {

namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

Value Num(double v) {
  Value out;
  out.set_number_value(v);
  return out;
}
Value Str(const std::string& v) {
  Value out;
  out.set_string_value(v);
  return out;
}
Value Bool(bool v) {
  Value out;
  out.set_bool_value(v);
  return out;
}
Value Obj(Struct s) {
  Value out;
  *out.mutable_struct_value() = std::move(s);
  return out;
}
template <typename T>
Value NumList(const std::vector<T>& values) {
  Value out;
  ListValue* list = out.mutable_list_value();
  for (const T& v : values) *list->add_values() = Num(static_cast<double>(v));
  return out;
}

void Set(Struct& s, const std::string& key, Value v) { (*s.mutable_fields())[key] = std::move(v); }

// The manifest's `training` block, or null when the manifest has none.
Value ManifestTraining(const std::string& bundle_dir) {
  Value null_value;
  null_value.set_null_value(google::protobuf::NULL_VALUE);
  std::ifstream in(bundle_dir + "/manifest.json");
  if (!in) return null_value;
  std::stringstream text;
  text << in.rdbuf();
  Struct manifest;
  if (!google::protobuf::util::JsonStringToMessage(text.str(), &manifest).ok()) {
    return null_value;
  }
  auto it = manifest.fields().find("training");
  return it == manifest.fields().end() ? null_value : it->second;
}

Struct GuidanceJson(const EvalResult& r, const GuidanceEval& g) {
  Struct s;
  Set(s, "guidance", Num(g.guidance));
  Set(s, "samples", Num(g.samples));
  Set(s, "accuracy", Num(g.accuracy));
  Set(s, "label_used", Bool(g.label_used));
  if (!g.label_used) {
    Set(s, "accuracy_note",
        Str("guidance 0 runs the null label only: the requested class is ignored, so accuracy "
            "is chance level (~1/classes); see predicted_histogram"));
  }
  Struct per_class;
  for (size_t c = 0; c < r.class_labels.size(); ++c) {
    Set(per_class, r.class_labels[c], Num(g.per_class_accuracy[c]));
  }
  Set(s, "per_class_accuracy", Obj(per_class));
  Set(s, "predicted_histogram", NumList(g.predicted_histogram));
  Set(s, "predicted_entropy_bits", Num(g.predicted_entropy_bits));
  Set(s, "frechet_distance", Num(g.frechet_distance));
  Set(s, "image_forwards", Num(static_cast<double>(g.image_forwards)));
  Set(s, "seconds", Num(g.seconds));
  return s;
}

Struct SpeciationJson(const EvalResult& r) {
  const SpeciationEval& sp = r.speciation;
  Struct s;
  Set(s, "trunks", Num(sp.trunks));
  Set(s, "branches", Num(sp.branches));
  Set(s, "guidance", Num(0));
  Set(s, "steps", Num(sp.steps));
  Set(s, "p_change_independent", Num(sp.p_change_independent));
  Set(s, "half_step", Num(sp.half_step));
  Set(s, "trunk_histogram", NumList(sp.trunk_histogram));
  Set(s, "spread",
      Str("standard_error and ci95 are over trunks (a trunk's branches are correlated); ci95 "
          "is a 2000-resample bootstrap percentile interval"));
  Value points;
  for (const SpeciationPoint& p : sp.points) {
    Struct ps;
    Set(ps, "step", Num(p.step));
    Set(ps, "timestep", Num(p.timestep));
    Set(ps, "pairs", Num(p.pairs));
    Set(ps, "p_change", Num(p.p_change));
    Set(ps, "standard_error", Num(p.standard_error));
    Set(ps, "ci95", NumList(std::vector<double>{p.ci95_lo, p.ci95_hi}));
    *points.mutable_list_value()->add_values() = Obj(ps);
  }
  if (!points.has_list_value()) points.mutable_list_value();
  Set(s, "points", points);
  if (!r.plot_path.empty()) Set(s, "plot", Str(r.plot_path));
  Set(s, "image_forwards", Num(static_cast<double>(sp.image_forwards)));
  Set(s, "seconds", Num(sp.seconds));
  return s;
}

}  // namespace

absl::StatusOr<std::string> EvalReportJson(const EvalResult& r) {
  if (r.by_guidance.empty()) return absl::InvalidArgumentError("no guidance results");
  Struct root;
  Set(root, "bundle", Str(r.bundle_dir));
  Set(root, "model", Str(r.model_name));
  Set(root, "bundle_training", ManifestTraining(r.bundle_dir));

  Struct sampler;
  Set(sampler, "steps", Num(r.steps));
  Set(sampler, "eta", Num(r.eta));
  Set(sampler, "spacing", Str(r.spacing));
  Set(sampler, "default_guidance", Num(r.default_guidance));
  Set(root, "sampler", Obj(sampler));

  Struct classifier;
  Set(classifier, "file", Str(r.classifier_path));
  Set(classifier, "feature_dim", Num(r.feature_dim));
  Set(classifier, "test_accuracy", Num(r.classifier_test_accuracy));
  Set(classifier, "test_images", Num(static_cast<double>(r.test_images)));
  Set(root, "classifier", Obj(classifier));

  const GuidanceEval& d = r.at_default();
  Struct conditional;
  Set(conditional, "guidance", Num(d.guidance));
  Set(conditional, "samples", Num(d.samples));
  Set(conditional, "accuracy", Num(d.accuracy));
  Set(conditional, "target", Num(kAccuracyTarget));
  Set(conditional, "meets_target", Bool(d.accuracy >= kAccuracyTarget));
  Set(root, "conditional", Obj(conditional));

  Struct frechet;
  Set(frechet, "samples_vs_test", Num(d.frechet_distance));
  Set(frechet, "samples", Num(d.samples));
  Set(frechet, "test_images", Num(static_cast<double>(r.test_images)));
  Set(frechet, "floor_train_vs_test", Num(r.floor_frechet));
  Set(frechet, "floor_train_images", Num(static_cast<double>(r.floor_train_images)));
  Set(frechet, "matched_floor_train_vs_test", Num(r.matched_floor_frechet));
  Set(frechet, "matched_floor_train_images",
      Num(static_cast<double>(r.matched_floor_train_images)));
  Set(frechet, "features", Str("classifier penultimate layer"));
  Set(root, "frechet", Obj(frechet));

  Value by_guidance;
  for (const GuidanceEval& g : r.by_guidance) {
    *by_guidance.mutable_list_value()->add_values() = Obj(GuidanceJson(r, g));
  }
  Set(root, "by_guidance", by_guidance);
  Set(root, "speciation", Obj(SpeciationJson(r)));

  Struct machine;
  Set(machine, "host", Str(r.host));
  Set(machine, "cpu", Str(r.cpu));
  Set(machine, "logical_cores", Num(r.logical_cores));
  Set(machine, "torch_threads", Num(r.torch_threads));
  Set(machine, "device", Str(r.device));
  Set(machine, "max_batch", Num(r.max_batch));
  Set(root, "machine", Obj(machine));

  Struct seconds;
  Set(seconds, "total", Num(r.total_seconds));
  Set(seconds, "real_features", Num(r.real_seconds));
  double guided = 0;
  for (const GuidanceEval& g : r.by_guidance) guided += g.seconds;
  Set(seconds, "by_guidance", Num(guided));
  Set(seconds, "speciation", Num(r.speciation.seconds));
  Set(root, "seconds", Obj(seconds));
  Set(root, "image_forwards", Num(static_cast<double>(r.image_forwards)));
  // Whole-run wall time per image-forward: includes sampler updates,
  // decoding and classification, so it is an upper bound on the model's.
  Set(root, "ms_per_image_forward_overall",
      Num(r.image_forwards > 0 ? 1000 * (guided + r.speciation.seconds) / r.image_forwards : 0));

  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(root, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("eval report to JSON: ", std::string(status.message())));
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

std::string EvalReportText(const EvalResult& r) {
  std::string out;
  const GuidanceEval& d = r.at_default();
  absl::StrAppendFormat(&out, "%s: %d steps, eta %g, %s spacing, default guidance %g\n",
                        r.bundle_dir, r.steps, r.eta, r.spacing, r.default_guidance);
  absl::StrAppendFormat(&out, "classifier test accuracy %.4f (%d images)\n",
                        r.classifier_test_accuracy, r.test_images);
  absl::StrAppendFormat(&out, "conditional accuracy at guidance %g: %.3f (target %.2f: %s)\n",
                        d.guidance, d.accuracy, kAccuracyTarget,
                        d.accuracy >= kAccuracyTarget ? "met" : "MISSED");
  absl::StrAppendFormat(&out,
                        "Fréchet distance %.2f (%d samples); real-vs-real floor %.2f (%d train "
                        "images), %.2f (%d)\n",
                        d.frechet_distance, d.samples, r.floor_frechet, r.floor_train_images,
                        r.matched_floor_frechet, r.matched_floor_train_images);
  absl::StrAppend(&out, "guidance  accuracy  FD       entropy(bits)  seconds\n");
  for (const GuidanceEval& g : r.by_guidance) {
    absl::StrAppendFormat(&out, "%-8g  %.3f%s  %-7.2f  %-13.2f  %.0f\n", g.guidance, g.accuracy,
                          g.label_used ? " " : "*", g.frechet_distance, g.predicted_entropy_bits,
                          g.seconds);
  }
  absl::StrAppend(&out, "  * label unused at guidance 0: chance level\n");
  const SpeciationEval& sp = r.speciation;
  absl::StrAppendFormat(&out,
                        "speciation (%d trunks x %d branches, unconditional): P(class changes) "
                        "by branch step; independent samples %.3f\n",
                        sp.trunks, sp.branches, sp.p_change_independent);
  for (const SpeciationPoint& p : sp.points) {
    absl::StrAppendFormat(&out, "  step %2d  t=%3d  %.3f ± %.3f  [%.3f, %.3f]\n", p.step,
                          p.timestep, p.p_change, p.standard_error, p.ci95_lo, p.ci95_hi);
  }
  if (!r.plot_path.empty()) absl::StrAppend(&out, "plot: ", r.plot_path, "\n");
  absl::StrAppendFormat(&out, "%.0f s on %s (%d torch threads)\n", r.total_seconds, r.cpu,
                        r.torch_threads);
  return out;
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace dgrid::training
