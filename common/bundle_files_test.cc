#include "common/bundle_files.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace dgrid {
namespace {

namespace fs = std::filesystem;

// A fresh folder under the test's temp dir.
std::string Folder(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("bundle_files_test_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

bool Mentions(const absl::Status& status, absl::string_view text) {
  return status.message().find(text) != absl::string_view::npos;
}

TEST(ReadRegularFileTest, ReadsUpToTheLimitAndRefusesMore) {
  const std::string dir = Folder("limit");
  Write(dir + "/four", "abcd");
  absl::StatusOr<std::string> text = ReadRegularFile(dir + "/four", 4);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "abcd");
  EXPECT_EQ(ReadRegularFile(dir + "/four", 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  Write(dir + "/empty", "");
  EXPECT_EQ(ReadRegularFile(dir + "/empty", 3).value_or("x"), "");
  EXPECT_EQ(ReadRegularFile(dir + "/missing", 3).status().code(), absl::StatusCode::kNotFound);
}

TEST(ReadRegularFileTest, RefusesWhatIsNotARegularFileWithoutBlocking) {
  const std::string dir = Folder("kinds");
  ASSERT_EQ(mkfifo((dir + "/fifo").c_str(), 0600), 0);
  absl::Status fifo = ReadRegularFile(dir + "/fifo", 1 << 20).status();
  EXPECT_EQ(fifo.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(fifo, "a FIFO")) << fifo;
  fs::create_symlink("/dev/zero", dir + "/zero");
  absl::Status zero = ReadRegularFile(dir + "/zero", 1 << 20).status();
  EXPECT_TRUE(Mentions(zero, "a character device")) << zero;
  EXPECT_TRUE(Mentions(ReadRegularFile(dir, 1 << 20).status(), "a folder"));
  EXPECT_TRUE(Mentions(CheckRegularFile(dir + "/fifo", 1 << 20), "a FIFO"));
  Write(dir + "/file", "12345");
  EXPECT_TRUE(CheckRegularFile(dir + "/file", 5).ok());
  EXPECT_FALSE(CheckRegularFile(dir + "/file", 4).ok());
}

TEST(ResolveBundleFileTest, FollowsLinksInsideTheFolderOnly) {
  const std::string root = Folder("resolve");
  const std::string dir = root + "/b";
  fs::create_directories(dir + "/weights");
  fs::create_directories(root + "/bc");  // a sibling sharing the prefix "b"
  Write(dir + "/weights/model.pt", "w");
  Write(root + "/bc/model.pt", "w");
  Write(root + "/outside.pt", "w");
  fs::create_symlink("weights/model.pt", dir + "/inside.pt");
  fs::create_symlink("../outside.pt", dir + "/up.pt");
  fs::create_symlink("../bc/model.pt", dir + "/sibling.pt");
  fs::create_symlink("/etc/passwd", dir + "/passwd.txt");

  absl::StatusOr<std::string> inside = ResolveBundleFile(dir, "inside.pt", "weights");
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(*inside, fs::canonical(dir + "/weights/model.pt").string());
  for (const char* escape : {"up.pt", "sibling.pt", "passwd.txt"}) {
    absl::Status status = ResolveBundleFile(dir, escape, "conditioning.tokenizer.vocab").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << escape;
    EXPECT_TRUE(Mentions(status, "conditioning.tokenizer.vocab")) << status;
    EXPECT_TRUE(Mentions(status, "outside the bundle folder")) << status;
  }
  EXPECT_EQ(ResolveBundleFile(dir, "missing.pt", "weights").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(Mentions(ResolveBundleFile(dir, "weights", "weights").status(), "a folder"));
  // The folder itself may be reached through a link.
  fs::create_symlink(dir, root + "/alias");
  EXPECT_TRUE(ResolveBundleFile(root + "/alias", "inside.pt", "weights").ok());
}

}  // namespace
}  // namespace dgrid
