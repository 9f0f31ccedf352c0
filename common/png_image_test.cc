#include "common/png_image.h"

#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(PngImageTest, ValueRangeMapsToFullByteRangeWithClamping) {
  const std::vector<float> x = {-1.0f, 0.0f, 1.0f, 5.0f, -3.0f};
  EXPECT_EQ(ToPixels(x, 1, -1.0, 1.0), (std::vector<uint8_t>{0, 128, 255, 255, 0}));
}

TEST(PngImageTest, ChwBecomesHwc) {
  const std::vector<float> chw = {0, 1, 0, 1, 0, 1};  // 3 channels, 2 pixels
  EXPECT_EQ(ToPixels(chw, 3, 0.0, 1.0), (std::vector<uint8_t>{0, 0, 0, 255, 255, 255}));
}

TEST(PngImageTest, EncodeDecodeRoundTrip) {
  std::vector<uint8_t> px(5 * 3 * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 7);
  auto png = EncodePng(px, 5, 3, 3);
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->substr(1, 3), "PNG");
  auto back = DecodePng({reinterpret_cast<const uint8_t*>(png->data()), png->size()});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->width, 5);
  EXPECT_EQ(back->height, 3);
  EXPECT_EQ(back->pixels, px);
  EXPECT_FALSE(EncodePng(px, 4, 3, 3).ok());
}

}  // namespace
}  // namespace dgrid

namespace dgrid {
namespace {

TEST(PngImageTest, DecodePngOfSizeRefusesAnotherSizeFromTheHeader) {
  absl::StatusOr<std::string> png = EncodePng(std::vector<uint8_t>(6 * 4, 7), 6, 4, 1);
  ASSERT_TRUE(png.ok());
  const absl::Span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(png->data()),
                                        png->size());
  absl::StatusOr<DecodedPng> same = DecodePngOfSize(bytes, 6, 4);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->pixels, std::vector<uint8_t>(24, 7));
  absl::Status other = DecodePngOfSize(bytes, 4, 6).status();
  EXPECT_EQ(other.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(other.message().find("6x4, expected 4x6"), absl::string_view::npos) << other;
}

}  // namespace
}  // namespace dgrid
