// The grid figure: everything the orchestrator has gathered for one grid
// (trunk, rows of branch finals, trajectory previews, divergence), drawn with
// Cairo into the PNG that a user looks at first.
//
//   GridFigure figure;
//   figure.title = "fashion-mnist · prompt: sneaker";
//   figure.subtitle = "seed 7 · eta 1 · 50 steps · guidance 2";
//   figure.trunk_final = trunk;
//   GridFigure::Row& row = figure.rows.emplace_back();
//   row.branch_step = 10;
//   row.timestep = 801;
//   row.cells = branch_finals;  // empty Pictures for cells still running
//   row.divergence = MeanPairwiseDistance(row.cells);
//   ASSIGN_OR_RETURN(std::string png, DrawGridPng(figure));
//
// Protobuf-free and torch-free; the only drawing dependency is Cairo, with
// its toy text API and the DejaVu Sans font.
#ifndef DGRID_GRID_ORCHESTRATOR_ASSEMBLE_GRID_FIGURE_H_
#define DGRID_GRID_ORCHESTRATOR_ASSEMBLE_GRID_FIGURE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bundle_manifest.h"
#include "grid_orchestrator/assemble/divergence.h"
#include "grid_orchestrator/assemble/picture.h"

namespace dgrid {

struct GridFigure {
  std::string title;     // e.g. "fashion-mnist · prompt: sneaker"
  std::string subtitle;  // e.g. "seed 7 · eta 1 · 50 steps · guidance 2"
  Picture trunk_final;   // the trunk's final image
  struct Row {
    int branch_step = 0;         // branches leave the trunk after this many steps
    int timestep = 0;            // the diffusion timestep t at that point
    Picture trunk_xt;            // trunk's noisy latent decoded at branch_step (trajectory strip)
    Picture trunk_x0;            // trunk's x0 prediction at branch_step (trajectory strip)
    std::vector<Picture> cells;  // branch finals; empty Pictures are drawn as placeholders
    double divergence = 0;       // mean pairwise distance among the row's branches
    double divergence_to_trunk = 0;  // mean distance of the branches to the trunk final
    // Whether the row's branches switch to `switch_to` (not where a promoted
    // trunk has switched to it already and switches no more).
    bool switches = true;
  };
  std::vector<Row> rows;
  int scale = 4;  // nearest-neighbour upscale factor of every picture, 1..32
  // A picture that `scale` would make larger than this a side is drawn
  // smaller: at the largest whole factor that fits, or shrunk to it
  // (smoothly) when even its own size is larger. 0: no bound.
  int max_picture_side = 0;
  // A prompt switch at each row's branch step: rows that switch are
  // labelled "→ <switch_to> after step k" (the text is cut to 24 bytes, on
  // a character boundary).
  std::string switch_to;
};

// What the figure's title and subtitle say of a grid's request.
struct FigureCaption {
  std::string model;
  std::string prompt;           // "" : unconditional
  std::string negative_prompt;  // "" : none
  uint64_t seed = 0;
  float eta = 0;
  int steps = 0;
  float guidance = 0;
  std::string switch_prompt;  // "" : no prompt switch
  bool trunk_noise = false;
  Sampler sampler = Sampler::kDdim;  // named when not DDIM
  // A promoted switched trunk's own switches, e.g. "red apple after step 5";
  // "" : the trunk keeps the prompt.
  std::string trunk_switches;
  // The switch changes nothing the model reads (GridPlan.switch_unseen):
  // the rows do not switch.
  bool switch_unseen = false;
  std::string switch_negative_prompt;  // "" : the grid's
  Spacing spacing = Spacing::kLeading;  // named when not leading
};

// Sets figure->title, subtitle and switch_to from `caption`, prompts cut to
// 60 bytes (on a character boundary) with "...":
//   "emoji · prompt: grinning face, noto · negative: blurry"
//   "emoji · prompt: grinning face, noto · trunk: red apple after step 5"
//   "seed 7 · eta 1 · 50 steps · guidance 4 · branches switch to: red apple (trunk noise)"
//   "seed 7 · eta 1 · 50 steps · guidance 4 · branches switch to: rocket,
//    negative “red apple” (trunk noise)"
//   "seed 7 · eta 1 · 50 steps · guidance 0 · switch to: trouser changes nothing the model
//    reads"
//   "seed 7 · Euler ancestral · eta 1 · 50 steps · guidance 4"
//   "seed 7 · Euler ancestral · eta 1 · 50 steps (linspace) · guidance 4"
void SetCaption(const FigureCaption& caption, GridFigure* figure);

// Renders the whole grid to PNG bytes (RGB, white background).
//
// Layout, left to right: row labels ("after step k", "t = T"); the
// trajectory strip (the trunk's x_t and x0 at that step); a rule; the branch
// cells; the row's divergence numbers; then a right-hand column with the
// trunk's final image on top and the "divergence by branch step" plot (both
// series, with a legend) below it. A header holds the title and subtitle.
// Rows run top to bottom in increasing branch_step, whatever their order in
// `figure.rows`. Pictures are scaled up by `scale` with nearest neighbour, so
// every source pixel is an exact scale x scale block. Pictures of different
// sizes are centred in a slot as large as the largest.
//
// Returns INVALID_ARGUMENT for inconsistent inputs (a pixel buffer that does
// not match width x height x channels, channels other than 1 or 3, a scale out
// of range, a figure too large to draw), naming the row and cell at fault by
// their index in `figure.rows` and `row.cells`.
absl::StatusOr<std::string> DrawGridPng(const GridFigure& figure);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_ASSEMBLE_GRID_FIGURE_H_
