// A bounded LRU cache of trajectory results, keyed by everything that
// determines them: model, sampler config, conditioning, and the path prefix
// up to the step. Because a path determines its trajectory, entries never go
// stale: repeated and promoted requests reuse them (docs/ARCHITECTURE.md,
// "The prefix cache").
//
//   PrefixCache cache(256 << 20);
//   const std::string key = PrefixCache::CaptureKey(sampler_key, trunk, 20);
//   if (auto hit = cache.Find(key)) { ... hit->latent ... }
//   cache.Put(key, entry);
#ifndef DGRID_GRID_ORCHESTRATOR_EXECUTE_PREFIX_CACHE_H_
#define DGRID_GRID_ORCHESTRATOR_EXECUTE_PREFIX_CACHE_H_

#include <list>
#include <optional>
#include <string>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "common/path.h"
#include "dgrid/v1/tensor.pb.h"
#include "grid_orchestrator/plan/grid_plan.h"

namespace dgrid {

struct CacheEntry {
  // The latent (a capture) or the final latent (a cell).
  v1::Tensor latent;
  // Decoded image of the latent, and of the x0 prediction when there is one.
  std::string png;
  std::string x0_png;
};

class PrefixCache {
 public:
  explicit PrefixCache(size_t max_bytes);

  std::optional<CacheEntry> Find(const std::string& key);
  void Put(const std::string& key, CacheEntry entry);

  size_t bytes() const;
  size_t entries() const;

  // What determines a trajectory besides its path. Values longer than a
  // digest (prompts) go in as their SHA-256, so a key stays short whatever
  // the prompt.
  static std::string SamplerKey(const GridPlanSpec& plan);
  // The latent at `step` of `path` depends on the path's segments below step
  // (Path::SegmentsBelow) and on its init seed.
  static std::string CaptureKey(const std::string& sampler_key, const Path& path, int step);
  // A finished trajectory.
  static std::string FinalKey(const std::string& sampler_key, const Path& path);

 private:
  using Lru = std::list<std::pair<std::string, CacheEntry>>;
  // What an entry holds: its key once (the index points into the list's
  // copy), the payload, and an allowance for the nodes.
  static size_t SizeOf(const std::string& key, const CacheEntry& entry);

  const size_t max_bytes_;
  // std::mutex, not absl::Mutex: Debian's abseil is not built for TSan,
  // which then could not check this cache.
  mutable std::mutex mu_;
  Lru lru_;  // guarded by mu_; front = most recent
  // Views of the keys in lru_, whose nodes never move.
  absl::flat_hash_map<absl::string_view, Lru::iterator> index_;  // guarded by mu_
  size_t bytes_ = 0;                                            // guarded by mu_
};

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_EXECUTE_PREFIX_CACHE_H_
