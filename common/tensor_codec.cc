#include "common/tensor_codec.h"

#include <cmath>
#include <cstring>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/short_text.h"

namespace dgrid {
namespace {

// Past any latent (a bundle's are at most 2^22), and small enough that the
// byte count cannot overflow.
constexpr uint64_t kMaxTensorElements = uint64_t{1} << 30;

#if defined(ABSL_IS_BIG_ENDIAN)
#error "tensor bytes are little-endian on the wire; add a byte swap for big-endian hosts"
#endif

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// A client's shape, cut like any echoed value: a tensor may claim thousands
// of dimensions.
std::string EchoedShapeString(absl::Span<const int64_t> shape) {
  std::string s = ShapeString(shape);
  return s.size() <= kMaxEchoBytes ? s : ShortQuote(s);
}

}  // namespace

std::string DataTypeText(int dtype) {
  const std::string& name = v1::DataType_Name(static_cast<v1::DataType>(dtype));
  return name.empty() ? absl::StrCat("dtype ", dtype) : name;
}

absl::Status DecodeFloatTensorInto(const v1::Tensor& tensor,
                                   absl::Span<const int64_t> expected_shape,
                                   absl::string_view field, std::vector<float>* out) {
  if (tensor.dtype() != v1::DATA_TYPE_FP32) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".dtype must be DATA_TYPE_FP32, got ", DataTypeText(tensor.dtype())));
  }
  const absl::Span<const int64_t> shape(tensor.shape().data(), tensor.shape().size());
  if (shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape must be ",
                                                   ShapeString(expected_shape), ", got ",
                                                   EchoedShapeString(shape)));
  }
  // The expected shape is a model's (a replica's ModelInfo, to the
  // orchestrator): no dimension below 1, and no count past what memory
  // could hold, whatever it says.
  size_t numel = 1;
  for (int64_t d : expected_shape) {
    if (d < 1 || static_cast<uint64_t>(d) > kMaxTensorElements / numel) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": the expected shape ", ShapeString(expected_shape), " is not a usable one"));
    }
    numel *= static_cast<size_t>(d);
  }
  const std::string& bytes = tensor.raw_contents();
  if (bytes.size() != numel * sizeof(float)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".raw_contents must hold ",
                                                   numel * sizeof(float), " bytes for shape ",
                                                   ShapeString(shape), ", got ", bytes.size()));
  }
  out->resize(numel);
  // An empty tensor has no buffer to copy into (found by fuzz_tensor_decode).
  if (numel > 0) std::memcpy(out->data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < numel; ++i) {
    if (!std::isfinite((*out)[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".raw_contents holds a non-finite value (NaN or Inf) at element ",
                       i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> DecodeFloatTensor(const v1::Tensor& tensor,
                                                     absl::Span<const int64_t> expected_shape,
                                                     absl::string_view field) {
  std::vector<float> out;
  absl::Status status = DecodeFloatTensorInto(tensor, expected_shape, field, &out);
  if (!status.ok()) return status;
  return out;
}

void EncodeFloatTensor(absl::Span<const float> values, absl::Span<const int64_t> shape,
                       v1::Tensor* out) {
  out->mutable_shape()->Assign(shape.begin(), shape.end());
  out->set_dtype(v1::DATA_TYPE_FP32);
  out->set_raw_contents(values.data(), values.size() * sizeof(float));
}

void EncodeUint8Tensor(absl::Span<const uint8_t> values, absl::Span<const int64_t> shape,
                       v1::Tensor* out) {
  out->mutable_shape()->Assign(shape.begin(), shape.end());
  out->set_dtype(v1::DATA_TYPE_UINT8);
  out->set_raw_contents(values.data(), values.size());
}

}  // namespace dgrid
