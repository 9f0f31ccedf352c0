#include "grid_orchestrator/execute/prefix_cache.h"

#include <openssl/sha.h>

#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dgrid {

PrefixCache::PrefixCache(size_t max_bytes) : max_bytes_(max_bytes) {}

size_t PrefixCache::SizeOf(const std::string& key, const CacheEntry& entry) {
  // Payload plus a fixed allowance for the list and map nodes.
  return key.size() + entry.latent.raw_contents().size() + entry.png.size() +
         entry.x0_png.size() + 256;
}

std::optional<CacheEntry> PrefixCache::Find(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

void PrefixCache::Put(const std::string& key, CacheEntry entry) {
  const size_t size = SizeOf(key, entry);
  if (size > max_bytes_) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it != index_.end()) {
    const Lru::iterator node = it->second;
    bytes_ -= SizeOf(node->first, node->second);
    index_.erase(it);
    lru_.erase(node);
  }
  lru_.emplace_front(key, std::move(entry));
  index_[lru_.front().first] = lru_.begin();
  bytes_ += size;
  while (bytes_ > max_bytes_ && !lru_.empty()) {
    auto& [old_key, old_entry] = lru_.back();
    bytes_ -= SizeOf(old_key, old_entry);
    index_.erase(absl::string_view(old_key));
    lru_.pop_back();
  }
}

size_t PrefixCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

size_t PrefixCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

namespace {

// Strings go in with their length, so no value can run into the next field;
// one longer than its digest goes in as the digest ("#" and 64 hex digits,
// which no length-prefixed value starts with).
void AppendField(std::string* key, absl::string_view name, absl::string_view value) {
  constexpr size_t kDigestBytes = 64;
  if (value.size() <= kDigestBytes) {
    absl::StrAppend(key, name, "=", value.size(), ":", value, "|");
    return;
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(value.data()), value.size(), digest);
  absl::StrAppend(key, name, "=#",
                  absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest),
                                                           sizeof(digest))),
                  "|");
}

// Floats go in as their bit pattern: exact, where "%g" would merge values
// that differ past the sixth digit.
std::string FloatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return absl::StrCat(absl::Hex(bits, absl::kZeroPad8));
}

}  // namespace

std::string PrefixCache::SamplerKey(const GridPlanSpec& plan) {
  std::string key;
  AppendField(&key, "model", plan.model);
  AppendField(&key, "version", plan.model_version);
  AppendField(&key, "steps", absl::StrCat(plan.steps));
  AppendField(&key, "eta", FloatBits(plan.eta));
  AppendField(&key, "spacing", absl::StrCat(static_cast<int>(plan.spacing)));
  AppendField(&key, "sampler", SamplerName(plan.sampler));
  AppendField(&key, "g", FloatBits(plan.guidance));
  AppendField(&key, "class", absl::StrCat(plan.class_index));
  AppendField(&key, "prompt", plan.prompt);
  AppendField(&key, "negative", plan.negative_prompt);
  if (plan.size_ids) {
    AppendField(&key, "size",
                absl::StrJoin(plan.size.Fields(), ",", [](std::string* out, const auto& field) {
                  absl::StrAppend(out, field.second);
                }));
  }
  return key;
}

std::string PrefixCache::CaptureKey(const std::string& sampler_key, const Path& path, int step) {
  std::string key = absl::StrCat(sampler_key, "x", path.init_seed);
  for (const Segment& s : path.SegmentsBelow(step)) {
    absl::StrAppend(&key, "|", s.from_step, ":", s.noise_seed);
    if (s.conditioning) {
      // A prompt switch: what the latent is conditioned on from here.
      AppendField(&key, "~prompt", s.conditioning->prompt);
      AppendField(&key, "negative", s.conditioning->negative_prompt);
      AppendField(&key, "class", absl::StrCat(s.conditioning->class_index));
    }
  }
  absl::StrAppend(&key, "@", step);
  return key;
}

std::string PrefixCache::FinalKey(const std::string& sampler_key, const Path& path) {
  return absl::StrCat(CaptureKey(sampler_key, path, std::numeric_limits<int>::max()), "final");
}

}  // namespace dgrid
