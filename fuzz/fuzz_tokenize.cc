// Fuzzes the tokenizers on client prompts: any valid UTF-8 a client sends
// as a prompt must encode to ids inside the vocabulary, BOS and EOS framed
// and within max_length, never crash or read out of bounds. Invalid UTF-8
// never reaches them (the servers refuse it first, as here); the servers
// also refuse prompts past their size limit, noncharacters and text that is
// not stream-safe, which this target lets through: it fuzzes a wider set.
//
// The words tokenizer is the emoji bundle's, as its manifest gives it; the CLIP
// tokenizer reads vocab.json and merges.txt from $DGRID_CLIP_DIR (ctest's
// derive_clip_vocab writes them to build/fixtures/clip), when it is set.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/manifest_reader.h"
#include "common/short_text.h"
#include "denoiser_service/text/tokenizer.h"

namespace {

std::vector<std::unique_ptr<dgrid::Tokenizer>>* tokenizers = nullptr;

void Load(const dgrid::TokenizerSpec& spec) {
  auto tokenizer = dgrid::LoadTokenizer(spec);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "fuzz_tokenize: %s\n", tokenizer.status().ToString().c_str());
    std::abort();
  }
  tokenizers->push_back(std::move(*tokenizer));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tokenizers = new std::vector<std::unique_ptr<dgrid::Tokenizer>>();
  const std::string emoji = std::string(DGRID_SOURCE_DIR) + "/models/emoji";
  auto manifest = dgrid::ReadManifest(emoji);
  if (!manifest.ok()) {
    std::fprintf(stderr, "fuzz_tokenize: %s\n", manifest.status().ToString().c_str());
    std::abort();
  }
  Load(dgrid::SpecForBundle(manifest->text.tokenizer, emoji));
  if (const char* clip_dir = std::getenv("DGRID_CLIP_DIR"); clip_dir != nullptr) {
    dgrid::TokenizerSpec clip;
    clip.kind = "clip_bpe";
    clip.vocab_path = std::string(clip_dir) + "/vocab.json";
    clip.merges_path = std::string(clip_dir) + "/merges.txt";
    Load(clip);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  if (!dgrid::IsValidUtf8(text)) return 0;
  for (const auto& tokenizer : *tokenizers) {
    const dgrid::Tokens tokens = tokenizer->Encode(text);
    const dgrid::TokenizerSpec& spec = tokenizer->spec();
    if (tokens.ids.empty() || static_cast<int>(tokens.ids.size()) > tokenizer->max_length() ||
        (spec.bos_id >= 0 && tokens.ids.front() != spec.bos_id) ||
        (spec.eos_id >= 0 && tokens.ids.back() != spec.eos_id)) {
      std::fprintf(stderr, "fuzz_tokenize: %s: %zu ids, badly framed\n", spec.kind.c_str(),
                   tokens.ids.size());
      std::abort();
    }
    for (int64_t id : tokens.ids) {
      if (id < 0 || id >= tokenizer->vocab_size()) {
        std::fprintf(stderr, "fuzz_tokenize: %s: id %lld outside the vocabulary\n",
                     spec.kind.c_str(), static_cast<long long>(id));
        std::abort();
      }
    }
    (void)tokenizer->Padded(tokens);
  }
  return 0;
}
