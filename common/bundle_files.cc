#include "common/bundle_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace dgrid {
namespace {

namespace fs = std::filesystem;

// What a file that is not a regular one is, for the error.
const char* KindOf(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a folder";
  return "not a regular file";
}

absl::Status CheckStat(const std::string& path, const struct stat& st, uint64_t max_bytes) {
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", KindOf(st.st_mode), ", not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is ", st.st_size,
                                                   " bytes; the limit is ", max_bytes));
  }
  return absl::OkStatus();
}

absl::Status OpenError(const std::string& path, int error) {
  const std::string message = absl::StrCat("cannot open ", path, ": ", std::strerror(error));
  if (error == ENOENT || error == ENOTDIR) return absl::NotFoundError(message);
  if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
  return absl::InvalidArgumentError(message);
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<std::string> ResolveBundleFile(const std::string& bundle_dir,
                                              const std::string& relative,
                                              absl::string_view field) {
  std::error_code error;
  const fs::path folder = fs::canonical(bundle_dir, error);
  if (error) {
    return absl::NotFoundError(
        absl::StrCat("cannot open bundle folder ", bundle_dir, ": ", error.message()));
  }
  const std::string named = absl::StrCat(bundle_dir, "/", relative);
  const fs::path file = fs::canonical(folder / relative, error);
  if (error) {
    const std::string message = absl::StrCat("manifest ", field, ": cannot open ", named, ": ",
                                             error.message());
    return error == std::errc::no_such_file_or_directory || error == std::errc::not_a_directory
               ? absl::NotFoundError(message)
               : absl::InvalidArgumentError(message);
  }
  // Inside means below the folder component by component ("/a/bc" is not
  // inside "/a/b").
  const auto [in_folder, in_file] = std::mismatch(folder.begin(), folder.end(), file.begin(),
                                                  file.end());
  if (in_folder != folder.end() || in_file == file.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest ", field, ": ", named, " resolves to \"", absl::CHexEscape(file.string()),
        "\", outside the bundle folder"));
  }
  struct stat st;
  if (stat(file.c_str(), &st) != 0) return OpenError(named, errno);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("manifest ", field, ": ", named, " is ",
                                                   KindOf(st.st_mode), ", not a regular file"));
  }
  return file.string();
}

absl::Status CheckRegularFile(const std::string& path, uint64_t max_bytes) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return OpenError(path, errno);
  return CheckStat(path, st, max_bytes);
}

absl::StatusOr<std::string> ReadRegularFile(const std::string& path, uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  const FileDescriptor fd(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) return OpenError(path, errno);
  // The descriptor's own stat: what was opened, not what the name points to
  // now.
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return OpenError(path, errno);
  if (absl::Status s = CheckStat(path, st, max_bytes); !s.ok()) return s;
  // The file may grow after fstat: read at most one byte past the limit.
  std::string text(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t size = 0;
  while (true) {
    if (size == text.size()) {
      if (size > max_bytes) break;
      text.resize(std::min<uint64_t>(max_bytes + 1, 2 * text.size()));
    }
    const ssize_t got = read(fd.get(), text.data() + size, text.size() - size);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      return absl::DataLossError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
    }
    if (got == 0) break;
    size += static_cast<size_t>(got);
  }
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is over the limit of ", max_bytes, " bytes"));
  }
  text.resize(size);
  return text;
}

}  // namespace dgrid
