// Prompt text to token ids for a bundle's text encoder, in C++ so that no
// Python runs at serving time. Two kinds:
//   clip_bpe  CLIP's byte-level BPE, exactly as OpenAI's simple_tokenizer
//             (Stable Diffusion 1.x/2.x), from Hugging Face's vocab.json and
//             merges.txt;
//   words     a word list for small models: one word per line, line k
//             (counting from 0) is id k.
//
//   TokenizerSpec spec;  // the bundle manifest fills it in
//   spec.kind = "clip_bpe";
//   spec.vocab_path = dir + "/vocab.json";
//   spec.merges_path = dir + "/merges.txt";
//   absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(spec);
//   if (!tokenizer.ok()) return tokenizer.status();
//   Tokens tokens = (*tokenizer)->Encode("a photo of a cat");
//   // tokens.ids: 49406 320 1125 539 320 2368 49407, tokens.dropped: 0
//   std::vector<int64_t> row = (*tokenizer)->Padded(tokens);  // 77 ids
//
// A Tokenizer is immutable after loading: Encode may run on any number of
// threads at once. It caches nothing.
#ifndef DGRID_DENOISER_SERVICE_TEXT_TOKENIZER_H_
#define DGRID_DENOISER_SERVICE_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/bundle_manifest.h"

namespace dgrid {

// What a bundle's manifest says about its tokenizer. The defaults are CLIP's.
struct TokenizerSpec {
  std::string kind;         // "clip_bpe" or "words"
  std::string vocab_path;   // clip_bpe: vocab.json; words: the word list
  std::string merges_path;  // clip_bpe: merges.txt; words: unused
  // Special ids; for words, bos_id, eos_id and pad_id may be -1 (none).
  int64_t bos_id = 49406, eos_id = 49407, pad_id = 49407, unk_id = 0;
  int max_length = 77;  // ids per prompt, BOS and EOS included
  // Where these settings were read ("DIR/manifest.json"): their errors name
  // it, as the files' errors name the files. Empty: not said.
  std::string settings_from;
};

// One prompt's ids: BOS, content, EOS, no padding.
struct Tokens {
  std::vector<int64_t> ids;
  int dropped = 0;  // content tokens cut to fit max_length
  // Words kept in ids as unk_id because the vocabulary lacks them, each
  // once, in order (the words kind; CLIP's byte-level BPE has none).
  std::vector<std::string> unknown;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `text` is valid UTF-8 (callers check; invalid bytes would be read as
  // U+FFFD). Truncates to max_length: the last id kept is EOS.
  virtual Tokens Encode(absl::string_view text) const = 0;

  // tokens.ids padded with pad_id to max_length (unpadded if pad_id is -1).
  std::vector<int64_t> Padded(const Tokens& tokens) const;

  const TokenizerSpec& spec() const { return spec_; }
  int max_length() const { return spec_.max_length; }
  // Every id lies in [0, vocab_size()).
  int64_t vocab_size() const { return vocab_size_; }

 protected:
  Tokenizer(TokenizerSpec spec, int64_t vocab_size)
      : spec_(std::move(spec)), vocab_size_(vocab_size) {}

  // BOS, as many content ids as fit, EOS (each when the spec has one).
  Tokens Frame(std::vector<int64_t> content) const;

 private:
  TokenizerSpec spec_;
  int64_t vocab_size_;
};

// Whether `text` may be tokenized, checked before any normalization reads
// it: at most kMaxPromptBytes, well-formed UTF-8 without noncharacters, and
// stream-safe. INVALID_ARGUMENT names `field`. What passes tokenizes in time
// linear in its length (about a millisecond at the limit).
absl::Status CheckPromptText(absl::string_view field, absl::string_view text);

// Reads the spec's files. Errors name the file (and line) that is wrong, or
// the spec field.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const TokenizerSpec& spec);

// A bundle manifest's tokenizer entry (files relative to `bundle_dir`) as a
// spec: the one conversion the engine and the CLI share.
TokenizerSpec SpecForBundle(const TokenizerFiles& files, const std::string& bundle_dir);

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_TEXT_TOKENIZER_H_
