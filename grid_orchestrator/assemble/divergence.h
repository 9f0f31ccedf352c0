// Divergence of a grid row: how far apart the branches that left the trunk at
// the same step ended up, and how far they ended from the trunk's own final
// image. Early branch steps should diverge more than late ones; that is what
// the grid is for, and these numbers make it measurable.
//
//   row.divergence = MeanPairwiseDistance(row.cells);
//   row.divergence_to_trunk = MeanDistanceTo(trunk_final, row.cells);
//
// Protobuf-free and torch-free.
#ifndef DGRID_GRID_ORCHESTRATOR_ASSEMBLE_DIVERGENCE_H_
#define DGRID_GRID_ORCHESTRATOR_ASSEMBLE_DIVERGENCE_H_

#include <vector>

#include "grid_orchestrator/assemble/picture.h"

namespace dgrid {

// Root-mean-square per-pixel distance between two same-size pictures, with
// pixels mapped to [0, 1]. 0 for identical pictures, 1 for black vs white.
// A grey picture compares with an RGB one as if grey in every channel. NaN if
// either is empty or their width or height differ.
double PictureDistance(const Picture& a, const Picture& b);

// Mean of PictureDistance over all unordered pairs (0 with fewer than 2).
// Empty pictures (cells not done yet) are left out.
double MeanPairwiseDistance(const std::vector<Picture>& pictures);

// Mean of PictureDistance(reference, p) over the pictures (0 if none).
// Empty pictures are left out, and those whose `leave_out` entry is set (a
// promoted grid's cell that is its trunk); NaN if the reference is empty and
// any is not.
double MeanDistanceTo(const Picture& reference, const std::vector<Picture>& pictures,
                      const std::vector<bool>& leave_out = {});

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_ASSEMBLE_DIVERGENCE_H_
