#include "common/tensor_codec.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(TensorCodecTest, RoundTripsExactly) {
  const std::vector<float> x = {1.5f, -2.25f, 0.0f, 3e-8f, -7.0f, 42.0f};
  v1::Tensor t;
  EncodeFloatTensor(x, {1, 2, 3}, &t);
  EXPECT_EQ(t.raw_contents().size(), 24u);
  auto back = DecodeFloatTensor(t, std::vector<int64_t>{1, 2, 3}, "latent");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, x);
}

// The expected shape comes from a replica's ModelInfo to the orchestrator:
// a count that wraps, or a dimension below 1, is refused (2^62 + 1 floats'
// byte count wrapped to 4, and the resize then threw).
TEST(TensorCodecTest, RefusesAnExpectedShapeNoTensorCouldHave) {
  v1::Tensor four_bytes;
  EncodeFloatTensor(std::vector<float>(1, 1.0f), {1}, &four_bytes);
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{(int64_t{1} << 62) + 1}, std::vector<int64_t>{-1, -1},
        std::vector<int64_t>{0}}) {
    v1::Tensor t = four_bytes;
    t.clear_shape();
    for (int64_t d : shape) t.add_shape(d);
    const absl::Status status = DecodeFloatTensor(t, shape, "latent").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find("latent: the expected shape"), absl::string_view::npos)
        << status;
  }
}

TEST(TensorCodecTest, RejectsWhatClientsGetWrong) {
  const std::vector<int64_t> shape = {1, 2, 2};
  v1::Tensor good;
  EncodeFloatTensor(std::vector<float>(4, 1.0f), shape, &good);

  v1::Tensor wrong_dtype = good;
  wrong_dtype.set_dtype(v1::DATA_TYPE_INT64);
  v1::Tensor unknown_dtype = good;  // a number no name has ("got " and nothing)
  unknown_dtype.set_dtype(static_cast<v1::DataType>(99));
  v1::Tensor wrong_shape = good;
  wrong_shape.set_shape(2, 3);
  v1::Tensor short_bytes = good;
  short_bytes.mutable_raw_contents()->pop_back();
  v1::Tensor nan = good;
  const float q = std::numeric_limits<float>::quiet_NaN();
  nan.mutable_raw_contents()->replace(4, 4, reinterpret_cast<const char*>(&q), 4);
  v1::Tensor inf = good;
  const float i = std::numeric_limits<float>::infinity();
  inf.mutable_raw_contents()->replace(8, 4, reinterpret_cast<const char*>(&i), 4);

  const struct {
    const v1::Tensor* tensor;
    const char* needle;
  } cases[] = {{&wrong_dtype, "x.dtype must be DATA_TYPE_FP32, got DATA_TYPE_INT64"},
               {&unknown_dtype, "x.dtype must be DATA_TYPE_FP32, got dtype 99"},
               {&wrong_shape, "x.shape"},
               {&short_bytes, "x.raw_contents must hold 16 bytes"},
               {&nan, "non-finite value (NaN or Inf) at element 1"},
               {&inf, "non-finite value (NaN or Inf) at element 2"}};
  for (const auto& c : cases) {
    auto r = DecodeFloatTensor(*c.tensor, shape, "x");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.needle), absl::string_view::npos)
        << r.status().message();
  }
}

}  // namespace
}  // namespace dgrid
