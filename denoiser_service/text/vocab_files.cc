#include "denoiser_service/text/vocab_files.h"

#include <algorithm>
#include <limits>

#include <nlohmann/json.hpp>

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

// The 1-based line of byte `offset` of `text`.
int LineOf(absl::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + offset, '\n'));
}

// Reads the one shape vocab.json has, {"token": id, ...}, through
// nlohmann::json's SAX interface: tokens in file order, each once, ids
// non-negative 32-bit integers. Errors name the file and line.
class VocabJsonReader final : public nlohmann::json_sax<nlohmann::json> {
 public:
  VocabJsonReader(const std::string& path, absl::string_view text) : path_(path), text_(text) {}

  absl::StatusOr<VocabJson> Read() {
    const bool parsed = nlohmann::json::sax_parse(text_.begin(), text_.end(), this);
    if (!error_.ok()) return error_;
    if (!parsed) return Error(1, "cannot be read as JSON");
    if (vocab_.empty()) return Error(1, "the vocabulary is empty");
    return std::move(vocab_);
  }

  bool start_object(std::size_t) override {
    if (++depth_ == 1) return true;
    return Fail("a token's id must be an integer, not an object");
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool key(string_t& token) override {
    key_ = token;
    if (!seen_.insert(token).second) {
      return Fail(absl::StrCat("token ", Quote(token), " appears twice"),
                  LineOfRepeat(nlohmann::json(token).dump()));
    }
    return true;
  }
  bool number_unsigned(number_unsigned_t id) override {
    if (depth_ == 0) return Outer();  // a file that is one number
    if (id > static_cast<number_unsigned_t>(std::numeric_limits<int32_t>::max())) {
      return Fail(absl::StrCat("token ", Quote(key_), ": id too large"));
    }
    vocab_.emplace_back(key_, static_cast<int64_t>(id));
    return true;
  }
  bool number_integer(number_integer_t) override { return NotAnId(); }
  bool number_float(number_float_t, const string_t&) override { return NotAnId(); }
  bool null() override { return NotAnId(); }
  bool boolean(bool) override { return NotAnId(); }
  bool string(string_t&) override { return NotAnId(); }
  bool binary(binary_t&) override { return NotAnId(); }
  bool start_array(std::size_t) override { return depth_ == 0 ? Outer() : NotAnId(); }
  bool end_array() override { return true; }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& e) override {
    // "[json.exception.parse_error.101] parse error at line 2, column 6:
    // syntax error while parsing object separator - ...; expected ':'"
    absl::string_view what = e.what();
    const size_t colon = what.find(": ");
    if (colon != absl::string_view::npos) what.remove_prefix(colon + 2);
    return Fail(std::string(what), LineOf(text_, position == 0 ? 0 : position - 1));
  }

 private:
  bool NotAnId() {
    return depth_ == 0 ? Outer()
                       : Fail(absl::StrCat("token ", Quote(key_),
                                           ": expected a non-negative integer id"));
  }
  bool Outer() { return Fail("expected '{' (a JSON object of token -> id)", 1); }
  // Where a key written as `quoted` appears for the second time: its line,
  // or the first line when the file spells it another way.
  int LineOfRepeat(const std::string& quoted) const {
    const size_t first = text_.find(quoted);
    const size_t second =
        first == absl::string_view::npos ? first : text_.find(quoted, first + quoted.size());
    return second == absl::string_view::npos ? 1 : LineOf(text_, second);
  }
  absl::Status Error(int line, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ":", line, ": ", what));
  }
  bool Fail(absl::string_view what, int line = 0) {
    error_ = Error(line > 0 ? line : 1, what);
    return false;
  }

  const std::string& path_;
  absl::string_view text_;
  VocabJson vocab_;
  absl::flat_hash_set<std::string> seen_;
  std::string key_;
  int depth_ = 0;
  absl::Status error_;
};

}  // namespace

absl::StatusOr<VocabJson> ReadVocabJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return VocabJsonReader(path, text).Read();
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
