// Converts between the wire Tensor (dgrid.v1.Tensor, KServe-v2-style raw
// little-endian bytes) and float buffers, validating everything a client can
// get wrong. Errors are INVALID_ARGUMENT and name the field.
//
//   ASSIGN_OR_RETURN(std::vector<float> x,
//                    DecodeFloatTensor(t, {1, 28, 28}, "trajectories[3].start_latent"));
//   EncodeFloatTensor(x, {1, 28, 28}, response.add_latents());
#ifndef DGRID_COMMON_TENSOR_CODEC_H_
#define DGRID_COMMON_TENSOR_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "dgrid/v1/tensor.pb.h"

namespace dgrid {

// Decodes an FP32 tensor whose shape must equal `expected_shape` exactly;
// rejects wrong dtype, shape, byte length and non-finite values.
absl::StatusOr<std::vector<float>> DecodeFloatTensor(const v1::Tensor& tensor,
                                                     absl::Span<const int64_t> expected_shape,
                                                     absl::string_view field);

// A dtype's name, or its number when it has none (a newer client's, or a
// bad one), for errors: the name alone was empty for those.
std::string DataTypeText(int dtype);

// Decodes into `out` (resized), same checks: avoids an allocation per call.
absl::Status DecodeFloatTensorInto(const v1::Tensor& tensor,
                                   absl::Span<const int64_t> expected_shape,
                                   absl::string_view field, std::vector<float>* out);

void EncodeFloatTensor(absl::Span<const float> values, absl::Span<const int64_t> shape,
                       v1::Tensor* out);
void EncodeUint8Tensor(absl::Span<const uint8_t> values, absl::Span<const int64_t> shape,
                       v1::Tensor* out);

}  // namespace dgrid

#endif  // DGRID_COMMON_TENSOR_CODEC_H_
