// Readers for the tokenizer files a bundle carries. Errors name the file and
// the line that is wrong.
//
//   ASSIGN_OR_RETURN(VocabJson vocab, ReadVocabJson(dir + "/vocab.json"));
//   ASSIGN_OR_RETURN(std::vector<MergeRule> merges, ReadMerges(dir + "/merges.txt"));
#ifndef DGRID_DENOISER_SERVICE_TEXT_VOCAB_FILES_H_
#define DGRID_DENOISER_SERVICE_TEXT_VOCAB_FILES_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dgrid {

// Hugging Face's vocab.json: one JSON object, token -> id, in file order.
using VocabJson = std::vector<std::pair<std::string, int64_t>>;
absl::StatusOr<VocabJson> ReadVocabJson(const std::string& path);

// Hugging Face's merges.txt: an optional "#version" line, then one "a b" pair
// per line, lowest rank (most frequent) first. Blank lines are skipped.
struct MergeRule {
  std::string left, right;
};
absl::StatusOr<std::vector<MergeRule>> ReadMerges(const std::string& path);

// One word per line ('\n' or "\r\n"); line k, counting from 0, is id k.
absl::StatusOr<std::vector<std::string>> ReadWordList(const std::string& path);

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_TEXT_VOCAB_FILES_H_
