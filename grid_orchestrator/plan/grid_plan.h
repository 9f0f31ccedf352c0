// Plans a grid: from a GridRequest and the model's description to the trunk
// path, the rows (branch step, timestep, one path per cell) and the cost in
// model evaluations. Pure functions: no I/O, same input, same plan.
//
//   ASSIGN_OR_RETURN(GridPlanSpec plan, PlanGrid(request, model_info, limits));
//   plan.rows[2].cells[3];   // the path of row 2, column 3
//   plan.model_evals;        // steps + sum over rows of branches * (steps - k),
//                            // less cells that are the trunk
//
// Seeds: the trunk's noise seed derives from the request seed; the seed of
// cell (row r, column c) derives from the trunk path's prefix below the row's
// branch step and from c. So a promoted cell, used as trunk, gets the same
// cells as before in the rows above its own branch step.
#ifndef DGRID_GRID_ORCHESTRATOR_PLAN_GRID_PLAN_H_
#define DGRID_GRID_ORCHESTRATOR_PLAN_GRID_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bundle_manifest.h"
#include "common/path.h"
#include "common/wire.h"
#include "dgrid/v1/orchestrator.pb.h"

namespace dgrid {

struct PlanLimits {
  int max_rows = 16;
  int max_branches = 16;
  int max_steps = 1000;
  // rows x branches x steps, the work one grid may ask for.
  int64_t max_cell_steps = 40000;
  // The trunk also streams its latent every this many steps, so that a trunk
  // whose replica dies resumes close to where it was.
  int checkpoint_every = 10;
};

struct PlannedRow {
  int branch_step = 0;
  // The last timestep the trunk ran before the branches leave it.
  int timestep = 0;
  std::vector<Path> cells;
  // Whether the cells are conditioned otherwise than the trunk from the
  // branch step on: a seen switch, unless a promoted trunk has switched to
  // the same prompt already and switches no more.
  bool switches = false;
};

// What a grid's images are for. kFigure: everything the grid figure shows
// (the trajectory strip's x_t and x0 at each row, the cells, the grid PNG).
// kCellsOnly (decision curves, which judge cells against the trunk): the
// trunk's final and the cells alone; the trunk's captures come without
// images and no grid PNG is drawn.
enum class GridImages { kFigure, kCellsOnly };

struct GridPlanSpec {
  std::string model;
  // The version the grid is pinned to: every job runs on replicas that serve
  // exactly this one, and cache keys carry it.
  std::string model_version;
  // The model's latent shape (replica output is checked against it).
  std::vector<int64_t> latent_shape;
  // The model's image shape, [height, width, channels] (replica images are
  // checked against it).
  std::vector<int64_t> image_shape;
  // A class model: prompt is a class name and class_index its index. A text
  // model (text): prompt and negative_prompt are free text.
  bool text = false;
  std::string prompt;
  std::string negative_prompt;
  int64_t class_index = -1;
  // A class model's class names by index (captions name a switch's class).
  std::vector<std::string> class_names;
  // Text models: tokens the denoiser's tokenizer cut off to fit its context.
  int prompt_tokens_dropped = 0;
  int negative_prompt_tokens_dropped = 0;
  int switch_prompt_tokens_dropped = 0;
  int switch_negative_prompt_tokens_dropped = 0;
  // Words of the prompts the model's word vocabulary lacks, each once.
  std::vector<std::string> unknown_words;
  // A prompt switch at each row's branch step (empty switch_prompt: none),
  // and whether the branches keep the trunk's noise.
  std::string switch_prompt;
  std::string switch_negative_prompt;
  // The forward pass reads the switch as the prompt in force (the same class
  // or tokens, or what this guidance does not read): its rows are the plain
  // grid's. The switch prompts stay as asked, for the record.
  bool switch_unseen = false;
  bool trunk_noise = false;
  int steps = 50;
  float eta = 1.0f;
  float guidance = 1.0f;
  Spacing spacing = Spacing::kLeading;
  Sampler sampler = Sampler::kDdim;
  // Whether the sampler adds noise at its last step: not Euler ancestral's,
  // and DDIM's as DdimLastStepAddsNoise says (not to alpha-bar 1, nor from
  // timestep 0). A row there without a switch prompt would be its trunk.
  bool last_step_adds_noise = true;
  // A model with size conditioning (SDXL-style): every trajectory's, the
  // model's defaults filled in.
  bool size_ids = false;
  SizeConditioning size;
  Path trunk;
  int branches = 4;
  std::vector<PlannedRow> rows;
  std::vector<int> timesteps;
  int train_timesteps = 1000;
  // Steps at which the trunk streams its latent: every branch step (0 gives
  // x_T, for the trajectory strip), and checkpoints.
  std::vector<int> trunk_captures;
  int64_t model_evals = 0;
  int64_t from_scratch_evals = 0;
  GridImages images = GridImages::kFigure;
  // A decision curve's trunk: batch work, which queues by design
  // (BranchRequest.batch_work).
  bool batch_work = false;
};

// `switch_unseen`: the caller found the switch to be one the model cannot
// see (GridService: its tokens are the prompt's, or it changes only what the
// guidance does not read); the plan is the plain grid's, the switch kept on
// record. A class model's is found here. A switch that reads otherwise than
// one of a promoted trunk's own switches is seen, whatever the caller found.
absl::StatusOr<GridPlanSpec> PlanGrid(const v1::GridRequest& request, const v1::ModelInfo& model,
                                      const PlanLimits& limits, bool switch_unseen = false);

// The timestep label of "after step k": the last timestep the trunk ran, or
// train_timesteps (pure noise) for k = 0.
int TimestepAfter(const GridPlanSpec& plan, int step);

// The trunk's first noise seed for a request seed.
uint64_t TrunkNoiseSeed(uint64_t seed);
// The noise seed of column `column` of the row branching at `branch_step`.
uint64_t BranchNoiseSeed(const Path& trunk, int branch_step, int column);

// What the request conditions on, in the form a path segment carries it (a
// class model's by index): the base against which paths are canonical.
SegmentConditioning RequestConditioning(const GridPlanSpec& plan);

// Whether the forward pass reads a conditioning's prompt (a class model's
// class), and its negative prompt, at this guidance: guidance 1 runs the
// prompt's row alone and 0 the negative prompt's (the unconditional) row
// alone, as the denoiser does. A switch of only what is not read changes no
// value, so the planner plans it as no switch.
bool GuidanceReadsPrompt(float guidance);
bool GuidanceReadsNegativePrompt(float guidance);

// The plan as it goes on the wire (paths: common/wire.h).
void PlanToProto(const GridPlanSpec& plan, v1::GridPlan* out);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_PLAN_GRID_PLAN_H_
