// The words kind, for small models: lower-cased runs of letters, of digits
// or of other visible characters, each looked up in a word list (unknown
// words give unk_id). Reach it through LoadTokenizer.
#ifndef DGRID_DENOISER_SERVICE_TEXT_WORD_TOKENIZER_H_
#define DGRID_DENOISER_SERVICE_TEXT_WORD_TOKENIZER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "denoiser_service/text/tokenizer.h"

namespace dgrid {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadWordTokenizer(const TokenizerSpec& spec);

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_TEXT_WORD_TOKENIZER_H_
