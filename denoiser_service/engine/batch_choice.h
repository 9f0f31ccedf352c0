// The batcher's fairness policy: which trajectories ride the next forward
// pass. A pure function of the candidates (no model, no threads), so that
// tests reach it directly; the batcher keeps one BatchChoice to reuse its
// buffers across iterations.
//
//   BatchChoice choice;
//   std::vector<BatchCandidate> candidates = {
//       {/*key=*/1, /*rank=*/4000, /*arrival=*/0, /*rows=*/2},   // a large grid
//       {/*key=*/2, /*rank=*/10, /*arrival=*/1, /*rows=*/2}};    // a small one
//   const std::vector<size_t>& chosen = choice.Choose(candidates, /*max_batch=*/2);
//   // chosen == {1}: the small grid's trajectory goes first.
#ifndef DGRID_DENOISER_SERVICE_ENGINE_BATCH_CHOICE_H_
#define DGRID_DENOISER_SERVICE_ENGINE_BATCH_CHOICE_H_

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace dgrid {

// One active trajectory, as the policy sees it. Candidates come in arrival
// order (oldest first).
struct BatchCandidate {
  uint64_t key = 0;      // its tenant (a grid)
  uint64_t rank = 0;     // the tenant's rank: lower goes first
  uint64_t arrival = 0;  // when its key's first run still here was admitted
  int rows = 1;          // forward rows: 2 when guided
};

class BatchChoice {
 public:
  // Orders the candidates across keys: lower rank first (the orchestrator
  // ranks a grid by its planned evaluations: shortest job first), equal
  // ranks in the order their keys arrived (so equal grids finish one after
  // another, not all slowly together), and oldest first within a key (which
  // keeps trunks, submitted before their branches, on the critical path). A
  // key's rank and arrival are those of its oldest candidate. Takes them in
  // that order while their rows fit in max_batch; a guided one that does not
  // fit is passed over for a later, smaller one, but the first always goes
  // in. Returns the chosen indices in arrival order (the results do not
  // depend on it, but one key's batches stay as they were before ranks).
  const std::vector<size_t>& Choose(absl::Span<const BatchCandidate> candidates, int max_batch);

  // The distinct keys of the last Choose's candidates.
  size_t keys() const { return key_order_.size(); }

 private:
  std::unordered_map<uint64_t, std::pair<uint64_t, uint64_t>> key_order_;
  std::vector<size_t> order_, chosen_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_ENGINE_BATCH_CHOICE_H_
