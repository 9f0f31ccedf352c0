#include "grid_orchestrator/plan/grid_plan.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/short_text.h"
#include "common/status_macros.h"
#include "common/timesteps.h"

namespace dgrid {
namespace {

// SplitMix64's finaliser: a bijective mix, so distinct inputs stay distinct.
uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

struct Preset {
  int steps = 50;
  float eta = 1.0f;
  int branches = 4;
  std::vector<int> branch_steps;       // used when set
  std::vector<int> branch_timesteps;   // else rows where the trunk has run these
  Sampler sampler = Sampler::kDdim;
};

absl::StatusOr<Preset> FindPreset(const std::string& name) {
  if (name.empty() || name == "default") {
    // Spans the whole trajectory: early rows differ in kind, late in detail.
    return Preset{50, 1.0f, 4, {0, 5, 10, 20, 30, 40}, {}};
  }
  if (name == "classic") {
    // The original web app: SD v1.4, DDIM eta 1, 50 steps, rows at t = 921,
    // 821, 701 with 4 branches each.
    return Preset{50, 1.0f, 4, {}, {921, 821, 701}};
  }
  if (name == "euler_a") {
    // The default grid with the sampler most people pick.
    return Preset{50, 1.0f, 4, {0, 5, 10, 20, 30, 40}, {}, Sampler::kEulerAncestral};
  }
  if (name == "turbo") {
    // Distilled (Turbo) models sample in 1 to 4 steps: a row at every step
    // that adds noise. The last adds none (it lands on sigma 0), so branches
    // after step 3 would all be the trunk.
    return Preset{4, 1.0f, 4, {0, 1, 2}, {}, Sampler::kEulerAncestral};
  }
  return Invalid(absl::StrCat("preset: unknown preset ", ShortQuote(name),
                              "; known: default, classic, euler_a, turbo"));
}

}  // namespace

int TimestepAfter(const GridPlanSpec& plan, int step) {
  // As the original app labels rows: the last timestep the trunk ran before
  // the branches leave it.
  return step > 0 ? plan.timesteps[step - 1] : plan.train_timesteps;
}

uint64_t TrunkNoiseSeed(uint64_t seed) { return Mix(seed ^ 0x7472756E6B000000ull); }

uint64_t BranchNoiseSeed(const Path& trunk, int branch_step, int column) {
  uint64_t h = Mix(trunk.init_seed);
  for (const Segment& s : trunk.SegmentsBelow(branch_step)) {
    h = Mix(h ^ Mix(static_cast<uint64_t>(s.from_step) << 32 ^ s.noise_seed));
  }
  h = Mix(h ^ (static_cast<uint64_t>(branch_step) << 20) ^ static_cast<uint64_t>(column));
  return h;
}

SegmentConditioning RequestConditioning(const GridPlanSpec& plan) {
  if (plan.text) return {plan.prompt, plan.negative_prompt, -1};
  return {"", "", static_cast<int>(plan.class_index)};
}

bool GuidanceReadsPrompt(float guidance) { return guidance != 0.0f; }
bool GuidanceReadsNegativePrompt(float guidance) { return guidance != 1.0f; }

namespace {

// The index of class `name` of a class model, or -1.
int ClassIndexOf(const v1::ModelInfo& model, const std::string& name) {
  const auto& prompts = model.prompts();
  const auto it = std::find(prompts.begin(), prompts.end(), name);
  return it == prompts.end() ? -1 : static_cast<int>(it - prompts.begin());
}

// `field` names no class of a class model.
absl::Status UnknownClass(absl::string_view field, const std::string& name,
                          const v1::ModelInfo& model) {
  return Invalid(absl::StrCat(field, ": unknown prompt ", ShortQuote(name), " for model ",
                              model.name(), ", a class model; its prompts are: ",
                              ShortList(model.prompts())));
}

// The request's prompt switch into the plan: the switch prompts (a class
// model's must name a class) and the branch noise.
absl::Status PlanSwitch(const v1::GridRequest& request, const v1::ModelInfo& model,
                        GridPlanSpec* plan) {
  if (request.branch_noise() != v1::BRANCH_NOISE_NEW &&
      request.branch_noise() != v1::BRANCH_NOISE_TRUNK) {
    return Invalid(absl::StrCat("branch_noise: unknown value ", request.branch_noise(),
                                "; known: BRANCH_NOISE_NEW, BRANCH_NOISE_TRUNK"));
  }
  plan->trunk_noise = request.branch_noise() == v1::BRANCH_NOISE_TRUNK;
  plan->switch_prompt = request.switch_prompt();
  plan->switch_negative_prompt = request.switch_negative_prompt();
  if (!plan->switch_negative_prompt.empty() && plan->switch_prompt.empty()) {
    return Invalid("switch_negative_prompt: give switch_prompt too (the prompt to switch to)");
  }
  if (plan->trunk_noise && plan->switch_prompt.empty()) {
    return Invalid(
        "branch_noise: TRUNK keeps the trunk's noise, so without a switch_prompt every branch "
        "would be the trunk");
  }
  if (plan->text || plan->switch_prompt.empty()) return absl::OkStatus();
  if (!plan->switch_negative_prompt.empty()) {
    return Invalid(absl::StrCat("switch_negative_prompt: ", model.name(),
                                " is a class model and takes no negative prompt"));
  }
  if (ClassIndexOf(model, plan->switch_prompt) < 0) {
    return UnknownClass("switch_prompt", plan->switch_prompt, model);
  }
  return absl::OkStatus();
}

// What a row's branches switch to at their branch step, if anything.
std::optional<SegmentConditioning> SwitchConditioning(const GridPlanSpec& plan,
                                                      const v1::ModelInfo& model) {
  if (plan.switch_prompt.empty()) return std::nullopt;
  if (!plan.text) return SegmentConditioning{"", "", ClassIndexOf(model, plan.switch_prompt)};
  return SegmentConditioning{plan.switch_prompt,
                             plan.switch_negative_prompt.empty() ? plan.negative_prompt
                                                                 : plan.switch_negative_prompt,
                             -1};
}

// Free text is bounded and well-formed before anything else reads it.
absl::Status CheckFreeText(const v1::GridRequest& request) {
  for (const auto& [field, value, max_bytes] :
       {std::tuple<const char*, const std::string&, size_t>{"prompt", request.prompt(),
                                                             kMaxPromptBytes},
        {"negative_prompt", request.negative_prompt(), kMaxPromptBytes},
        {"switch_prompt", request.switch_prompt(), kMaxPromptBytes},
        {"switch_negative_prompt", request.switch_negative_prompt(), kMaxPromptBytes},
        {"model", request.model(), kMaxNameBytes},
        {"preset", request.preset(), kMaxNameBytes}}) {
    RETURN_IF_ERROR(CheckClientText(field, value, max_bytes));
  }
  return absl::OkStatus();
}

// The model, and what the request conditions on: free text for a text model
// (its tokenizer decides what it becomes), a class name for a class model.
absl::Status PlanConditioning(const v1::GridRequest& request, const v1::ModelInfo& model,
                              GridPlanSpec* plan) {
  plan->model = model.name();
  plan->model_version = model.version();
  plan->latent_shape.assign(model.latent_shape().begin(), model.latent_shape().end());
  plan->image_shape.assign(model.image_shape().begin(), model.image_shape().end());
  plan->prompt = request.prompt();
  plan->negative_prompt = request.negative_prompt();
  plan->text = model.conditioning() == "text";
  if (plan->text) return absl::OkStatus();
  plan->class_names.assign(model.prompts().begin(), model.prompts().end());
  if (!request.negative_prompt().empty()) {
    return Invalid(absl::StrCat("negative_prompt: ", model.name(),
                                " is a class model and takes no negative prompt"));
  }
  if (request.prompt().empty()) return absl::OkStatus();
  plan->class_index = ClassIndexOf(model, request.prompt());
  if (plan->class_index < 0) return UnknownClass("prompt", request.prompt(), model);
  return absl::OkStatus();
}

// Sampler, steps, eta, guidance and spacing: the request's, else the
// preset's or the model's; and the timesteps they give.
absl::Status PlanSampler(const v1::GridRequest& request, const v1::ModelInfo& model,
                         const Preset& preset, const PlanLimits& limits, GridPlanSpec* plan) {
  if (request.sampler() == v1::SAMPLER_UNSPECIFIED) {
    plan->sampler = preset.sampler;
  } else {
    ASSIGN_OR_RETURN(plan->sampler, SamplerFromProto(request.sampler(), "sampler"));
  }
  plan->steps = request.has_steps() ? request.steps().value() : preset.steps;
  const int max_steps = std::min(limits.max_steps, model.train_timesteps());
  if (plan->steps < 1 || plan->steps > max_steps) {
    return Invalid(absl::StrCat("steps must be in [1, ", max_steps, "], got ", plan->steps));
  }
  // + 0.0f: -0 is 0, one setting (and one cache key), not two.
  plan->eta = (request.has_eta() ? request.eta().value() : preset.eta) + 0.0f;
  if (!(plan->eta >= 0.0f && plan->eta <= 1.0f)) {
    return Invalid(absl::StrCat("eta must be in [0, 1], got ", ExactNumber(plan->eta)));
  }
  plan->guidance =
      (request.has_guidance() ? request.guidance().value() : model.defaults().guidance()) + 0.0f;
  if (!(plan->guidance >= 0.0f && plan->guidance <= 100.0f)) {
    return Invalid(
        absl::StrCat("guidance must be in [0, 100], got ", ExactNumber(plan->guidance)));
  }
  if (request.spacing() != v1::SPACING_UNSPECIFIED) {
    ASSIGN_OR_RETURN(plan->spacing, SpacingFromProto(request.spacing(), {}, "spacing"));
  } else {
    // A default this orchestrator does not know (a newer denoiser's) is not
    // the client's mistake: UNIMPLEMENTED (counted failed, HTTP 500), and a
    // request that names its spacing still runs.
    absl::StatusOr<Spacing> model_default =
        SpacingFromProto(model.defaults().spacing(), Spacing::kLeading, "spacing");
    if (!model_default.ok()) {
      return absl::UnimplementedError(absl::StrCat(
          model.name(), "'s default spacing (", static_cast<int>(model.defaults().spacing()),
          ") is unknown to this orchestrator; a request that names its spacing runs"));
    }
    plan->spacing = *model_default;
  }
  if (const std::string problem = TimestepsProblem(model.train_timesteps(), plan->steps,
                                                   plan->spacing, model.steps_offset());
      !problem.empty()) {
    return Invalid(absl::StrCat("steps: ", problem));
  }
  if (plan->sampler == Sampler::kEulerAncestral && plan->spacing == Spacing::kLinspace &&
      !model.float_timesteps() && LinspaceHasFractions(model.train_timesteps(), plan->steps)) {
    return Invalid(absl::StrCat(
        "spacing: ",
        LinspaceFractionsProblem(model.name(), model.train_timesteps(), plan->steps)));
  }
  plan->timesteps =
      DdimTimesteps(model.train_timesteps(), plan->steps, plan->spacing, model.steps_offset());
  plan->train_timesteps = model.train_timesteps();
  plan->last_step_adds_noise =
      plan->sampler == Sampler::kDdim &&
      DdimLastStepAddsNoise(plan->timesteps.back(), plan->train_timesteps, plan->steps,
                            model.set_alpha_to_one());
  return absl::OkStatus();
}

// Columns: the request's, else the preset's; with the trunk's noise, or
// none (eta 0), every branch of a row is one trajectory, so one.
absl::Status PlanColumns(const v1::GridRequest& request, const Preset& preset,
                         const PlanLimits& limits, GridPlanSpec* plan) {
  plan->branches = request.has_branches()                   ? request.branches().value()
                   : plan->trunk_noise || plan->eta == 0.0f ? 1
                                                            : preset.branches;
  if (plan->branches < 1 || plan->branches > limits.max_branches) {
    return Invalid(absl::StrCat("branches must be in [1, ", limits.max_branches, "], got ",
                                plan->branches));
  }
  if (plan->trunk_noise && plan->branches != 1) {
    return Invalid(absl::StrCat("branches: with branch_noise TRUNK every branch of a row is the "
                                "same trajectory; ask for 1, got ",
                                plan->branches));
  }
  return absl::OkStatus();
}

// The sampler, as a refusal of a last step without noise names it.
std::string NoiselessLastStepSampler(const GridPlanSpec& plan) {
  if (plan.sampler == Sampler::kEulerAncestral) return "Euler ancestral";
  return plan.timesteps.back() == 0 ? "DDIM from timestep 0"
                                    : "DDIM on this model's schedule (set_alpha_to_one)";
}

// Whether the grid switches to a prompt the forward pass reads otherwise:
// an unseen switch plans as none.
bool SwitchSeen(const GridPlanSpec& plan) {
  return !plan.switch_prompt.empty() && !plan.switch_unseen;
}

// Rows: the request's branch steps, else the preset's (scaled to the step
// count, or where the trunk has run the preset's timesteps); within limits.
absl::StatusOr<std::vector<int>> ChooseBranchSteps(const v1::GridRequest& request,
                                                   const Preset& preset, const GridPlanSpec& plan,
                                                   const PlanLimits& limits) {
  std::vector<int> branch_steps;
  if (request.branch_steps_size() > 0) {
    branch_steps.assign(request.branch_steps().begin(), request.branch_steps().end());
    for (size_t i = 0; i < branch_steps.size(); ++i) {
      const int k = branch_steps[i];
      if (k < 0 || k >= plan.steps) {
        return Invalid(absl::StrCat("branch_steps[", i, "] must be in [0, steps=", plan.steps,
                                    "), got ", k));
      }
      if (i > 0 && k <= branch_steps[i - 1]) {
        return Invalid(absl::StrCat("branch_steps[", i,
                                    "] must be greater than the one before: sorted and "
                                    "distinct, got ",
                                    k, " after ", branch_steps[i - 1]));
      }
    }
  } else {
    // Rows the preset makes stop before a last step that adds no noise (its
    // branches would be the trunk), unless a switch prompt makes them differ.
    // The explorer's placeholder rows follow this rule too (presetRows in
    // clients/web/app.js): change both together.
    const int end = !plan.last_step_adds_noise && !SwitchSeen(plan) ? plan.steps - 1 : plan.steps;
    if (!preset.branch_steps.empty()) {
      // A preset's rows are fractions of its own step count.
      for (int k : preset.branch_steps) {
        const int scaled = static_cast<int>(std::lround(double(k) * plan.steps / preset.steps));
        if (scaled < end && (branch_steps.empty() || scaled > branch_steps.back())) {
          branch_steps.push_back(scaled);
        }
      }
    } else if (end > 0) {
      // Rows where the trunk has just run timestep t (or the first below it).
      for (int t : preset.branch_timesteps) {
        for (int i = 0; i < plan.steps; ++i) {
          if (plan.timesteps[i] <= t) {
            const int k = std::min(i + 1, end - 1);
            if (branch_steps.empty() || k > branch_steps.back()) branch_steps.push_back(k);
            break;
          }
        }
      }
    }
    if (branch_steps.empty() && end < plan.steps) {
      return Invalid(absl::StrCat("steps: ", NoiselessLastStepSampler(plan),
                                  " adds no noise at its last step, so ", plan.steps,
                                  " step(s) leave no row to branch at; give more"));
    }
  }
  if (branch_steps.empty()) return Invalid("branch_steps: a grid needs at least one row");
  if (static_cast<int>(branch_steps.size()) > limits.max_rows) {
    return Invalid(absl::StrCat("branch_steps: at most ", limits.max_rows, " rows, got ",
                                branch_steps.size()));
  }
  const int64_t cell_steps =
      static_cast<int64_t>(branch_steps.size()) * plan.branches * plan.steps;
  if (cell_steps > limits.max_cell_steps) {
    return Invalid(absl::StrCat("branch_steps x branches x steps = ", cell_steps,
                                " exceeds the limit of ", limits.max_cell_steps));
  }
  return branch_steps;
}

// Prompt switches a cell's path may carry (its trunk's, and the grid's own
// switch), and the bytes of their prompts: each is in every cell's path,
// repeated in every event, and its own context on the denoisers, which take
// at most 64 distinct ones a request.
constexpr int kMaxCellSwitches = 16;
constexpr size_t kMaxSwitchBytes = 16 << 10;

// A promoted trunk segment's class_index (`field`) that the model does not
// take.
absl::Status BadClassIndex(const std::string& field, const v1::ModelInfo& model, bool text,
                           int64_t index) {
  if (text) {
    return Invalid(absl::StrCat(field, ": ", model.name(), " is a text model; give a prompt"));
  }
  return Invalid(
      absl::StrCat(field, " must be in [0, ", model.prompts_size(), "), got ", index));
}

// Whether a promoted trunk's segment conditioning is something the model
// takes (a request's own conditioning is checked by PlanConditioning).
absl::Status CheckTrunkConditioning(const Path& trunk, const v1::ModelInfo& model, bool text) {
  for (size_t i = 0; i < trunk.segments.size(); ++i) {
    const std::optional<SegmentConditioning>& c = trunk.segments[i].conditioning;
    if (!c) continue;
    const std::string field = absl::StrCat("trunk.segments[", i, "].conditioning");
    if (text) {
      if (c->class_index != -1) {
        return BadClassIndex(field + ".class_index", model, text, c->class_index);
      }
      RETURN_IF_ERROR(CheckClientText(field + ".prompt", c->prompt, kMaxPromptBytes));
      RETURN_IF_ERROR(
          CheckClientText(field + ".negative_prompt", c->negative_prompt, kMaxPromptBytes));
      continue;
    }
    if (!c->negative_prompt.empty()) {
      return Invalid(absl::StrCat(field, ".negative_prompt: ", model.name(),
                                  " is a class model and takes none"));
    }
    if (!c->prompt.empty() && ClassIndexOf(model, c->prompt) < 0) {
      return UnknownClass(field + ".prompt", c->prompt, model);
    }
    if (c->class_index < -1 || c->class_index >= model.prompts_size()) {
      return BadClassIndex(field + ".class_index", model, text, c->class_index);
    }
  }
  return absl::OkStatus();
}

// The trunk: the promoted path, or the seed's. Canonical: a switch that
// changes nothing goes, so that it meets the cache entries of the trunk it
// equals.
absl::Status PlanTrunk(const v1::GridRequest& request, const v1::ModelInfo& model,
                       GridPlanSpec* plan) {
  if (request.has_trunk()) {
    // A class_index given as -1 would read as no class in a Path, and run
    // unconditional: refused here, as the denoiser refuses it.
    for (int i = 0; i < request.trunk().segments_size(); ++i) {
      const v1::Conditioning& c = request.trunk().segments(i).conditioning();
      if (c.label_case() != v1::Conditioning::kClassIndex || c.class_index() >= 0) continue;
      return BadClassIndex(absl::StrCat("trunk.segments[", i, "].conditioning.class_index"),
                           model, plan->text, c.class_index());
    }
    plan->trunk = PathFromProto(request.trunk());
    RETURN_IF_ERROR(ValidatePath(plan->trunk, plan->steps, "trunk"));
    RETURN_IF_ERROR(CheckTrunkConditioning(plan->trunk, model, plan->text));
    // A class model's switch by name is the same trajectory as by index: one
    // name, so that Canonical and the cache keys see them as one.
    for (Segment& segment : plan->trunk.segments) {
      if (plan->text || !segment.conditioning || segment.conditioning->prompt.empty()) continue;
      segment.conditioning->class_index = ClassIndexOf(model, segment.conditioning->prompt);
      segment.conditioning->prompt.clear();
    }
  } else {
    plan->trunk = Path{request.seed(), {{0, TrunkNoiseSeed(request.seed())}}};
  }
  plan->trunk = plan->trunk.Canonical(RequestConditioning(*plan));
  // Counted as the cells will carry them: the trunk's switches that change
  // something, and the grid's own.
  int switches = plan->switch_prompt.empty() ? 0 : 1;
  size_t bytes = 0;
  if (plan->text && !plan->switch_prompt.empty()) {
    // With the negative prompt it carries: its own, else the grid's.
    bytes = plan->switch_prompt.size() + (plan->switch_negative_prompt.empty()
                                              ? plan->negative_prompt.size()
                                              : plan->switch_negative_prompt.size());
  }
  for (const Segment& segment : plan->trunk.segments) {
    if (!segment.conditioning) continue;
    ++switches;
    bytes += segment.conditioning->prompt.size() + segment.conditioning->negative_prompt.size();
  }
  if (switches > kMaxCellSwitches) {
    return Invalid(absl::StrCat("trunk.segments: a cell may switch its prompt at most ",
                                kMaxCellSwitches, " times; this trunk's cells would ", switches,
                                " times (the trunk's switches",
                                plan->switch_prompt.empty() ? ")" : ", and switch_prompt's)"));
  }
  if (bytes > kMaxSwitchBytes) {
    return Invalid(absl::StrCat("trunk.segments: the prompts a cell would switch to hold ", bytes,
                                " bytes, more than ", kMaxSwitchBytes));
  }
  return absl::OkStatus();
}

// Whether the forward pass reads `a` and `b` alike at the plan's guidance.
bool ReadAlike(const SegmentConditioning& a, const SegmentConditioning& b,
               const GridPlanSpec& plan) {
  const bool prompt = plan.text ? a.prompt == b.prompt : a.class_index == b.class_index;
  const bool negative = !plan.text || a.negative_prompt == b.negative_prompt;
  return (prompt || !GuidanceReadsPrompt(plan.guidance)) &&
         (negative || !GuidanceReadsNegativePrompt(plan.guidance));
}

// Whether `switched` reads alike every prompt a promoted trunk switches to:
// a switch back to the request's prompt, after the trunk's own switch to
// another, makes the rows past that one differ (a row's switch holds to the
// end), so it is seen though it reads as the request's prompt.
bool ReadsAlikeTheTrunksSwitches(const SegmentConditioning& switched, const GridPlanSpec& plan) {
  return std::all_of(plan.trunk.segments.begin(), plan.trunk.segments.end(),
                     [&](const Segment& segment) {
                       return !segment.conditioning ||
                              ReadAlike(switched, *segment.conditioning, plan);
                     });
}

// Whether `cell` is conditioned otherwise than `trunk` at a step in
// [from, steps).
bool ConditionedOtherwise(const Path& cell, const Path& trunk, int from, int steps) {
  for (int i = from; i < steps; ++i) {
    const SegmentConditioning* mine = cell.ConditioningAt(i);
    const SegmentConditioning* theirs = trunk.ConditioningAt(i);
    if ((mine == nullptr) != (theirs == nullptr) || (mine && *mine != *theirs)) return true;
  }
  return false;
}

// Each row's cells and what the grid costs.
void PlanRows(const std::vector<int>& branch_steps, const v1::ModelInfo& model,
              GridPlanSpec* plan) {
  const SegmentConditioning base = RequestConditioning(*plan);
  std::optional<SegmentConditioning> switched = SwitchConditioning(*plan, model);
  // A switch the forward pass cannot see is none: its cells are the plain
  // grid's (the trunk itself, with trunk noise) and cost nothing beyond it.
  if (plan->switch_unseen) switched = base;
  plan->model_evals = plan->steps;
  for (int k : branch_steps) {
    PlannedRow row;
    row.branch_step = k;
    row.timestep = TimestepAfter(*plan, k);
    for (int c = 0; c < plan->branches; ++c) {
      const Path cell =
          plan->trunk_noise
              ? plan->trunk.SwitchedAt(k, *switched)
              : plan->trunk.BranchAt(k, BranchNoiseSeed(plan->trunk, k, c), switched);
      row.cells.push_back(cell.Canonical(base));
      // A cell that is the trunk (a promoted cell in its own row, a switch to
      // the prompt in force) costs nothing: the executor does not run it.
      if (row.cells.back() != plan->trunk) plan->model_evals += plan->steps - k;
    }
    row.switches = SwitchSeen(*plan) && ConditionedOtherwise(row.cells[0], plan->trunk, k,
                                                             plan->steps);
    plan->rows.push_back(std::move(row));
  }
  plan->from_scratch_evals =
      (1 + static_cast<int64_t>(plan->rows.size()) * plan->branches) * plan->steps;
}

// SDXL-style size conditioning: the request's, its zeros the model's
// defaults, for a model that takes it (ModelInfo.default_size). A size of
// zeros asks for the defaults only, so any model takes it, as the denoiser
// does.
absl::Status PlanSize(const v1::GridRequest& request, const v1::ModelInfo& model,
                      GridPlanSpec* plan) {
  if (!model.has_default_size()) {
    if (!(SizeFromProto(request.size()) == SizeConditioning())) {
      return Invalid(absl::StrCat("size: ", model.name(), " takes no size conditioning"));
    }
    return absl::OkStatus();
  }
  const SizeConditioning size = SizeFromProto(request.size());
  for (const auto& [name, value] : size.Fields()) {
    if (value < 0 || value > SizeConditioning::kMaxPixels) {
      return Invalid(absl::StrCat("size.", name, " must be in [0, ", SizeConditioning::kMaxPixels,
                                  "], got ", value));
    }
  }
  plan->size_ids = true;
  plan->size = size.WithDefaults(SizeFromProto(model.default_size()));
  return absl::OkStatus();
}

// The trunk streams every branch step (0 gives x_T, for the trajectory
// strip) and checkpoints.
void PlanCaptures(const std::vector<int>& branch_steps, const PlanLimits& limits,
                  GridPlanSpec* plan) {
  for (int s = 0; s < plan->steps; ++s) {
    const bool is_branch = std::binary_search(branch_steps.begin(), branch_steps.end(), s);
    const bool is_checkpoint = limits.checkpoint_every > 0 && s % limits.checkpoint_every == 0;
    if (is_branch || is_checkpoint) plan->trunk_captures.push_back(s);
  }
}

// A branch differs from its trunk by the noise added after its branch step,
// or by a switch the model reads: with neither, every cell would be its
// trunk, run and paid for again. A promoted trunk's own switches change
// nothing here (a branch keeps them, Path::BranchAt). With the trunk's noise
// an unseen switch's cells are the trunk, and cost nothing. (Rows a preset
// makes never sit at a last step without noise.)
absl::Status CheckBranchesCanDiffer(const GridPlanSpec& plan, const std::vector<int>& branch_steps) {
  if (plan.trunk_noise) return absl::OkStatus();
  const bool prompt_changes = SwitchSeen(plan);
  const std::string unseen =
      plan.switch_unseen ? " (the switch changes nothing this model reads at this guidance)" : "";
  if (plan.eta == 0.0f && !prompt_changes) {
    return Invalid(absl::StrCat("eta: 0 adds no noise at any step, so every branch would be its "
                                "trunk",
                                unseen, "; give eta above 0 (1 is usual), or a switch_prompt",
                                // It said "or a switch_prompt" to a request that gave one.
                                plan.switch_unseen ? " the model reads" : ""));
  }
  // A prompt makes a row differ from the trunk, but not its branches from
  // each other: without noise they are one trajectory, run and paid for again.
  if (plan.eta == 0.0f && plan.branches != 1) {
    return Invalid(absl::StrCat("branches: eta 0 adds no noise, so every branch of a row is the "
                                "same trajectory; ask for 1, got ",
                                plan.branches));
  }
  if (prompt_changes) return absl::OkStatus();
  // Branch steps are sorted and distinct: only the last can be the last step.
  if (!plan.last_step_adds_noise && branch_steps.back() == plan.steps - 1) {
    return Invalid(absl::StrCat("branch_steps[", branch_steps.size() - 1,
                                "]: ", NoiselessLastStepSampler(plan),
                                " adds no noise at its last step (", plan.steps - 1,
                                "), so branches from there would be the trunk", unseen,
                                "; branch earlier"));
  }
  return absl::OkStatus();
}

// Whether a row's branches can differ from its trunk though the grid's do:
// not one past a promoted trunk's own switch to the switch prompt where no
// noise is added after the branch step (eta 0, a noiseless last step). With
// the trunk's noise such a cell is the trunk, and costs nothing.
bool RowCanDiffer(const GridPlanSpec& plan, const PlannedRow& row) {
  const bool noiseless =
      plan.eta == 0.0f || (!plan.last_step_adds_noise && row.branch_step == plan.steps - 1);
  return plan.trunk_noise || row.switches || !noiseless;
}

// The rows that can differ: a row asked for that cannot is refused, naming
// it; a preset's is left out, as its rows at a last step without noise are
// (every one left out: refused).
absl::Status KeepRowsThatCanDiffer(const v1::GridRequest& request, const v1::ModelInfo& model,
                                   GridPlanSpec* plan, std::vector<int>* branch_steps) {
  std::vector<int> kept;
  std::optional<size_t> first_not;
  for (size_t i = 0; i < plan->rows.size(); ++i) {
    if (RowCanDiffer(*plan, plan->rows[i])) {
      kept.push_back(plan->rows[i].branch_step);
    } else if (!first_not) {
      first_not = i;
    }
  }
  if (!first_not) return absl::OkStatus();
  const bool asked = request.branch_steps_size() > 0;
  if (asked || kept.empty()) {
    return Invalid(absl::StrCat(
        asked ? absl::StrCat("branch_steps[", *first_not, "]") : "branch_steps (the preset's rows)",
        ": the promoted trunk is conditioned on the switch prompt from step ",
        plan->rows[*first_not].branch_step, " on already, and no noise is added after it (",
        plan->eta == 0.0f ? "eta 0" : NoiselessLastStepSampler(*plan),
        "), so its branches would be the trunk; branch before the trunk's switch"));
  }
  *branch_steps = std::move(kept);
  plan->rows.clear();
  PlanRows(*branch_steps, model, plan);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GridPlanSpec> PlanGrid(const v1::GridRequest& request, const v1::ModelInfo& model,
                                      const PlanLimits& limits, bool switch_unseen) {
  RETURN_IF_ERROR(CheckFreeText(request));
  ASSIGN_OR_RETURN(const Preset preset, FindPreset(request.preset()));
  GridPlanSpec plan;
  RETURN_IF_ERROR(PlanConditioning(request, model, &plan));
  RETURN_IF_ERROR(PlanSwitch(request, model, &plan));
  RETURN_IF_ERROR(PlanSampler(request, model, preset, limits, &plan));
  RETURN_IF_ERROR(PlanTrunk(request, model, &plan));
  // Before the rows: an unseen switch plans as none, its rows included.
  if (const std::optional<SegmentConditioning> switched = SwitchConditioning(plan, model)) {
    plan.switch_unseen = (switch_unseen || ReadAlike(*switched, RequestConditioning(plan), plan)) &&
                         ReadsAlikeTheTrunksSwitches(*switched, plan);
  }
  RETURN_IF_ERROR(PlanSize(request, model, &plan));
  RETURN_IF_ERROR(PlanColumns(request, preset, limits, &plan));
  ASSIGN_OR_RETURN(std::vector<int> branch_steps,
                   ChooseBranchSteps(request, preset, plan, limits));
  RETURN_IF_ERROR(CheckBranchesCanDiffer(plan, branch_steps));
  PlanRows(branch_steps, model, &plan);
  RETURN_IF_ERROR(KeepRowsThatCanDiffer(request, model, &plan, &branch_steps));
  PlanCaptures(branch_steps, limits, &plan);
  return plan;
}

void PlanToProto(const GridPlanSpec& plan, v1::GridPlan* out) {
  out->set_model(plan.model);
  out->set_prompt(plan.prompt);
  out->set_negative_prompt(plan.negative_prompt);
  out->set_prompt_tokens_dropped(plan.prompt_tokens_dropped);
  out->set_negative_prompt_tokens_dropped(plan.negative_prompt_tokens_dropped);
  out->set_switch_prompt_tokens_dropped(plan.switch_prompt_tokens_dropped);
  out->set_switch_negative_prompt_tokens_dropped(plan.switch_negative_prompt_tokens_dropped);
  for (const std::string& word : plan.unknown_words) out->add_unknown_words(word);
  out->set_switch_prompt(plan.switch_prompt);
  out->set_switch_negative_prompt(plan.switch_negative_prompt);
  out->set_switch_unseen(plan.switch_unseen);
  for (const PlannedRow& row : plan.rows) out->add_switching_rows(row.switches);
  out->set_branch_noise(plan.trunk_noise ? v1::BRANCH_NOISE_TRUNK : v1::BRANCH_NOISE_NEW);
  v1::SamplerConfig* s = out->mutable_sampler();
  s->set_steps(plan.steps);
  s->set_eta(plan.eta);
  s->set_guidance(plan.guidance);
  s->set_spacing(SpacingToProto(plan.spacing));
  s->set_sampler(SamplerToProto(plan.sampler));
  if (plan.size_ids) SizeToProto(plan.size, out->mutable_size());
  PathToProto(plan.trunk, out->mutable_trunk());
  for (const PlannedRow& row : plan.rows) {
    out->add_branch_steps(row.branch_step);
    out->add_timesteps(row.timestep);
  }
  out->set_branches(plan.branches);
  out->set_model_evals(plan.model_evals);
  out->set_from_scratch_evals(plan.from_scratch_evals);
}

}  // namespace dgrid
