#include "denoiser_service/engine/batch_choice.h"

#include <algorithm>
#include <numeric>

namespace dgrid {

const std::vector<size_t>& BatchChoice::Choose(absl::Span<const BatchCandidate> candidates,
                                               int max_batch) {
  // The first seen of a key is its oldest: candidates are in arrival order.
  key_order_.clear();
  for (const BatchCandidate& c : candidates) key_order_.try_emplace(c.key, c.rank, c.arrival);
  order_.resize(candidates.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  if (key_order_.size() > 1) {
    std::stable_sort(order_.begin(), order_.end(), [&](size_t l, size_t r) {
      return key_order_.at(candidates[l].key) < key_order_.at(candidates[r].key);
    });
  }
  chosen_.clear();
  int rows = 0;
  for (size_t i : order_) {
    if (rows >= max_batch) break;
    if (rows + candidates[i].rows > max_batch && !chosen_.empty()) continue;
    chosen_.push_back(i);
    rows += candidates[i].rows;
  }
  std::sort(chosen_.begin(), chosen_.end());
  return chosen_;
}

}  // namespace dgrid
