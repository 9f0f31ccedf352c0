#include "common/png_image.h"

#include <png.h>
#include <zlib.h>

#include <cstring>

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

// A PNG that claims width x height RGBA in its header, with two bytes of
// image data.
// A PNG of 8-bit samples of `colour_type` (0 grey, 6 RGBA) whose one IDAT
// chunk holds `data`, with valid CRCs.
std::string PngOf(uint32_t width, uint32_t height, char colour_type, const std::string& data,
                  char bit_depth = 8, char interlace = 0) {
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  auto chunk = [&](const std::string& type_and_data) {
    const uLong crc =
        crc32(0, reinterpret_cast<const Bytef*>(type_and_data.data()), type_and_data.size());
    return be32(static_cast<uint32_t>(type_and_data.size() - 4)) + type_and_data +
           be32(static_cast<uint32_t>(crc));
  };
  return std::string("\x89PNG\r\n\x1a\n", 8) +
         chunk("IHDR" + be32(width) + be32(height) + std::string(1, bit_depth) +
               std::string(1, colour_type) + std::string("\0\0", 2) +
               std::string(1, interlace)) +
         chunk("IDAT" + data) + chunk("IEND");
}

// `data` as a zlib stream at `level` (0: stored).
std::string Deflated(const std::string& data, int level) {
  uLongf size = compressBound(data.size());
  std::string out(size, '\0');
  EXPECT_EQ(compress2(reinterpret_cast<Bytef*>(out.data()), &size,
                      reinterpret_cast<const Bytef*>(data.data()), data.size(), level),
            Z_OK);
  out.resize(size);
  return out;
}

std::string HeaderOnlyPng(uint32_t width, uint32_t height) {
  return PngOf(width, height, '\x06', "\x78\x9c");
}

// The buffer is made before the data is read: a header's claim alone once
// made it allocate gigabytes.
TEST(PngImageTest, AHugeImageIsRefusedFromItsHeader) {
  const std::string png = HeaderOnlyPng(100000, 100000);
  const absl::Status status =
      DecodePng({reinterpret_cast<const uint8_t*>(png.data()), png.size()}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("100000x100000 pixels is more than"), absl::string_view::npos)
      << status;
}

// libpng inflates every byte of the image data, past the rows it needs: a
// 28x28 image with 1 GB of zeros deflated behind its pixels (1 MB) took
// 2.6 s to judge. More data than the size could need is refused unread.
TEST(PngImageTest, ImageDataPastWhatTheSizeNeedsIsRefused) {
  std::string zeros(16 << 20, '\0');  // 16 MiB: rows of filter 0, all black
  const std::string bomb = PngOf(28, 28, '\0', Deflated(zeros, 9));
  const absl::Status status =
      DecodePng({reinterpret_cast<const uint8_t*>(bomb.data()), bomb.size()}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("its image data inflates past the 812 bytes a 28x28 image"),
            absl::string_view::npos)
      << status;
  // So does a smaller bomb, within what a bound on the compressed bytes
  // would pass (deflate expands up to about 1000 times).
  zeros.resize(28 * 29 * 8);
  const std::string small_bomb = PngOf(28, 28, '\0', Deflated(zeros, 9));
  EXPECT_FALSE(
      DecodePng({reinterpret_cast<const uint8_t*>(small_bomb.data()), small_bomb.size()}).ok());
  // The same pixels, deflated as they are, decode.
  // Stored (level 0): larger than the rows.
  const std::string plain = PngOf(28, 28, '\0', Deflated(std::string(28 * 29, '\0'), 0));
  absl::StatusOr<DecodedPng> decoded =
      DecodePng({reinterpret_cast<const uint8_t*>(plain.data()), plain.size()});
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->pixels, std::vector<uint8_t>(28 * 28, 0));
}

// The bound is what each format holds, row filters and Adam7 passes
// included: such images, with exactly their data, decode.
TEST(PngImageTest, InterlacedAndSixteenBitImagesWithExactlyTheirDataDecode) {
  const struct {
    uint32_t width, height;
    char colour, depth, interlace;
    size_t raw;
  } cases[] = {
      {5, 3, '\x06', 16, 1, 127},    // RGBA, 16 bits, Adam7: 9+9+0+9+25+34+41
      {5, 3, '\x06', 16, 0, 3 * 41},  // the same plain
      {28, 28, '\0', 1, 0, 28 * 5},    // grey, 1 bit: 4 bytes a row
      // RGB, Adam7: passes of 2x2, 1x2, 3x1, 2x3, 5x2, 4x5 and 9x4 pixels.
      {9, 9, '\x02', 8, 1, 2 * 7 + 2 * 4 + 1 * 10 + 3 * 7 + 2 * 16 + 5 * 13 + 4 * 28},
  };
  for (const auto& c : cases) {
    const size_t raw = c.raw;
    const std::string png =
        PngOf(c.width, c.height, c.colour, Deflated(std::string(raw, '\0'), 9), c.depth,
              c.interlace);
    absl::StatusOr<DecodedPng> decoded =
        DecodePng({reinterpret_cast<const uint8_t*>(png.data()), png.size()});
    EXPECT_TRUE(decoded.ok()) << c.width << "x" << c.height << ": " << decoded.status();
    // One byte more is past what the image holds.
    const std::string over =
        PngOf(c.width, c.height, c.colour, Deflated(std::string(raw + 1, '\0'), 9), c.depth,
              c.interlace);
    EXPECT_FALSE(DecodePng({reinterpret_cast<const uint8_t*>(over.data()), over.size()}).ok())
        << c.width << "x" << c.height;
  }
}

// Grey with alpha stays grey (it came back as RGB, which a grey model's
// judge refused).
TEST(PngImageTest, GreyWithAlphaDecodesAsGrey) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = 2;
  image.height = 1;
  image.format = PNG_FORMAT_GA;
  const uint8_t ga[] = {200, 255, 40, 255};
  png_alloc_size_t size = 0;
  ASSERT_TRUE(png_image_write_get_memory_size(image, size, 0, ga, 0, nullptr));
  std::vector<uint8_t> png(size);
  ASSERT_TRUE(png_image_write_to_memory(&image, png.data(), &size, 0, ga, 0, nullptr));
  absl::StatusOr<DecodedPng> back = DecodePng({png.data(), size});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->channels, 1);
  EXPECT_EQ(back->pixels, (std::vector<uint8_t>{200, 40}));
}

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
