#include "denoiser_service/text/tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/short_text.h"
#include "common/status_macros.h"
#include "denoiser_service/text/cleanup.h"
#include "denoiser_service/text/clip_bpe_tokenizer.h"
#include "denoiser_service/text/word_tokenizer.h"

namespace dgrid {
namespace {

int SpecialCount(const TokenizerSpec& spec) { return (spec.bos_id >= 0) + (spec.eos_id >= 0); }

absl::Status CheckLength(const TokenizerSpec& spec) {
  if (spec.max_length < SpecialCount(spec) + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer max_length: ", spec.max_length, " leaves no room for a token"));
  }
  return absl::OkStatus();
}

// Each special id names a token of the vocabulary; the words kind may go
// without BOS, EOS or padding (-1).
absl::Status CheckSpecialIds(const TokenizerSpec& spec, int64_t vocab_size) {
  const bool optional = spec.kind == "words";
  const std::pair<const char*, int64_t> ids[] = {{"bos_id", spec.bos_id},
                                                 {"eos_id", spec.eos_id},
                                                 {"pad_id", spec.pad_id},
                                                 {"unk_id", spec.unk_id}};
  for (const auto& [field, id] : ids) {
    const bool may_be_none = optional && absl::string_view(field) != "unk_id";
    if ((id == -1 && may_be_none) || (id >= 0 && id < vocab_size)) continue;
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer ", field, ": ", id, " is outside the ", vocab_size, " ids of ",
                     spec.vocab_path, may_be_none ? " (-1 means none)" : ""));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<int64_t> Tokenizer::Padded(const Tokens& tokens) const {
  std::vector<int64_t> ids = tokens.ids;
  if (spec_.pad_id >= 0 && ids.size() < static_cast<size_t>(spec_.max_length)) {
    ids.resize(spec_.max_length, spec_.pad_id);
  }
  return ids;
}

Tokens Tokenizer::Frame(std::vector<int64_t> content) const {
  const size_t room = static_cast<size_t>(spec_.max_length - SpecialCount(spec_));
  Tokens tokens;
  tokens.dropped = static_cast<int>(content.size() > room ? content.size() - room : 0);
  content.resize(std::min(content.size(), room));
  tokens.ids.reserve(content.size() + 2);
  if (spec_.bos_id >= 0) tokens.ids.push_back(spec_.bos_id);
  tokens.ids.insert(tokens.ids.end(), content.begin(), content.end());
  if (spec_.eos_id >= 0) tokens.ids.push_back(spec_.eos_id);
  return tokens;
}

absl::Status CheckPromptText(absl::string_view field, absl::string_view text) {
  RETURN_IF_ERROR(CheckClientText(field, text, kMaxPromptBytes));
  return CheckStreamSafe(field, text);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const TokenizerSpec& spec) {
  // A setting's error, named where the settings came from (a bundle among
  // several is then known).
  auto setting = [&spec](absl::Status status) {
    if (status.ok() || spec.settings_from.empty()) return status;
    return absl::Status(status.code(), absl::StrCat(spec.settings_from, ": ", status.message()));
  };
  RETURN_IF_ERROR(setting(CheckLength(spec)));
  std::unique_ptr<Tokenizer> tokenizer;
  if (spec.kind == "clip_bpe") {
    ASSIGN_OR_RETURN(tokenizer, LoadClipBpeTokenizer(spec));
  } else if (spec.kind == "words") {
    ASSIGN_OR_RETURN(tokenizer, LoadWordTokenizer(spec));
  } else {
    return setting(absl::InvalidArgumentError(absl::StrCat(
        "tokenizer kind: \"", absl::CHexEscape(spec.kind), "\" is neither clip_bpe nor words")));
  }
  RETURN_IF_ERROR(setting(CheckSpecialIds(spec, tokenizer->vocab_size())));
  return tokenizer;
}

TokenizerSpec SpecForBundle(const TokenizerFiles& files, const std::string& bundle_dir) {
  TokenizerSpec spec;
  spec.kind = files.kind;
  spec.vocab_path = bundle_dir + "/" + files.vocab;
  if (!files.merges.empty()) spec.merges_path = bundle_dir + "/" + files.merges;
  spec.bos_id = files.bos_id;
  spec.eos_id = files.eos_id;
  spec.pad_id = files.pad_id;
  spec.unk_id = files.unk_id;
  spec.max_length = files.max_length;
  spec.settings_from = bundle_dir + "/manifest.json";
  return spec;
}

}  // namespace dgrid
