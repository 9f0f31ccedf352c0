#include "denoiser_service/engine/context_cache.h"

namespace dgrid {

ContextCache::Context ContextCache::Find(const std::vector<int64_t>& ids) {
  auto it = index_.find(Key(ids));
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void ContextCache::Put(const std::vector<int64_t>& ids, Context context) {
  if (capacity_ == 0) return;
  std::string key = Key(ids);
  if (index_.count(key)) return;
  lru_.emplace_front(std::move(key), std::move(context));
  index_[lru_.front().first] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

std::string ContextCache::Key(const std::vector<int64_t>& ids) {
  return std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int64_t));
}

}  // namespace dgrid
