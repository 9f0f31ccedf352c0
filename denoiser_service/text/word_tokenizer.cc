#include "denoiser_service/text/word_tokenizer.h"

#include <re2/re2.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "denoiser_service/text/cleanup.h"
#include "denoiser_service/text/vocab_files.h"

namespace dgrid {
namespace {

// CLIP's pattern without its special cases: runs of letters, of digits, or
// of other characters that are not spaces.
constexpr char kWordPattern[] = R"(\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+)";

class WordTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const TokenizerSpec& spec) {
    ASSIGN_OR_RETURN(std::vector<std::string> words, ReadWordList(spec.vocab_path));
    const auto vocab_size = static_cast<int64_t>(words.size());
    std::unique_ptr<WordTokenizer> tokenizer(new WordTokenizer(spec, vocab_size));
    if (!tokenizer->pattern_.ok()) {
      return absl::InternalError(absl::StrCat("words pattern: ", tokenizer->pattern_.error()));
    }
    tokenizer->ids_.reserve(words.size());
    for (int64_t id = 0; id < vocab_size; ++id) {
      std::string& word = words[id];
      if (word.empty()) continue;  // a placeholder line keeps the numbering
      const auto [it, inserted] = tokenizer->ids_.try_emplace(std::move(word), id);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(spec.vocab_path, ":", id + 1, ": word \"",
                                                       absl::CHexEscape(it->first),
                                                       "\" is also on line ", it->second + 1));
      }
    }
    return std::unique_ptr<Tokenizer>(std::move(tokenizer));
  }

  Tokens Encode(absl::string_view text) const override {
    const std::string clean = ToLowerCase(CollapseWhitespace(NormalizeNfc(text)));
    const re2::StringPiece input(clean.data(), clean.size());
    std::vector<int64_t> content;
    std::vector<std::pair<size_t, std::string>> unknown;  // position in content, word
    re2::StringPiece word;
    for (size_t pos = 0;
         pos < input.size() && pattern_.Match(input, pos, input.size(), RE2::UNANCHORED, &word, 1);
         pos = word.end() - input.begin()) {
      const absl::string_view text(word.data(), word.size());
      const auto it = ids_.find(text);
      if (it == ids_.end()) unknown.emplace_back(content.size(), std::string(text));
      content.push_back(it != ids_.end() ? it->second : spec().unk_id);
    }
    const size_t words = content.size();
    Tokens tokens = Frame(std::move(content));
    const size_t kept = words - static_cast<size_t>(tokens.dropped);
    for (auto& [position, text] : unknown) {
      if (position < kept && std::find(tokens.unknown.begin(), tokens.unknown.end(), text) ==
                                 tokens.unknown.end()) {
        tokens.unknown.push_back(std::move(text));
      }
    }
    return tokens;
  }

 private:
  WordTokenizer(const TokenizerSpec& spec, int64_t vocab_size)
      : Tokenizer(spec, vocab_size), pattern_(kWordPattern) {}

  RE2 pattern_;
  absl::flat_hash_map<std::string, int64_t> ids_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadWordTokenizer(const TokenizerSpec& spec) {
  return WordTokenizer::Load(spec);
}

}  // namespace dgrid
