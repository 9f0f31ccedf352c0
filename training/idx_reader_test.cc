#include "idx_reader.h"

#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dgrid::training {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> Header(uint32_t magic, std::vector<uint32_t> dims) {
  std::vector<uint8_t> out;
  auto put = [&out](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back((v >> shift) & 0xff);
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  return out;
}

std::vector<uint8_t> ImagesFile(uint32_t count, uint32_t rows, uint32_t cols, size_t data_bytes,
                                uint32_t magic = 0x803) {
  std::vector<uint8_t> out = Header(magic, {count, rows, cols});
  for (size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<uint8_t>(i * 7));
  return out;
}

class IdxReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("idx_reader_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteGz(const std::string& name, const std::vector<uint8_t>& bytes) {
    std::string path = (dir_ / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    EXPECT_EQ(gzwrite(f, bytes.data(), bytes.size()), static_cast<int>(bytes.size()));
    gzclose(f);
    return path;
  }

  std::vector<char> ReadRaw(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), {});
  }
  void WriteRaw(const std::string& path, const std::vector<char>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), bytes.size());
  }

  fs::path dir_;
};

TEST_F(IdxReaderTest, ReadsImagesAndLabels) {
  std::string images = WriteGz("train-images-idx3-ubyte.gz", ImagesFile(3, 2, 4, 24));
  std::vector<uint8_t> labels = Header(0x801, {3});
  labels.insert(labels.end(), {7, 0, 9});
  WriteGz("train-labels-idx1-ubyte.gz", labels);

  absl::StatusOr<IdxImages> read = ReadIdxImages(images);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->count, 3);
  EXPECT_EQ(read->rows, 2);
  EXPECT_EQ(read->cols, 4);
  ASSERT_EQ(read->pixels.size(), 24u);
  EXPECT_EQ(read->pixels[5], 35);

  absl::StatusOr<LabeledImages> split = ReadSplit(dir_.string(), "train", 10);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->labels, (std::vector<uint8_t>{7, 0, 9}));
}

TEST_F(IdxReaderTest, RejectsShortDataNamingFileAndSizes) {
  std::string path = WriteGz("short.gz", ImagesFile(3, 2, 4, 20));
  absl::StatusOr<IdxImages> read = ReadIdxImages(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find(path), std::string::npos) << read.status();
  EXPECT_NE(read.status().message().find("truncated"), std::string::npos) << read.status();
  EXPECT_NE(read.status().message().find("24"), std::string::npos) << read.status();
}

TEST_F(IdxReaderTest, RejectsTruncatedHeader) {
  std::vector<uint8_t> bytes = ImagesFile(3, 2, 4, 0);
  bytes.resize(10);
  absl::StatusOr<IdxImages> read = ReadIdxImages(WriteGz("header.gz", bytes));
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("truncated"), std::string::npos) << read.status();
}

TEST_F(IdxReaderTest, RejectsBadMagic) {
  // A labels file given where images are expected.
  absl::StatusOr<IdxImages> read =
      ReadIdxImages(WriteGz("magic.gz", ImagesFile(3, 2, 4, 24, /*magic=*/0x801)));
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(read.status().message().find("bad magic 0x00000801"), std::string::npos)
      << read.status();
}

TEST_F(IdxReaderTest, RejectsZeroDimension) {
  absl::StatusOr<IdxImages> read = ReadIdxImages(WriteGz("dims.gz", ImagesFile(3, 0, 4, 0)));
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("bad dimension rows = 0"), std::string::npos)
      << read.status();
}

TEST_F(IdxReaderTest, RejectsTrailingData) {
  absl::StatusOr<IdxImages> read = ReadIdxImages(WriteGz("long.gz", ImagesFile(3, 2, 4, 30)));
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("length mismatch"), std::string::npos)
      << read.status();
}

TEST_F(IdxReaderTest, RejectsTruncatedGzipFile) {
  // A download cut short: the compressed file itself loses its tail.
  std::string path = WriteGz("cut.gz", ImagesFile(50, 28, 28, 50 * 28 * 28));
  std::vector<char> raw = ReadRaw(path);
  raw.resize(raw.size() / 2);
  WriteRaw(path, raw);
  absl::StatusOr<IdxImages> read = ReadIdxImages(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find(path), std::string::npos) << read.status();
  EXPECT_NE(read.status().message().find("truncated: pixels needs 39200 bytes"),
            std::string::npos)
      << read.status();
}

TEST_F(IdxReaderTest, RejectsCorruptGzipStream) {
  std::string path = WriteGz("corrupt.gz", ImagesFile(50, 28, 28, 50 * 28 * 28));
  std::vector<char> raw = ReadRaw(path);
  // Damage the deflate data after the 10-byte gzip header; either inflate
  // fails or the CRC at the end no longer matches.
  for (size_t i = 20; i < raw.size() - 8; i += 13) raw[i] = static_cast<char>(raw[i] ^ 0x5a);
  WriteRaw(path, raw);
  absl::StatusOr<IdxImages> read = ReadIdxImages(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_NE(read.status().message().find(path), std::string::npos) << read.status();
}

TEST_F(IdxReaderTest, RejectsMissingFile) {
  absl::StatusOr<IdxImages> read = ReadIdxImages((dir_ / "absent.gz").string());
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IdxReaderTest, SplitRejectsCountMismatchAndBadLabel) {
  WriteGz("t10k-images-idx3-ubyte.gz", ImagesFile(3, 2, 4, 24));
  std::vector<uint8_t> labels = Header(0x801, {2});
  labels.insert(labels.end(), {1, 2});
  WriteGz("t10k-labels-idx1-ubyte.gz", labels);
  absl::StatusOr<LabeledImages> split = ReadSplit(dir_.string(), "t10k", 10);
  ASSERT_FALSE(split.ok());
  EXPECT_NE(split.status().message().find("holds 2 labels"), std::string::npos)
      << split.status();

  labels = Header(0x801, {3});
  labels.insert(labels.end(), {1, 12, 2});
  WriteGz("t10k-labels-idx1-ubyte.gz", labels);
  split = ReadSplit(dir_.string(), "t10k", 10);
  ASSERT_FALSE(split.ok());
  EXPECT_NE(split.status().message().find("label 12 at index 1"), std::string::npos)
      << split.status();
}

}  // namespace
}  // namespace dgrid::training
