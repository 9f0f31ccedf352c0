#include "idx_reader.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dgrid::training {
namespace {

// IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the
// number of dimensions.
constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;
// No real IDX file comes near this; a larger header value means corruption,
// and refusing it keeps a bad header from asking for gigabytes.
constexpr int64_t kMaxElements = int64_t{1} << 31;

// gzerror() prefixes its message with the path, which ours already names.
std::string ZlibMessage(const char* msg) {
  std::string m = msg == nullptr ? "" : msg;
  const size_t colon = m.rfind(": ");
  return colon == std::string::npos ? m : m.substr(colon + 2);
}

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

class IdxStream {
 public:
  static absl::StatusOr<IdxStream> Open(const std::string& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
    }
    return IdxStream(path, GzFile(f));
  }

  // Reads exactly n bytes; `what` names the field for the error message.
  absl::Status Read(void* out, size_t n, const char* what) {
    size_t done = 0;
    while (done < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
      int got = gzread(file_.get(), static_cast<char*>(out) + done, chunk);
      if (got <= 0) {
        int errnum = Z_OK;
        const char* msg = gzerror(file_.get(), &errnum);
        // Z_BUF_ERROR: the compressed stream stops early (a cut download);
        // anything else is damage inside the stream.
        if (got < 0 && errnum != Z_BUF_ERROR) {
          return absl::DataLossError(absl::StrCat(path_, ": corrupt gzip stream while reading ",
                                                  what, ": ", ZlibMessage(msg)));
        }
        return absl::DataLossError(absl::StrCat(path_, ": truncated: ", what, " needs ", n,
                                                " bytes, file ends after ", done));
      }
      done += static_cast<size_t>(got);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> ReadBigEndian32(const char* what) {
    unsigned char b[4];
    absl::Status s = Read(b, 4, what);
    if (!s.ok()) return s;
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  }

  // Trailing bytes mean the header does not describe the file: reject them
  // rather than silently ignore half a dataset. A gzip stream whose CRC check
  // fails only reports so at its end, so this read also catches corruption.
  absl::Status ExpectEnd() {
    char extra;
    int got = gzread(file_.get(), &extra, 1);
    int errnum = 0;
    const char* msg = gzerror(file_.get(), &errnum);
    if (got < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) {
      return absl::DataLossError(
          absl::StrCat(path_, ": corrupt gzip stream at end: ", ZlibMessage(msg)));
    }
    if (got > 0) {
      return absl::DataLossError(
          absl::StrCat(path_, ": length mismatch: data continue past the size in the header"));
    }
    return absl::OkStatus();
  }

  const std::string& path() const { return path_; }

 private:
  IdxStream(std::string path, GzFile file) : path_(std::move(path)), file_(std::move(file)) {}
  std::string path_;
  GzFile file_;
};

absl::Status CheckMagic(const IdxStream& in, uint32_t got, uint32_t want) {
  if (got == want) return absl::OkStatus();
  char buf[64];
  std::snprintf(buf, sizeof(buf), "bad magic 0x%08x, expected 0x%08x", got, want);
  return absl::InvalidArgumentError(absl::StrCat(in.path(), ": ", buf));
}

absl::Status CheckDim(const IdxStream& in, uint32_t value, const char* name) {
  if (value == 0 || value > kMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat(in.path(), ": bad dimension ", name, " = ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path) {
  absl::StatusOr<IdxStream> in = IdxStream::Open(path);
  if (!in.ok()) return in.status();
  uint32_t header[4];
  const char* names[4] = {"magic", "count", "rows", "cols"};
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<uint32_t> v = in->ReadBigEndian32(names[i]);
    if (!v.ok()) return v.status();
    header[i] = *v;
  }
  if (absl::Status s = CheckMagic(*in, header[0], kImagesMagic); !s.ok()) return s;
  for (int i = 1; i < 4; ++i) {
    if (absl::Status s = CheckDim(*in, header[i], names[i]); !s.ok()) return s;
  }
  IdxImages out;
  out.count = header[1];
  out.rows = header[2];
  out.cols = header[3];
  const int64_t total = out.count * out.rows * out.cols;
  if (total > kMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": bad dimensions ", out.count, "x", out.rows, "x", out.cols));
  }
  out.pixels.resize(static_cast<size_t>(total));
  if (absl::Status s = in->Read(out.pixels.data(), out.pixels.size(), "pixels"); !s.ok()) {
    return s;
  }
  if (absl::Status s = in->ExpectEnd(); !s.ok()) return s;
  return out;
}

absl::StatusOr<IdxLabels> ReadIdxLabels(const std::string& path) {
  absl::StatusOr<IdxStream> in = IdxStream::Open(path);
  if (!in.ok()) return in.status();
  absl::StatusOr<uint32_t> magic = in->ReadBigEndian32("magic");
  if (!magic.ok()) return magic.status();
  if (absl::Status s = CheckMagic(*in, *magic, kLabelsMagic); !s.ok()) return s;
  absl::StatusOr<uint32_t> count = in->ReadBigEndian32("count");
  if (!count.ok()) return count.status();
  if (absl::Status s = CheckDim(*in, *count, "count"); !s.ok()) return s;
  IdxLabels out;
  out.labels.resize(*count);
  if (absl::Status s = in->Read(out.labels.data(), out.labels.size(), "labels"); !s.ok()) {
    return s;
  }
  if (absl::Status s = in->ExpectEnd(); !s.ok()) return s;
  return out;
}

absl::StatusOr<LabeledImages> ReadSplit(const std::string& dir, const std::string& split,
                                        int num_classes) {
  const std::string images_path = absl::StrCat(dir, "/", split, "-images-idx3-ubyte.gz");
  const std::string labels_path = absl::StrCat(dir, "/", split, "-labels-idx1-ubyte.gz");
  absl::StatusOr<IdxImages> images = ReadIdxImages(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<IdxLabels> labels = ReadIdxLabels(labels_path);
  if (!labels.ok()) return labels.status();
  if (static_cast<int64_t>(labels->labels.size()) != images->count) {
    return absl::InvalidArgumentError(absl::StrCat(labels_path, ": holds ", labels->labels.size(),
                                                   " labels but ", images_path, " holds ",
                                                   images->count, " images"));
  }
  for (size_t i = 0; i < labels->labels.size(); ++i) {
    if (labels->labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(labels_path, ": label ", labels->labels[i],
                                                     " at index ", i, " is not below ",
                                                     num_classes));
    }
  }
  return LabeledImages{std::move(*images), std::move(labels->labels)};
}

}  // namespace dgrid::training
