// Text contexts (the text encoder's output for a prompt) by the prompt's
// padded token ids, least recently used out first. Bounded by entries: each
// context has the encoder's fixed size. Not thread-safe: the batcher's thread
// alone uses it.
//
//   ContextCache cache(256);
//   if (ContextCache::Context known = cache.Find(ids)) { ... *known ... }
//   cache.Put(ids, std::make_shared<const std::vector<float>>(encoded));
#ifndef DGRID_DENOISER_SERVICE_ENGINE_CONTEXT_CACHE_H_
#define DGRID_DENOISER_SERVICE_ENGINE_CONTEXT_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dgrid {

class ContextCache {
 public:
  using Context = std::shared_ptr<const std::vector<float>>;

  // capacity 0 keeps nothing.
  explicit ContextCache(size_t capacity) : capacity_(capacity) {}

  // The context of `ids`, now the most recently used; nullptr when absent.
  Context Find(const std::vector<int64_t>& ids);
  // Keeps `context` for `ids` (a known one stays as it is), dropping the
  // least recently used past the capacity.
  void Put(const std::vector<int64_t>& ids, Context context);
  size_t size() const { return lru_.size(); }

 private:
  using Lru = std::list<std::pair<std::string, Context>>;
  static std::string Key(const std::vector<int64_t>& ids);

  const size_t capacity_;
  Lru lru_;  // front: the most recent
  std::unordered_map<std::string, Lru::iterator> index_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_ENGINE_CONTEXT_CACHE_H_
