// Tokenizer files from a hostile bundle: reading one neither blocks (a FIFO)
// nor runs without bound (a device, a huge file), and what an error quotes of
// a file is a short escaped piece.
#include "denoiser_service/text/vocab_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "absl/strings/str_cat.h"
#include "denoiser_service/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string TempPath(const std::string& name) {
  const std::string path = ::testing::TempDir() + "/vocab_files_test_" + name;
  std::filesystem::remove(path);
  return path;
}

TokenizerSpec WordsSpec(const std::string& vocab_path) {
  TokenizerSpec spec;
  spec.kind = "words";
  spec.vocab_path = vocab_path;
  spec.bos_id = spec.eos_id = spec.pad_id = -1;
  spec.max_length = 8;
  return spec;
}

TEST(VocabFilesTest, AFifoIsRefusedWithoutWaitingForAWriter) {
  const std::string fifo = TempPath("vocab.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto load = std::async(std::launch::async, [&] { return LoadTokenizer(WordsSpec(fifo)); });
  // The bound is only there to fail (not hang) where the read blocks; a
  // passing run does not wait on it.
  if (load.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    ADD_FAILURE() << "LoadTokenizer blocked on a FIFO";
    close(open(fifo.c_str(), O_WRONLY | O_NONBLOCK));  // a writer that leaves: EOF
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = load.get();
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("a FIFO, not a regular file"));
}

TEST(VocabFilesTest, ADeviceIsRefusedUnread) {
  const std::string link = TempPath("zero.txt");
  std::filesystem::create_symlink("/dev/zero", link);
  for (auto read : {+[](const std::string& p) { return ReadWordList(p).status(); },
                    +[](const std::string& p) { return ReadMerges(p).status(); },
                    +[](const std::string& p) { return ReadVocabJson(p).status(); }}) {
    const absl::Status status = read(link);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), HasSubstr("a character device"));
  }
}

TEST(VocabFilesTest, AFileOverTheLimitIsRefusedUnread) {
  // Sparse: 65 MiB of size, no disk.
  const std::string big = TempPath("big_merges.txt");
  std::ofstream(big) << "#version: 0.2\na b\n";
  std::filesystem::resize_file(big, 65 << 20);
  const absl::Status status = ReadMerges(big).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("the limit is"));
}

TEST(VocabFilesTest, ErrorsQuoteAShortEscapedPieceOfTheFile) {
  const std::string merges = TempPath("secret_merges.txt");
  const std::string secret = "root:x:0:0:root:/root:/bin/bash\x1b[2J" + std::string(200, 's');
  std::ofstream(merges) << "#version: 0.2\na b\n" << secret << "\n";
  const absl::Status status = ReadMerges(merges).status();
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), Not(HasSubstr("\x1b")));  // escaped
  EXPECT_THAT(status.message(), Not(HasSubstr(std::string(100, 's'))));
  EXPECT_LT(status.message().size(), merges.size() + 200);
}

}  // namespace
}  // namespace dgrid
