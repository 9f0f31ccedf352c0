#include "denoiser_service/text/clip_bpe_tokenizer.h"

#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "denoiser_service/text/cleanup.h"
#include "denoiser_service/text/vocab_files.h"

namespace dgrid {
namespace {

// simple_tokenizer's pattern: its special tokens, English contractions,
// letter runs, single digits, and runs of anything else but spaces. Python's
// `regex` module runs it with IGNORECASE, which matters for the literals
// ("'ſ" is "'s"), so (?i:...) there. It changes one class membership only:
// U+0345, a combining mark that case-folds to a letter, matches neither
// [\p{L}] nor [^\s\p{L}\p{N}] in Python and is dropped. RE2's (?i) would
// make it a letter instead, so the classes stay case-sensitive and the third
// one names U+0345. RE2's \s is ASCII, which is enough: the clean-up has
// left only ' ' as whitespace.
constexpr char kPiecePattern[] =
    R"((?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|[^\s\p{L}\p{N}\x{345}]+)";

// BPE merges a piece in time quadratic in its length, and the pattern's
// letter runs have none: longer pieces are cut (on character boundaries)
// into pieces of at most this many bytes, each merged on its own. Only a
// "word" longer than any real one tokenizes differently from Python's.
constexpr size_t kMaxPieceBytes = 128;

constexpr absl::string_view kStartOfText = "<|startoftext|>";
constexpr absl::string_view kEndOfText = "<|endoftext|>";
constexpr absl::string_view kEndOfWord = "</w>";

// GPT-2's bytes_to_unicode: the printable Latin-1 bytes stand for
// themselves; the other bytes, in order, for U+0100 upward.
std::array<std::string, 256> ByteSymbols() {
  std::array<std::string, 256> symbols;
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    AppendUtf8(printable ? static_cast<char32_t>(b) : next++, &symbols[b]);
  }
  return symbols;
}

// What ftfy would do is not reproduced. simple_tokenizer first runs
// ftfy.fix_text, a heuristic Python library that cannot be matched here; we
// apply only its last step, NFC. The rest of ftfy repairs broken or unusual
// text (mojibake, curly quotes and ligatures, full-width forms, terminal
// escapes, control characters, at times HTML entities) and leaves other
// well-formed text unchanged, so a prompt with such text may tokenize
// differently from CLIP's Python. The remaining steps are exact:
// html.unescape twice, whitespace collapsed and trimmed, str.lower().
std::string CleanClipText(absl::string_view text) {
  std::string clean = UnescapeHtml(UnescapeHtml(NormalizeNfc(text)));
  return ToLowerCase(CollapseWhitespace(clean));
}

class ClipBpeTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const TokenizerSpec& spec) {
    ASSIGN_OR_RETURN(VocabJson vocab, ReadVocabJson(spec.vocab_path));
    ASSIGN_OR_RETURN(std::vector<MergeRule> merges, ReadMerges(spec.merges_path));
    int64_t vocab_size = 0;
    for (const auto& [token, id] : vocab) vocab_size = std::max(vocab_size, id + 1);
    std::unique_ptr<ClipBpeTokenizer> tokenizer(new ClipBpeTokenizer(spec, vocab_size));
    RETURN_IF_ERROR(tokenizer->Build(vocab, merges));
    return std::unique_ptr<Tokenizer>(std::move(tokenizer));
  }

  Tokens Encode(absl::string_view text) const override {
    const std::string clean = CleanClipText(text);
    const re2::StringPiece input(clean.data(), clean.size());
    std::vector<int64_t> content;
    std::vector<Symbol> word;  // reused: one allocation per prompt, not per piece
    re2::StringPiece piece;
    // Asking for the whole match only lets RE2 answer from its DFA.
    for (size_t pos = 0;
         pos < input.size() && pattern_.Match(input, pos, input.size(), RE2::UNANCHORED, &piece, 1);
         pos = piece.end() - input.begin()) {
      absl::string_view rest(piece.data(), piece.size());
      while (rest.size() > kMaxPieceBytes) {
        size_t cut = kMaxPieceBytes;
        while (cut > 0 && (static_cast<uint8_t>(rest[cut]) & 0xC0) == 0x80) --cut;
        AppendPieceIds(rest.substr(0, cut), &word, &content);
        rest.remove_prefix(cut);
      }
      AppendPieceIds(rest, &word, &content);
    }
    return Frame(std::move(content));
  }

 private:
  // A symbol is a vocabulary token or a piece a merge names; symbols get
  // dense indices so that a merge is looked up by a pair of integers.
  using Symbol = int32_t;
  struct Merge {
    int32_t rank;
    Symbol merged;
  };

  ClipBpeTokenizer(const TokenizerSpec& spec, int64_t vocab_size)
      : Tokenizer(spec, vocab_size), pattern_(kPiecePattern) {}

  static uint64_t PairKey(Symbol left, Symbol right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  absl::Status Build(const VocabJson& vocab, const std::vector<MergeRule>& merges) {
    if (!pattern_.ok())
      return absl::InternalError(absl::StrCat("clip_bpe pattern: ", pattern_.error()));
    absl::flat_hash_map<std::string, Symbol> symbols;
    // A symbol outside the vocabulary (only a malformed merges.txt names one)
    // encodes as unk_id.
    auto intern = [&](std::string text, int64_t id) {
      auto [it, inserted] = symbols.try_emplace(std::move(text), static_cast<Symbol>(ids_.size()));
      if (inserted) ids_.push_back(id);
      return it->second;
    };
    for (const auto& [token, id] : vocab) intern(token, id);
    if (symbols.size() >
        static_cast<size_t>(std::numeric_limits<Symbol>::max()) - 2 * merges.size()) {
      return absl::InvalidArgumentError(absl::StrCat(spec().vocab_path, ": too many tokens"));
    }
    const std::array<std::string, 256> bytes = ByteSymbols();
    for (int b = 0; b < 256; ++b) {
      byte_symbol_[b] = intern(bytes[b], spec().unk_id);
      byte_end_symbol_[b] = intern(absl::StrCat(bytes[b], kEndOfWord), spec().unk_id);
    }
    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const MergeRule& rule = merges[rank];
      const Symbol left = intern(rule.left, spec().unk_id);
      const Symbol right = intern(rule.right, spec().unk_id);
      const Symbol merged = intern(absl::StrCat(rule.left, rule.right), spec().unk_id);
      // A repeated pair takes its later rank, as simple_tokenizer's dict does.
      merges_.insert_or_assign(PairKey(left, right), Merge{static_cast<int32_t>(rank), merged});
    }
    for (const auto& [token, id] : vocab) {
      if (token == kStartOfText) start_of_text_id_ = id;
      if (token == kEndOfText) end_of_text_id_ = id;
    }
    return absl::OkStatus();
  }

  // One piece of the pattern: a special token, or its UTF-8 bytes as byte
  // symbols, "</w>" on the last, merged by rank.
  void AppendPieceIds(absl::string_view piece, std::vector<Symbol>* word,
                      std::vector<int64_t>* ids) const {
    const int64_t special = piece == kStartOfText ? start_of_text_id_
                            : piece == kEndOfText ? end_of_text_id_
                                                  : -1;
    if (special >= 0) {
      ids->push_back(special);
      return;
    }
    word->clear();
    for (size_t i = 0; i < piece.size(); ++i) {
      const auto b = static_cast<uint8_t>(piece[i]);
      word->push_back(i + 1 < piece.size() ? byte_symbol_[b] : byte_end_symbol_[b]);
    }
    MergeByRank(word);
    for (Symbol s : *word) ids->push_back(ids_[s]);
  }

  // simple_tokenizer's bpe(): while some adjacent pair has a merge, take the
  // lowest-ranked one and merge each of its occurrences, left to right.
  void MergeByRank(std::vector<Symbol>* word) const {
    while (word->size() > 1) {
      const Merge* best = nullptr;
      Symbol first = 0, second = 0;
      for (size_t i = 0; i + 1 < word->size(); ++i) {
        const auto it = merges_.find(PairKey((*word)[i], (*word)[i + 1]));
        if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
          best = &it->second;
          first = (*word)[i];
          second = (*word)[i + 1];
        }
      }
      if (best == nullptr) return;
      size_t out = 0;
      for (size_t i = 0; i < word->size(); ++out) {
        if (i + 1 < word->size() && (*word)[i] == first && (*word)[i + 1] == second) {
          (*word)[out] = best->merged;
          i += 2;
        } else {
          (*word)[out] = (*word)[i];
          i += 1;
        }
      }
      word->resize(out);
    }
  }

  RE2 pattern_;
  std::vector<int64_t> ids_;  // Symbol -> vocabulary id (or unk_id)
  std::array<Symbol, 256> byte_symbol_{};
  std::array<Symbol, 256> byte_end_symbol_{};  // the byte's symbol with "</w>"
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int64_t start_of_text_id_ = -1, end_of_text_id_ = -1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadClipBpeTokenizer(const TokenizerSpec& spec) {
  return ClipBpeTokenizer::Load(spec);
}

}  // namespace dgrid
