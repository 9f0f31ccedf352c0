#include "denoiser_service/text/vocab_files.h"

#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/bundle_files.h"
#include "common/status_macros.h"
#include "denoiser_service/text/cleanup.h"

namespace dgrid {
namespace {

// CLIP's vocab.json is 1.6 MB and its merges.txt 0.5 MB; a vocabulary of a
// million tokens still fits. A bundle can come from anywhere: no FIFO or
// device (a link to /dev/zero) is read, and nothing without bound.
constexpr uint64_t kMaxFileBytes = 64 << 20;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  return ReadRegularFile(path, kMaxFileBytes);
}

// A quoted piece of a bad line, short enough for a status message.
std::string Quote(absl::string_view text) {
  constexpr size_t kMax = 60;
  return absl::StrCat("\"", absl::CHexEscape(text.substr(0, kMax)),
                      text.size() > kMax ? "\"…" : "\"");
}

// The lines of `text`, without their "\n" or "\r\n".
std::vector<absl::string_view> Lines(absl::string_view text) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();  // final newline
  for (absl::string_view& line : lines) absl::ConsumeSuffix(&line, "\r");
  return lines;
}

// The one JSON shape vocab.json has: {"token": id, ...}. A general JSON
// library would be a dependency for this alone.
class VocabJsonParser {
 public:
  VocabJsonParser(const std::string& path, absl::string_view text) : path_(path), text_(text) {}

  absl::StatusOr<VocabJson> Parse() {
    VocabJson vocab;
    absl::flat_hash_set<std::string> seen;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{' (a JSON object of token -> id)");
    SkipSpace();
    if (!Consume('}')) {
      while (true) {
        SkipSpace();
        const int token_line = line_;
        ASSIGN_OR_RETURN(std::string token, ParseString());
        SkipSpace();
        if (!Consume(':')) return Error("expected ':' after a token");
        SkipSpace();
        ASSIGN_OR_RETURN(int64_t id, ParseId());
        vocab.emplace_back(std::move(token), id);
        if (!seen.insert(vocab.back().first).second) {
          line_ = token_line;
          return Error(absl::StrCat("token ", Quote(vocab.back().first), " appears twice"));
        }
        SkipSpace();
        if (Consume('}')) break;
        if (!Consume(',')) return Error("expected ',' or '}' after an id");
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the object");
    if (vocab.empty()) return Error("the vocabulary is empty");
    return vocab;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ":", line_, ": ", what));
  }

  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void SkipSpace() {
    for (; pos_ < text_.size(); ++pos_) {
      const char c = text_[pos_];
      if (c == '\n') ++line_;
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    }
  }

  absl::StatusOr<uint32_t> ParseHex4() {
    if (text_.size() - pos_ < 4) return Error("truncated \\u escape");
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
        digit = (c | 0x20) - 'a' + 10;
      } else {
        return Error("bad \\u escape");
      }
      value = value * 16 + digit;
    }
    return value;
  }

  absl::StatusOr<std::string> ParseString() {
    if (!Consume('"')) return Error("expected a token in double quotes");
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) return Error("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return Error("control character in a string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= text_.size()) return Error("unterminated string");
      const char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          ASSIGN_OR_RETURN(uint32_t c1, ParseHex4());
          if (c1 >= 0xDC00 && c1 <= 0xDFFF) return Error("lone low surrogate in a \\u escape");
          if (c1 >= 0xD800 && c1 <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") return Error("lone high surrogate in a \\u escape");
            pos_ += 2;
            ASSIGN_OR_RETURN(uint32_t c2, ParseHex4());
            if (c2 < 0xDC00 || c2 > 0xDFFF) return Error("lone high surrogate in a \\u escape");
            c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
          }
          AppendUtf8(c1, &out);
          break;
        }
        default:
          return Error(absl::StrCat("bad escape \\", absl::string_view(&e, 1)));
      }
    }
  }

  absl::StatusOr<int64_t> ParseId() {
    constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max();
    const size_t begin = pos_;
    int64_t id = 0;
    for (; pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; ++pos_) {
      id = id * 10 + (text_[pos_] - '0');
      if (id > kMaxId) return Error("id too large");
    }
    if (pos_ == begin) return Error("expected a non-negative integer id");
    return id;
  }

  const std::string& path_;
  absl::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
};

}  // namespace

absl::StatusOr<VocabJson> ReadVocabJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return VocabJsonParser(path, text).Parse();
}

absl::StatusOr<std::vector<MergeRule>> ReadMerges(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<MergeRule> merges;
  const std::vector<absl::string_view> lines = Lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    const absl::string_view line = lines[i];
    if (line.empty() || (i == 0 && absl::StartsWith(line, "#version"))) continue;
    const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", i + 1, ": expected two symbols separated by one space, got ", Quote(line)));
    }
    merges.push_back({std::string(parts[0]), std::string(parts[1])});
  }
  if (merges.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no merges"));
  return merges;
}

absl::StatusOr<std::vector<std::string>> ReadWordList(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<std::string> words;
  for (absl::string_view line : Lines(text)) words.emplace_back(line);
  if (words.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no words"));
  return words;
}

}  // namespace dgrid
