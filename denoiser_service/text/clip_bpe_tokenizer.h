// The clip_bpe kind: CLIP's byte-level BPE, exactly as OpenAI's
// clip/simple_tokenizer.py encodes (Stable Diffusion 1.x and 2.x), read from
// Hugging Face's vocab.json and merges.txt. Reach it through LoadTokenizer.
#ifndef DGRID_DENOISER_SERVICE_TEXT_CLIP_BPE_TOKENIZER_H_
#define DGRID_DENOISER_SERVICE_TEXT_CLIP_BPE_TOKENIZER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "denoiser_service/text/tokenizer.h"

namespace dgrid {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadClipBpeTokenizer(const TokenizerSpec& spec);

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVICE_TEXT_CLIP_BPE_TOKENIZER_H_
