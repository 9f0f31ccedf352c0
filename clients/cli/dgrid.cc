// dgrid: the command-line client. Each subcommand is one function; errors are
// one readable line on stderr and a non-zero exit code.
//
//   dgrid grid --target=127.0.0.1:50050 --prompt=sneaker --seed=7 -o grid.png
//   dgrid grid --prompt=sneaker --seed=7 --sampler=euler_ancestral -o euler.png
//   dgrid promote grid.json --row 2 --col 3
//   dgrid branch --target=127.0.0.1:50051 --prompt=sneaker --seed=7 -o sneaker.png
//   dgrid step --target=127.0.0.1:50051 --step=0 --seed=7
//   dgrid models --target=127.0.0.1:50051
//   dgrid health --target=127.0.0.1:50051
//   dgrid tokenize --model_dir=models/my-sd "a photo of a cat"
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "common/host_port.h"
#include "common/manifest_reader.h"
#include "common/png_image.h"
#include "common/short_text.h"
#include "common/stall_watchdog.h"
#include "common/tensor_codec.h"
#include "common/tls.h"
#include "denoiser_service/text/tokenizer.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "dgrid/v1/orchestrator.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50050",
          "Server host:port: the orchestrator (grid, curve, promote, models, health) or a "
          "denoiser (branch, step, models, health).");
ABSL_FLAG(std::string, model, "", "Model name; empty = the server's first model.");
ABSL_FLAG(std::string, prompt, "",
          "A class model: a class name, e.g. sneaker. A text model: free text, e.g. "
          "\"a photo of a cat\". Empty = unconditional.");
ABSL_FLAG(std::string, negative, "",
          "Text models: the negative prompt, what guidance steers away from.");
ABSL_FLAG(std::string, switch_prompt, "",
          "dgrid grid and curve: each row's branches switch to this prompt at the row's "
          "branch step (a class model: a class name).");
ABSL_FLAG(std::string, switch_negative, "",
          "dgrid grid and curve: the negative prompt the branches switch to; empty = "
          "--negative.");
ABSL_FLAG(std::string, branch_noise, "new",
          "dgrid grid and curve: new (each branch its own future noise) or trunk "
          "(branches keep the trunk's noise: one column, differing from the trunk only by the "
          "switch).");
ABSL_FLAG(std::string, model_dir, "", "dgrid tokenize: the model bundle whose tokenizer to use.");
ABSL_FLAG(uint64_t, seed, 0, "Initial-latent seed (path.init_seed).");
ABSL_FLAG(uint64_t, noise_seed, 1, "Noise seed of the first segment.");
ABSL_FLAG(std::string, segments, "",
          "Extra path segments as from_step:noise_seed,... (a branch), e.g. 10:555. Noise "
          "only: a path whose prompt switches (a switched cell of a grid) runs through the "
          "orchestrator, with dgrid promote.");
ABSL_FLAG(std::string, sampler, "",
          "ddim or euler_ancestral (euler_a); empty = the preset's (grid, curve) or the "
          "model's (branch, step).");
ABSL_FLAG(std::string, spacing, "",
          "leading, trailing or linspace (diffusers' timestep_spacing); empty = the model's.");
ABSL_FLAG(std::string, original_size, "",
          "SDXL-style models: the original-size conditioning as HxW (e.g. 512x512); empty = "
          "the model's default.");
ABSL_FLAG(std::string, crop, "",
          "SDXL-style models: the crop conditioning as TOPxLEFT in pixels; empty = 0x0.");
ABSL_FLAG(std::string, target_size, "",
          "SDXL-style models: the target-size conditioning as HxW; empty = the model's default.");
ABSL_FLAG(int, steps, 0,
          "Sampler steps; 0 = the preset's for grid and curve (50, turbo 4), the model's "
          "default for branch and step.");
ABSL_FLAG(double, eta, -1,
          "Eta in [0, 1] (DDIM: its noise; Euler ancestral: the share of fresh noise); "
          "negative = the preset's for grid and curve (1), the model's default for branch "
          "and step (1 where --sampler asks Euler ancestral of a model that defaults to "
          "DDIM).");
ABSL_FLAG(double, guidance, -1, "Guidance scale; negative = the model's default.");
ABSL_FLAG(int, step, 0,
          "dgrid step: which step to run, from 0 (from x_T); past 0 the denoiser first runs "
          "the trajectory's steps before it.");
ABSL_FLAG(int, scale, 8,
          "dgrid branch: nearest-neighbour upscaling of the PNG it writes (grids and curves "
          "are drawn by the server).");
ABSL_FLAG(std::string, o, "",
          "Output path: a PNG, or for curve an SVG if it ends in .svg. Default grid.png, "
          "curve.png or branch.png here (overwritten), and GRID-rRcC.png beside a promoted "
          "GRID.json.");
ABSL_FLAG(std::string, service, "",
          "dgrid health: the service: a model's name or dgrid.v1.Denoiser on a denoiser, "
          "dgrid.v1.Orchestrator on an orchestrator; empty = the whole server.");
ABSL_FLAG(int, silence_s, 60,
          "dgrid curve: give up when the orchestrator has sent nothing for this many seconds "
          "(a running curve sends progress at least every 15 s: under 20 may give up on a "
          "healthy curve); 0 = wait for ever.");
ABSL_FLAG(int, timeout_s, 0,
          "Deadline for each call, in seconds; 0 = 300, and none for dgrid curve (it shows "
          "its progress; Ctrl-C stops it).");
ABSL_FLAG(std::string, preset, "", "dgrid grid and curve: default, classic, euler_a or turbo.");
ABSL_FLAG(int, branches, 0, "dgrid grid and curve: branches per row; 0 = the preset's.");
ABSL_FLAG(std::vector<std::string>, branch_steps, {},
          "dgrid grid and curve: rows, as the steps after which branches leave the trunk, e.g. "
          "0,5,10.");
ABSL_FLAG(std::string, auth_token_file, "",
          "File with the bearer token of the server dialled (sent as authorization metadata): "
          "the orchestrator's, or for step and branch the denoiser's.");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA of the server: connect with TLS.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM client key, for mutual TLS.");
ABSL_FLAG(std::string, tls_name, "", "Name to verify in the server's certificate.");
ABSL_FLAG(int, row, 0, "dgrid promote: the row, counted from 1 at the top.");
ABSL_FLAG(int, col, 0, "dgrid promote: the branch, counted from 1 at the left.");
ABSL_FLAG(int, trunks, 20,
          "dgrid curve: trunks (grids), seeds --seed to --seed + N - 1; at least 2, at most the "
          "orchestrator's --max_curve_trunks (1000 by default).");

namespace dgrid {
namespace {

// Errors end the program with one line.
struct CliError {
  std::string message;
};

[[noreturn]] void Fail(const std::string& message) { throw CliError{message}; }

// The deadline of the calls SetDeadline set up last, in seconds (0: none).
int deadline_s = 0;

void Check(const grpc::Status& status, const std::string& what) {
  if (status.ok()) return;
  // A server without the method says no more than UNIMPLEMENTED.
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && status.error_message().empty()) {
    Fail(absl::StrCat(what, ": UNIMPLEMENTED: the server at ", absl::GetFlag(FLAGS_target),
                      " does not serve it (grid, curve and promote talk to an orchestrator, "
                      "branch and step to a denoiser)"));
  }
  // The client's own deadline (gRPC's plain message): say which one.
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      status.error_message() == "Deadline Exceeded" && deadline_s > 0) {
    Fail(absl::StrCat(what, ": DEADLINE_EXCEEDED: not done within this client's ", deadline_s,
                      " s (--timeout_s", absl::GetFlag(FLAGS_timeout_s) > 0 ? "" : ", default 300",
                      "); give a longer one"));
  }
  // A plaintext client of a TLS server hears only that the socket closed.
  const bool tls_hint = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                        absl::GetFlag(FLAGS_tls_ca).empty() &&
                        (absl::StrContains(status.error_message(), "Socket closed") ||
                         absl::StrContains(status.error_message(), "Connection reset"));
  Fail(absl::StrCat(what, ": ", FromGrpcStatus(status).ToString(),
                    tls_hint ? " (a TLS server? give --tls_ca)" : ""));
}

// --timeout_s, else `fallback_s` seconds (0: no deadline).
void SetDeadline(grpc::ClientContext* context, int fallback_s = 300) {
  const int seconds = absl::GetFlag(FLAGS_timeout_s) > 0 ? absl::GetFlag(FLAGS_timeout_s) : fallback_s;
  deadline_s = seconds;
  if (seconds > 0) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }
  static const std::string* token = [] {
    auto read = ReadTokenFile(absl::GetFlag(FLAGS_auth_token_file), "--auth_token_file");
    if (!read.ok()) Fail(std::string(read.status().message()));
    return new std::string(*read);
  }();
  if (!token->empty()) context->AddMetadata("authorization", "Bearer " + *token);
}

std::shared_ptr<grpc::Channel> Connect() {
  // host:port as the servers' flags take it (a port past 65535 would be
  // wrapped round to another); a gRPC target with a scheme passes as it is.
  const std::string& target = absl::GetFlag(FLAGS_target);
  if (absl::Status checked = CheckGrpcTarget("--target", target, 1); !checked.ok()) {
    Fail(std::string(checked.message()));
  }
  auto credentials = ChannelCredentialsFromFiles(
      {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)});
  if (!credentials.ok()) Fail(std::string(credentials.status().message()));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (!absl::GetFlag(FLAGS_tls_name).empty()) {
    if (absl::GetFlag(FLAGS_tls_ca).empty()) {
      Fail("--tls_name: names the server in its certificate, so it needs --tls_ca (TLS)");
    }
    args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_name));
  }
  return grpc::CreateCustomChannel(target, *credentials, args);
}

v1::ModelInfo FetchModel(v1::Denoiser::Stub& stub) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetModelInfoRequest request;
  request.set_model(absl::GetFlag(FLAGS_model));
  v1::GetModelInfoResponse response;
  Check(stub.GetModelInfo(&context, request, &response), "GetModelInfo");
  if (response.models_size() == 0) Fail("the server has no models");
  return response.models(0);
}

// --sampler, read before anything connects so that a bad value is the error
// the user sees. Empty: unspecified (the preset's or the model's).
v1::Sampler SamplerFromFlag() {
  const std::string name = absl::AsciiStrToLower(absl::GetFlag(FLAGS_sampler));
  if (name.empty()) return v1::SAMPLER_UNSPECIFIED;
  if (name == "ddim") return v1::SAMPLER_DDIM;
  if (name == "euler_ancestral" || name == "euler_a") return v1::SAMPLER_EULER_ANCESTRAL;
  Fail(absl::StrCat("--sampler: ddim or euler_ancestral (euler_a), got ", ShortQuote(name)));
}

// --spacing, read before anything connects. Empty: unspecified (the model's).
v1::Spacing SpacingFromFlag() {
  const std::string name = absl::AsciiStrToLower(absl::GetFlag(FLAGS_spacing));
  if (name.empty()) return v1::SPACING_UNSPECIFIED;
  if (name == "leading") return v1::SPACING_LEADING;
  if (name == "trailing") return v1::SPACING_TRAILING;
  if (name == "linspace") return v1::SPACING_LINSPACE;
  Fail(absl::StrCat("--spacing: leading, trailing or linspace, got ", ShortQuote(name)));
}

// --original_size, --crop and --target_size into `size`, each "AxB" or
// empty (0x0: the model's default); false when all three are empty.
bool SizeFromFlags(v1::SizeConditioning* size) {
  struct Flag {
    const char* name;
    std::string value;
    void (v1::SizeConditioning::*first)(int32_t);
    void (v1::SizeConditioning::*second)(int32_t);
  };
  const Flag flags[] = {
      {"--original_size", absl::GetFlag(FLAGS_original_size),
       &v1::SizeConditioning::set_original_height, &v1::SizeConditioning::set_original_width},
      {"--crop", absl::GetFlag(FLAGS_crop), &v1::SizeConditioning::set_crop_top,
       &v1::SizeConditioning::set_crop_left},
      {"--target_size", absl::GetFlag(FLAGS_target_size),
       &v1::SizeConditioning::set_target_height, &v1::SizeConditioning::set_target_width}};
  bool any = false;
  for (const Flag& f : flags) {
    if (f.value.empty()) continue;
    const std::vector<std::string> parts = absl::StrSplit(f.value, 'x');
    int a = 0, b = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &a) || !absl::SimpleAtoi(parts[1], &b)) {
      Fail(absl::StrCat(f.name, ": give two numbers as AxB, e.g. 512x512, got ",
                        ShortQuote(f.value)));
    }
    (size->*f.first)(a);
    (size->*f.second)(b);
    any = true;
  }
  return any;
}

// A spacing that is not leading (or unspecified), as a summary names it:
// ", linspace spacing".
std::string SpacingNote(v1::Spacing spacing) {
  switch (spacing) {
    case v1::SPACING_UNSPECIFIED:
    case v1::SPACING_LEADING:
      return "";
    case v1::SPACING_TRAILING:
      return ", trailing spacing";
    case v1::SPACING_LINSPACE:
      return ", linspace spacing";
    default:
      return absl::StrCat(", spacing ", static_cast<int>(spacing), " (unknown)");
  }
}

// How a grid or a run names its sampler (unspecified on the wire is DDIM),
// with its spacing: "Euler ancestral, linspace spacing".
std::string SamplerName(const v1::SamplerConfig& config) {
  return (config.sampler() == v1::SAMPLER_EULER_ANCESTRAL ? "Euler ancestral" : "DDIM") +
         SpacingNote(config.spacing());
}

// --eta or --guidance when given: a negative value leaves the default. NaN
// is refused here, naming the flag: it compares as neither, so it silently
// ran the default.
std::optional<double> SamplerFlag(const absl::Flag<double>& flag, const char* name) {
  const double value = absl::GetFlag(flag);
  if (std::isnan(value)) Fail(absl::StrCat("--", name, ": not a number"));
  if (value < 0) return std::nullopt;
  return value;
}

// Text flags sent as they are must be UTF-8, as protobuf's strings are: it
// would log an error of its own before the server's refusal.
void CheckTextFlags() {
  for (const auto& [name, flag] :
       {std::pair<const char*, const absl::Flag<std::string>*>{"--prompt", &FLAGS_prompt},
        {"--negative", &FLAGS_negative},
        {"--switch_prompt", &FLAGS_switch_prompt},
        {"--switch_negative", &FLAGS_switch_negative},
        {"--model", &FLAGS_model},
        {"--preset", &FLAGS_preset},
        {"--service", &FLAGS_service}}) {
    if (!IsValidUtf8(absl::GetFlag(*flag))) Fail(absl::StrCat(name, ": not valid UTF-8"));
  }
}

// The sampler flags of dgrid branch and step, read (and checked) before
// connecting: a mistake needs no server.
struct SamplerFlags {
  v1::Sampler sampler = SamplerFromFlag();
  v1::Spacing spacing = SpacingFromFlag();
  std::optional<double> eta = SamplerFlag(FLAGS_eta, "eta");
  std::optional<double> guidance = SamplerFlag(FLAGS_guidance, "guidance");
};

// Sampler settings: flags override the model's defaults.
void FillRequest(const v1::ModelInfo& model, const SamplerFlags& flags,
                 v1::SamplerConfig* sampler, v1::Conditioning* conditioning, v1::Path* path) {
  *sampler = model.defaults();
  if (flags.sampler != v1::SAMPLER_UNSPECIFIED) sampler->set_sampler(flags.sampler);
  // The model's eta is its own sampler's: an imported bundle's is DDIM's 0,
  // which would make Euler ancestral plain Euler. Asked for on a model that
  // defaults to DDIM, it takes all its fresh noise, as the euler_a preset does.
  if (flags.sampler == v1::SAMPLER_EULER_ANCESTRAL &&
      model.defaults().sampler() != v1::SAMPLER_EULER_ANCESTRAL) {
    sampler->set_eta(1);
  }
  if (flags.spacing != v1::SPACING_UNSPECIFIED) sampler->set_spacing(flags.spacing);
  if (absl::GetFlag(FLAGS_steps) != 0) sampler->set_steps(absl::GetFlag(FLAGS_steps));
  if (flags.eta) sampler->set_eta(*flags.eta);
  if (flags.guidance) sampler->set_guidance(*flags.guidance);
  if (!absl::GetFlag(FLAGS_prompt).empty()) conditioning->set_prompt(absl::GetFlag(FLAGS_prompt));
  conditioning->set_negative_prompt(absl::GetFlag(FLAGS_negative));
  path->set_init_seed(absl::GetFlag(FLAGS_seed));
  v1::Segment* first = path->add_segments();
  first->set_from_step(0);
  first->set_noise_seed(absl::GetFlag(FLAGS_noise_seed));
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_segments), ',', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(part, ':');
    int from = 0;
    uint64_t seed = 0;
    if (kv.size() != 2 || !absl::SimpleAtoi(kv[0], &from) || !absl::SimpleAtoi(kv[1], &seed)) {
      Fail(absl::StrCat("--segments: expected from_step:noise_seed, got \"", part, "\""));
    }
    v1::Segment* s = path->add_segments();
    s->set_from_step(from);
    s->set_noise_seed(seed);
  }
}

// The file a name stands for: links followed, a dangling one to the file it
// names (created there, as a plain write would), up to the kernel's 40 hops.
std::filesystem::path FollowLinks(const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ignored;
  fs::path path = name;
  for (int hops = 0; hops < 40 && fs::is_symlink(fs::symlink_status(path, ignored)); ++hops) {
    const fs::path target = fs::read_symlink(path, ignored);
    if (target.empty()) break;
    path = target.is_absolute() ? target : path.parent_path() / target;
  }
  return path;
}

std::filesystem::path FolderOf(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

// A new file of this process in `folder`, open for writing, and its name in
// `name`; -1 (errno set) when the folder takes none. Its own short name, not
// a file's with a suffix: a file name near the folder's length limit (255
// bytes) still gets a temporary one.
int NewFileIn(const std::filesystem::path& folder, std::string* name) {
  int fd = -1;
  for (int attempt = 0; fd < 0 && attempt < 100; ++attempt) {
    *name = (folder / absl::StrCat(".dgrid.", ::getpid(), ".", attempt, ".tmp")).string();
    fd = ::open(name->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  return fd;
}

// Writes each file whole or not at all: every file goes to a new temporary
// file beside it, and only when all are written are they renamed over their
// names, so a full disk or a failed write leaves the previous plot and
// sidecar as they were (a failure between the renames, which only a folder
// changing under us could cause, would leave the first new and the second
// old). A name that is a link is written through. The file is new: it gets
// the umask's permissions (the kernel applies it; the umask is not touched),
// not an old file's mode, owner or other hard links.
void WriteFiles(const std::vector<std::pair<std::string, std::string>>& files) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, fs::path>> written;  // temporary name, final name
  auto fail = [&written](const std::string& name, int error) {
    for (const auto& [temporary, final_name] : written) ::unlink(temporary.c_str());
    Fail(absl::StrCat("cannot write ", name, ": ", std::strerror(error)));
  };
  for (const auto& [name, bytes] : files) {
    const fs::path path = FollowLinks(name);
    std::string temporary;
    const int fd = NewFileIn(FolderOf(path), &temporary);
    if (fd < 0) fail(name, errno);
    written.emplace_back(temporary, path);
    int error = 0;
    for (size_t done = 0; done < bytes.size() && error == 0;) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
      } else if (n == 0 || errno != EINTR) {
        error = n == 0 ? EIO : errno;
      }
    }
    if (::close(fd) != 0 && error == 0) error = errno;
    if (error != 0) fail(name, error);
  }
  for (size_t i = 0; i < written.size(); ++i) {
    if (::rename(written[i].first.c_str(), written[i].second.c_str()) != 0) {
      const int error = errno;
      written.erase(written.begin(), written.begin() + static_cast<std::ptrdiff_t>(i));
      fail(files[i].first, error);
    }
  }
}

void WriteScaledPng(const v1::Tensor& pixels, const std::string& path) {
  if (pixels.shape_size() != 3) Fail("the server returned no image");
  const int h = pixels.shape(0), w = pixels.shape(1), c = pixels.shape(2);
  const int k = absl::GetFlag(FLAGS_scale);  // CheckScale's range
  const std::string& src = pixels.raw_contents();
  std::vector<uint8_t> big(static_cast<size_t>(h) * k * w * k * c);
  for (int y = 0; y < h * k; ++y) {
    for (int x = 0; x < w * k; ++x) {
      for (int ch = 0; ch < c; ++ch) {
        big[(static_cast<size_t>(y) * w * k + x) * c + ch] = src[((y / k) * w + x / k) * c + ch];
      }
    }
  }
  auto png = EncodePng(big, w * k, h * k, c);
  if (!png.ok()) Fail(std::string(png.status().message()));
  WriteFiles({{path, *png}});
}

// ---- grid and promote (talk to the orchestrator) ----

// runs/grid.png -> runs/grid; a dot in a folder's name is no extension.
std::string WithoutExtension(const std::string& path) {
  return std::filesystem::path(path).replace_extension().string();
}

std::string SidecarPath(const std::string& png) { return WithoutExtension(png) + ".json"; }

// JSON as protobuf indents it, but each list of whole numbers on one line,
// as the Python client writes it: a curve's labels took a line each.
std::string InlineNumberLists(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  for (size_t i = 0; i < json.size(); ++i) {
    if (json[i] == '"') {  // a string, copied as it is (a prompt may hold "[1,2]")
      const size_t start = i;
      for (++i; i < json.size() && json[i] != '"'; ++i) {
        if (json[i] == '\\') ++i;
      }
      out.append(json, start, i - start + 1);
      continue;
    }
    if (json[i] == '[') {
      const size_t end = json.find(']', i);
      if (end != std::string::npos) {
        std::vector<absl::string_view> items =
            absl::StrSplit(absl::string_view(json).substr(i + 1, end - i - 1), ',');
        bool numbers = true;
        for (absl::string_view& item : items) {
          item = absl::StripAsciiWhitespace(item);
          const absl::string_view digits = absl::StripPrefix(item, "-");
          numbers = numbers && !digits.empty() &&
                    std::all_of(digits.begin(), digits.end(),
                                [](char c) { return absl::ascii_isdigit(c); });
        }
        if (numbers) {
          absl::StrAppend(&out, "[", absl::StrJoin(items, ", "), "]");
          i = end;
          continue;
        }
      }
    }
    out.push_back(json[i]);
  }
  return out;
}

std::string Extension(const std::string& path) {
  return absl::AsciiStrToLower(std::filesystem::path(path).extension().string());
}

// -o curve.svg writes a curve's plot as SVG; every other output is a PNG.
bool IsSvg(const std::string& path) { return Extension(path) == ".svg"; }

// Whether the flag was given, in the arguments, a --flagfile or the
// environment (--fromenv), even as its default value. Abseil's public
// CommandLineFlag keeps this private in this version.
bool GivenByUser(absl::string_view name) {
  return absl::flags_internal::WasPresentOnCommandLine(name);
}

// The output as the user named it: "-o NAME", or a default name they did
// not give.
std::string OutputFlag(const std::string& name) {
  return GivenByUser("o")
             ? absl::StrCat("-o ", name)
             : absl::StrCat("the output ", name, " (the default; -o names another)");
}

// Only PNG (and a curve's SVG) is written: x.jpg would hold PNG bytes.
void RefuseOtherImageTypes(const std::string& out, bool svg_allowed = false) {
  const std::string extension = Extension(out);
  if (extension == ".svg") {
    if (!svg_allowed) {
      Fail(absl::StrCat(OutputFlag(out), ": only a curve's plot can be SVG; give a PNG's name"));
    }
    return;
  }
  if (!extension.empty() && extension != ".png" && extension != ".json") {
    Fail(absl::StrCat(OutputFlag(out), ": dgrid writes PNG", svg_allowed ? " or SVG" : "",
                      "; give a name ending in .png", svg_allowed ? " or .svg" : ""));
  }
}

// Fails before any work when the plot or its sidecar could not be written,
// so that a long grid or curve is not lost at its end. Only a curve may ask
// for an SVG.
// `sidecar`: the command writes a JSON sidecar beside the plot (branch
// does not).
void CheckWritable(const std::string& png, bool svg_allowed = false, bool sidecar = true) {
  RefuseOtherImageTypes(png, svg_allowed);
  if (SidecarPath(png) == png) {
    Fail(sidecar
             ? absl::StrCat(OutputFlag(png), ": the JSON sidecar's name; give the ",
                            svg_allowed ? "plot's (e.g. curve.png)" : "PNG's (e.g. grid.png)")
             : absl::StrCat(OutputFlag(png), ": dgrid writes a PNG here; give a name ending in .png"));
  }
  namespace fs = std::filesystem;
  std::vector<std::string> names = {png};
  if (sidecar) names.push_back(SidecarPath(png));
  for (const std::string& name : names) {
    std::error_code ignored;
    const fs::path path = FollowLinks(name);
    if (fs::is_directory(fs::status(path, ignored))) {
      Fail(absl::StrCat(OutputFlag(png), ": ", name, " is a folder"));
    }
    // The kernel's view (/dev/stdout's link is no path): a device or a pipe
    // would be replaced by a plain file, /dev/null included.
    const fs::file_status kind = fs::status(name, ignored);
    if (fs::exists(kind) && !fs::is_regular_file(kind) && !fs::is_directory(kind)) {
      Fail(absl::StrCat(OutputFlag(png), ": ", name,
                        " is not a regular file (a device or a pipe); dgrid writes its outputs "
                        "as files of their own: give a file's name"));
    }
    // WriteFiles creates a temporary file in the file's folder and renames
    // it over the name: the folder must take new files, even when the file
    // itself is writable.
    const fs::path folder = FolderOf(path);
    if (!fs::is_directory(folder, ignored)) {
      Fail(absl::StrCat(OutputFlag(png), ": no folder ", folder.string()));
    }
    // As WriteFiles will: a file of its own, made and removed. access()
    // says yes to root in a folder no one may write (/sys), and to a
    // read-only mount of a remote file system.
    std::string probe;
    const int fd = NewFileIn(folder, &probe);
    if (fd < 0) {
      Fail(absl::StrCat(OutputFlag(png), ": cannot write in ", folder.string(), ": ",
                        std::strerror(errno)));
    }
    ::close(fd);
    ::unlink(probe.c_str());
  }
}

// `text` right-aligned in `width` columns: characters, not bytes ("±" is two).
std::string RightAligned(const std::string& text, size_t width) {
  const size_t shown = static_cast<size_t>(std::count_if(
      text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
  return std::string(width > shown ? width - shown : 0, ' ') + text;
}

// Words as "a", "b", each quoted safely.
template <typename Words>
std::string QuotedList(const Words& words) {
  std::vector<std::string> quoted;
  for (const std::string& word : words) quoted.push_back(ShortQuote(word));
  return absl::StrJoin(quoted, ", ");
}

// A text model keeps at most its context's tokens of a prompt, and a word
// vocabulary reads a word it lacks as unknown; say so, since the grid then
// shows less than the prompt says.
void WarnAboutPrompts(const v1::GridPlan& plan) {
  for (const auto& [what, dropped] :
       {std::pair<const char*, int>{"prompt", plan.prompt_tokens_dropped()},
        {"negative prompt", plan.negative_prompt_tokens_dropped()},
        {"switch prompt", plan.switch_prompt_tokens_dropped()},
        {"switch negative prompt", plan.switch_negative_prompt_tokens_dropped()}}) {
    if (dropped > 0) {
      std::fprintf(stderr, "warning: the %s is too long for %s: %d tokens dropped\n", what,
                   plan.model().c_str(), dropped);
    }
  }
  if (plan.switch_unseen()) {
    std::fprintf(stderr,
                 "warning: %s reads the switch prompt as the prompt in force (the same class or "
                 "tokens, or a prompt guidance %g does not read): the rows do not switch\n",
                 plan.model().c_str(), plan.sampler().guidance());
  }
  if (plan.unknown_words_size() > 0) {
    std::fprintf(stderr, "warning: %s does not know %s: read as unknown (dgrid models lists "
                 "its example prompts)\n",
                 plan.model().c_str(), QuotedList(plan.unknown_words()).c_str());
  }
}

// While a stream runs, a reader of its progress (stderr) that goes away must
// not end the program: the grid or curve would be lost, and cancelled. Writes
// to it then fail quietly; SIGPIPE is as before once the stream is over, so
// that `dgrid curve | head -1` ends quietly at its summary.
class ProgressMayFail {
 public:
  ProgressMayFail() : previous_(std::signal(SIGPIPE, SIG_IGN)) {}
  ~ProgressMayFail() { std::signal(SIGPIPE, previous_); }
  ProgressMayFail(const ProgressMayFail&) = delete;
  ProgressMayFail& operator=(const ProgressMayFail&) = delete;

 private:
  void (*previous_)(int);
};

// Streams a grid with a live progress bar (plain lines when stderr is not a
// terminal), then writes the PNG and the JSON sidecar.
int StreamAndSave(const v1::GridRequest& request, const std::string& out) {
  CheckWritable(out);
  auto stub = v1::Orchestrator::NewStub(Connect());
  grpc::ClientContext context;
  SetDeadline(&context);
  std::optional<ProgressMayFail> quiet(std::in_place);
  auto reader = stub->StreamGrid(&context, request);
  v1::GridEvent event;
  v1::Grid grid;
  const bool tty = ::isatty(2);
  int cells = 0, total = 0, trunk_step = 0, steps = 0;
  auto draw = [&] {
    const int width = 30, filled = total ? width * cells / total : 0;
    std::fprintf(stderr, "\r[%s%s] %d/%d cells, trunk step %d/%d ",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 cells, total, trunk_step, steps);
  };
  while (reader->Read(&event)) {
    if (event.has_plan()) {
      total = event.plan().branch_steps_size() * event.plan().branches() + 1;
      steps = event.plan().sampler().steps();
      WarnAboutPrompts(event.plan());
      if (!tty) {
        std::fprintf(stderr,
                     "plan: %d cells, %s, %d steps, %lld model evaluations (from scratch: %lld)\n",
                     total, SamplerName(event.plan().sampler()).c_str(), steps,
                     static_cast<long long>(event.plan().model_evals()),
                     static_cast<long long>(event.plan().from_scratch_evals()));
      }
    } else if (event.has_trunk()) {
      trunk_step = event.trunk().step();
      if (!tty) std::fprintf(stderr, "trunk at step %d (t=%d)\n", trunk_step, event.trunk().timestep());
    } else if (event.has_cell()) {
      ++cells;
      const v1::GridCell& c = event.cell();
      if (c.row() < 0) trunk_step = steps;
      if (!tty) {
        if (c.row() < 0) {
          std::fprintf(stderr, "trunk done (%d/%d) from %s\n", cells, total, c.source().c_str());
        } else {
          std::fprintf(stderr, "cell row %d branch %d done (%d/%d) from %s\n", c.row() + 1,
                       c.column() + 1, cells, total, c.source().c_str());
        }
      }
    } else if (event.has_grid()) {
      grid = event.grid();
    }
    if (tty) draw();
  }
  if (tty) std::fprintf(stderr, "\n");
  quiet.reset();
  Check(reader->Finish(), "StreamGrid");

  v1::GridRecord record;
  *record.mutable_request() = request;
  *record.mutable_grid() = grid;
  record.mutable_grid()->clear_png();
  record.mutable_grid()->mutable_trunk()->clear_png();
  for (v1::GridRow& row : *record.mutable_grid()->mutable_rows()) {
    row.clear_trunk_xt_png();
    row.clear_trunk_x0_png();
    for (v1::GridCell& cell : *row.mutable_cells()) cell.clear_png();
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  // Zeros too (row 0's branch_step, cache_hits 0), as the curve's sidecar
  // has them: `jq .grid.rows[0].branch_step` read null.
  options.always_print_primitive_fields = true;
  google::protobuf::util::MessageToJsonString(record, &json, options);
  WriteFiles({{out, grid.png()}, {SidecarPath(out), json}});

  std::cout << "wrote " << out << " and " << SidecarPath(out) << ": " << grid.rows_size()
            << " rows x " << grid.plan().branches()
            << (grid.plan().branches() == 1 ? " branch (" : " branches (")
            << SamplerName(grid.plan().sampler()) << ", " << grid.plan().sampler().steps()
            << " steps), " << grid.model_evals()
            << " model evaluations (plan " << grid.plan().model_evals() << ", from scratch "
            << grid.plan().from_scratch_evals() << "), " << grid.cache_hits()
            << " cache hits, " << absl::StrFormat("%.2f", grid.seconds()) << " s\n";
  // One branch per row has no pair: its distance to the trunk instead.
  const bool pairwise = grid.plan().branches() >= 2;
  std::cout << (pairwise ? "  divergence by row:" : "  divergence to the trunk by row:");
  for (const v1::GridRow& row : grid.rows()) {
    std::cout << absl::StrFormat(" step %d: %.3f", row.branch_step(),
                                 pairwise ? row.divergence() : row.divergence_to_trunk());
  }
  std::cout << "\n";
  return 0;
}

// The grid the flags describe (dgrid grid, and each trunk of dgrid curve).
v1::GridRequest GridRequestFromFlags() {
  CheckTextFlags();
  v1::GridRequest request;
  request.set_model(absl::GetFlag(FLAGS_model));
  request.set_prompt(absl::GetFlag(FLAGS_prompt));
  request.set_negative_prompt(absl::GetFlag(FLAGS_negative));
  request.set_seed(absl::GetFlag(FLAGS_seed));
  request.set_preset(absl::GetFlag(FLAGS_preset));
  if (absl::GetFlag(FLAGS_steps) != 0) request.mutable_steps()->set_value(absl::GetFlag(FLAGS_steps));
  if (const auto eta = SamplerFlag(FLAGS_eta, "eta")) request.mutable_eta()->set_value(*eta);
  if (const auto guidance = SamplerFlag(FLAGS_guidance, "guidance")) {
    request.mutable_guidance()->set_value(*guidance);
  }
  if (absl::GetFlag(FLAGS_branches) != 0) {
    request.mutable_branches()->set_value(absl::GetFlag(FLAGS_branches));
  }
  for (const std::string& k : absl::GetFlag(FLAGS_branch_steps)) {
    int64_t step = 0;
    if (k.empty()) Fail("--branch_steps: an empty item (two commas, or one at an end)");
    if (!absl::SimpleAtoi(k, &step)) {
      Fail(absl::StrCat("--branch_steps: not a number: ", ShortQuote(k)));
    }
    if (step < std::numeric_limits<int32_t>::min() || step > std::numeric_limits<int32_t>::max()) {
      Fail(absl::StrCat("--branch_steps: ", ShortQuote(k), " is out of range"));
    }
    request.add_branch_steps(static_cast<int32_t>(step));
  }
  request.set_switch_prompt(absl::GetFlag(FLAGS_switch_prompt));
  request.set_switch_negative_prompt(absl::GetFlag(FLAGS_switch_negative));
  const std::string noise = absl::AsciiStrToLower(absl::GetFlag(FLAGS_branch_noise));
  if (noise != "new" && noise != "trunk") {
    Fail(absl::StrCat("--branch_noise: new or trunk, got ", ShortQuote(noise)));
  }
  request.set_branch_noise(noise == "trunk" ? v1::BRANCH_NOISE_TRUNK : v1::BRANCH_NOISE_NEW);
  request.set_sampler(SamplerFromFlag());
  request.set_spacing(SpacingFromFlag());
  v1::SizeConditioning size;
  if (SizeFromFlags(&size)) *request.mutable_size() = size;
  return request;
}

int Grid() {
  const std::string out = absl::GetFlag(FLAGS_o).empty() ? "grid.png" : absl::GetFlag(FLAGS_o);
  return StreamAndSave(GridRequestFromFlags(), out);
}

// Streams a decision curve with a progress bar (plain lines when stderr is
// not a terminal), then writes its plot (-o) and the curve as JSON beside it.
int Curve() {
  v1::CurveRequest request;
  *request.mutable_grid() = GridRequestFromFlags();
  request.set_trunks(absl::GetFlag(FLAGS_trunks));
  const int silence = absl::GetFlag(FLAGS_silence_s);
  if (silence < 0) {
    Fail(absl::StrCat("--silence_s: ", silence, " is negative; give seconds, or 0 to wait for ever"));
  }
  // The orchestrator sends a word at least every 15 s: a shorter wait gives
  // up on healthy curves whose first trunks take longer.
  if (silence > 0 && silence < 20) {
    std::cerr << "warning: --silence_s " << silence
              << " is under 20: the orchestrator sends a word only every 15 s, so a healthy "
                 "curve may be given up\n";
  }
  const std::string out = absl::GetFlag(FLAGS_o).empty() ? "curve.png" : absl::GetFlag(FLAGS_o);
  CheckWritable(out, /*svg_allowed=*/true);
  auto stub = v1::Orchestrator::NewStub(Connect());
  grpc::ClientContext context;
  SetDeadline(&context, /*fallback_s=*/0);
  const bool tty = ::isatty(2);
  v1::CurveEvent event;
  v1::CurveResult curve;
  int logged_done = 0;
  const int silence_s = absl::GetFlag(FLAGS_silence_s);
  // A curve has no deadline, so a connection that dies without a word (a
  // peer gone from the network, a proxy dropping the stream) would leave
  // the client waiting for ever. The orchestrator sends an event at least
  // every 15 s while a curve runs; the watchdog cancels the call after
  // --silence_s without one. It watches from before the call starts, which
  // waits for the connection (a listener that never speaks gRPC held it
  // 20 s).
  std::optional<StallWatchdog> watch;
  StallWatchdog::CallId call = 0;
  if (silence_s > 0) {
    watch.emplace(absl::Seconds(silence_s));
    if (absl::Status started = watch->Start(); !started.ok()) Fail(started.ToString());
    call = watch->Watch([&context] { context.TryCancel(); });
  }
  std::optional<ProgressMayFail> quiet(std::in_place);
  auto reader = stub->DecisionCurve(&context, request);
  auto draw = [](int done, int trunks, double seconds) {
    const int width = 30, filled = trunks ? width * done / trunks : 0;
    std::fprintf(stderr, "\r[%s%s] %d/%d trunks, %.1f s ", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), done, trunks, seconds);
  };
  while (reader->Read(&event)) {
    if (watch) watch->Touch(call);
    if (event.has_plan()) {
      WarnAboutPrompts(event.plan());
      if (tty) draw(0, request.trunks(), 0);  // the first trunk may take a while
      if (!tty) {
        std::fprintf(stderr,
                     "plan: %d trunks of %d %s x %d %s, %s, %lld model evaluations each\n",
                     request.trunks(), event.plan().branch_steps_size(),
                     event.plan().branch_steps_size() == 1 ? "row" : "rows",
                     event.plan().branches(),
                     event.plan().branches() == 1 ? "branch" : "branches",
                     SamplerName(event.plan().sampler()).c_str(),
                     static_cast<long long>(event.plan().model_evals()));
      }
    } else if (event.has_progress()) {
      const v1::CurveProgress& p = event.progress();
      if (tty) {
        draw(p.trunks_done(), p.trunks(), p.seconds());
      } else if (p.trunks_done() != logged_done) {  // not the server's keepalives
        std::fprintf(stderr, "trunk %d/%d done, %.1f s\n", p.trunks_done(), p.trunks(), p.seconds());
        logged_done = p.trunks_done();
      }
    } else if (event.has_curve()) {
      curve = event.curve();
    }
  }
  // The stream is over: a silence from here on is not the orchestrator's.
  const bool silent = watch && watch->Unwatch(call);
  quiet.reset();
  watch.reset();
  if (tty) std::fprintf(stderr, "\n");
  const grpc::Status finished = reader->Finish();
  if (silent && finished.error_code() == grpc::StatusCode::CANCELLED) {
    Fail(absl::StrCat("DecisionCurve: no word from ", absl::GetFlag(FLAGS_target), " for ",
                      silence_s, " s (--silence_s; a running curve sends one at least every 15 s): "
                      "the connection is lost or the server stalled; the curve was cancelled"));
  }
  Check(finished, "DecisionCurve");
  const std::string& figure = IsSvg(out) ? curve.svg() : curve.png();
  if (figure.empty()) {
    Fail(absl::StrCat("the orchestrator sent no ", IsSvg(out) ? "SVG" : "PNG",
                      " of the curve (an older server?); nothing written"));
  }
  v1::CurveResult record = curve;
  record.clear_png();
  record.clear_svg();
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  google::protobuf::util::MessageToJsonString(record, &json, options);
  WriteFiles({{out, figure}, {SidecarPath(out), InlineNumberLists(json)}});

  std::cout << "wrote " << out << " and " << SidecarPath(out) << ": " << curve.trunks()
            << " trunks, " << curve.model_evals() << " model evaluations, "
            << curve.judged_images() << " images judged, "
            << absl::StrFormat("%.1f", curve.seconds()) << " s\n";
  // What was measured, as the figure's subtitle says it.
  std::cout << curve.plan().model() << ", "
            << (curve.plan().prompt().empty() ? "unprompted"
                                              : absl::StrCat("\"", curve.plan().prompt(), "\""))
            << (curve.plan().negative_prompt().empty()
                    ? ""
                    : absl::StrCat(" (negative \xE2\x80\x9C", curve.plan().negative_prompt(),
                                   "\xE2\x80\x9D)"))
            << (curve.plan().switch_prompt().empty()
                    ? ""
                    : absl::StrCat(
                          " -> \"", curve.plan().switch_prompt(), "\"",
                          SwitchedNegativeNote(curve.plan().switch_negative_prompt().empty()
                                                   ? curve.plan().negative_prompt()
                                                   : curve.plan().switch_negative_prompt(),
                                               curve.plan().negative_prompt()),
                          curve.plan().switch_unseen() ? " (changes nothing the model reads)"
                                                       : ""))
            << ", seeds " << request.grid().seed() << " to "
            << request.grid().seed() + static_cast<uint64_t>(curve.trunks()) - 1
            << "; ± is a standard error over trunks (the half step's: a bootstrap standard "
               "deviation)\n";
  if (!curve.plan().switch_prompt().empty() && !curve.plan().switch_unseen()) {
    std::cout << "a switch curve: 1 - P(differs) is P(the trunk's label survives a switch "
                 "after the row's step)\n";
  }
  // One branch per row has no pair: its distance to the trunk instead. Each
  // column as wide as its name or its "0.000 ± 0.000", whichever is wider.
  const bool pairwise = curve.plan().branches() >= 2;
  constexpr size_t kEstimateWidth = 13;
  auto estimate = [](const v1::Estimate& e) {
    return absl::StrFormat("%.3f ± %.3f", e.mean(), e.standard_error());
  };
  std::vector<std::string> names = {pairwise ? "pairwise" : "to trunk"};
  for (const v1::HeadCurve& head : curve.heads()) {
    names.push_back(absl::StrCat("P(", head.head(), " differs)"));
  }
  std::vector<size_t> widths;
  std::cout << absl::StrFormat("%6s", "step");
  for (const std::string& name : names) {
    widths.push_back(std::max(kEstimateWidth, name.size()));
    std::cout << " " << RightAligned(name, widths.back());
  }
  std::cout << "\n";
  for (int r = 0; r < curve.rows_size(); ++r) {
    const v1::CurveRow& row = curve.rows(r);
    std::cout << absl::StrFormat("%6d", row.branch_step()) << " "
              << RightAligned(estimate(pairwise ? row.divergence() : row.divergence_to_trunk()),
                              widths[0]);
    std::string bounds;  // where every trunk agrees, the ± (0) says nothing
    for (int h = 0; h < curve.heads_size(); ++h) {
      const v1::HeadCurve& head = curve.heads(h);
      const v1::Estimate& p = head.p_differs(r);
      std::cout << " " << RightAligned(estimate(p), widths[h + 1]);
      if (p.standard_error() == 0 && r < head.p_differs_95_size()) {
        absl::StrAppendFormat(&bounds, "  %s 95%%: %.3f to %.3f", head.head(),
                              head.p_differs_95(r).lo(), head.p_differs_95(r).hi());
      }
    }
    std::cout << bounds << "\n";
  }
  for (const v1::HeadCurve& head : curve.heads()) {
    HalfStepWords words;
    words.differs_at_first_row = head.p_differs_size() > 0 && head.p_differs(0).mean() > 0;
    words.found = head.half_found();
    words.step = head.half_step();
    words.standard_error = head.half_step_standard_error();
    words.lo = head.half_step_lo();
    words.hi_after_last_row = head.half_step_hi_after_last_row();
    words.found_fraction = head.half_found_fraction();
    words.last_step = curve.rows_size() > 0 ? curve.rows(curve.rows_size() - 1).branch_step() : 0;
    std::cout << head.head() << ": " << DescribeHalfStep(words) << "\n";
  }
  return 0;
}

int Promote(const std::vector<char*>& args) {
  if (args.size() != 3) Fail("usage: dgrid promote GRID.json --row R --col C");
  const std::string path = args[2];
  // A folder opens as a stream that reads nothing: it read as bad JSON.
  if (std::error_code unknown; std::filesystem::is_directory(path, unknown)) {
    Fail(absl::StrCat(path, " is a folder; give the grid's sidecar, GRID.json"));
  }
  std::ifstream in(path);
  if (!in) Fail(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  v1::GridRecord record;
  if (const auto parsed = google::protobuf::util::JsonStringToMessage(text.str(), &record);
      !parsed.ok()) {
    // protobuf's message goes on to quote the text, a PNG's bytes as well:
    // its first line, printable, is enough.
    const std::string message = parsed.message().as_string();
    Fail(absl::StrCat(path, " is not a grid sidecar written by dgrid grid: ",
                      ShortQuote(message.substr(0, message.find('\n')))));
  }
  const int row = absl::GetFlag(FLAGS_row), col = absl::GetFlag(FLAGS_col);
  const v1::Grid& grid = record.grid();
  // Without it, promote ran a default grid (every field but the model),
  // whose trunk was not the cell's.
  if (!record.has_request()) {
    Fail(absl::StrCat(path, " has no \"request\": promote re-runs the request a grid sidecar "
                      "records (dgrid grid and the explorer's Grid JSON hold one)"));
  }
  if (grid.rows_size() == 0) {
    Fail(absl::StrCat(path, " is not a grid sidecar written by dgrid grid: it has no grid rows"));
  }
  if (row < 1 || row > grid.rows_size()) {
    Fail(absl::StrCat("--row must be in [1, ", grid.rows_size(), "], got ", row));
  }
  if (col < 1 || col > grid.rows(row - 1).cells_size()) {
    Fail(absl::StrCat("--col must be in [1, ", grid.rows(row - 1).cells_size(), "], got ", col));
  }
  v1::GridRequest request = record.request();
  *request.mutable_trunk() = grid.rows(row - 1).cells(col - 1).path();
  // The grid's model, not whichever model a pool of several serves first.
  if (request.model().empty()) request.set_model(grid.plan().model());
  std::string out = absl::GetFlag(FLAGS_o);
  if (out.empty()) {
    out = absl::StrCat(WithoutExtension(path), "-r", row, "c", col, ".png");
  }
  namespace fs = std::filesystem;
  std::error_code ignored;
  if (fs::equivalent(fs::path(SidecarPath(out)), fs::path(path), ignored)) {
    Fail(absl::StrCat(OutputFlag(out), ": its sidecar ", SidecarPath(out),
                      " is the grid being promoted; give another name"));
  }
  return StreamAndSave(request, out);
}

// What a model's prompts are (class names, or free text with examples), and
// what its judge tells apart: a curve of a model without one is divergence
// alone.
void PrintPrompts(const v1::ModelInfo& m) {
  std::vector<std::string> heads;
  for (const v1::JudgeHeadInfo& head : m.judge().heads()) {
    heads.push_back(absl::StrCat(head.name(), " (", head.labels_size(), " labels)"));
  }
  std::cout << "  judge: "
            << (heads.empty() ? "none (dgrid curve reports divergence alone)"
                              : absl::StrJoin(heads, ", "))
            << "\n";
  if (m.conditioning() != "text") {
    std::cout << "  prompts: " << absl::StrJoin(m.prompts(), ", ")
              << " (an empty prompt: unconditional)\n";
    return;
  }
  std::cout << "  conditioning: text\n  max prompt tokens: " << m.max_prompt_tokens() << "\n";
  if (m.example_prompts_size() > 0) {
    // One a line: prompts hold commas.
    std::cout << "  example prompts:\n";
    for (const std::string& p : m.example_prompts()) std::cout << "    " << p << "\n";
  }
}

// One model, as an orchestrator or a denoiser lists it (the same fields).
void PrintModel(const v1::ModelInfo& m) {
  std::cout << m.name() << " (version " << m.version() << ", latent "
            << absl::StrJoin(m.latent_shape(), "x") << ", default " << m.defaults().steps()
            << " steps, eta " << m.defaults().eta() << ", guidance " << m.defaults().guidance()
            << SpacingNote(m.defaults().spacing())
            << (m.float_timesteps() ? "" : ", whole timesteps") << ")\n";
  PrintPrompts(m);
}

int Models() {
  {
    // An orchestrator lists its pool's models; a denoiser answers UNIMPLEMENTED.
    auto orchestrator = v1::Orchestrator::NewStub(Connect());
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ListModelsResponse listed;
    const grpc::Status status = orchestrator->ListModels(&context, {}, &listed);
    if (status.ok()) {
      for (const v1::ModelInfo& m : listed.models()) PrintModel(m);
      return 0;
    }
    if (status.error_code() != grpc::StatusCode::UNIMPLEMENTED) Check(status, "ListModels");
  }
  auto stub = v1::Denoiser::NewStub(Connect());
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetModelInfoResponse response;
  Check(stub->GetModelInfo(&context, {}, &response), "GetModelInfo");
  for (const v1::ModelInfo& m : response.models()) PrintModel(m);
  return 0;
}

// ---- tokenize (local: reads the bundle, needs no server) ----

std::unique_ptr<Tokenizer> LoadBundleTokenizer(const std::string& dir) {
  absl::StatusOr<BundleManifest> manifest = ReadManifest(dir);
  if (absl::IsNotFound(manifest.status())) {
    Fail(absl::StrCat("no model bundle at ", dir, " (", manifest.status().message(), ")"));
  }
  if (!manifest.ok()) Fail(absl::StrCat(dir, ": ", manifest.status().message()));
  if (!manifest->is_text()) {
    Fail(absl::StrCat(dir, " has no tokenizer: a class model (", manifest->name,
                      "), whose prompts are its class names"));
  }
  const TokenizerFiles& files = manifest->text.tokenizer;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(SpecForBundle(files, dir));
  // Its errors name the file at fault, the manifest for a setting.
  if (!tokenizer.ok()) Fail(std::string(tokenizer.status().message()));
  return std::move(*tokenizer);
}

// The ids the model sees for each prompt (BOS ... EOS, no padding), one line
// per prompt, so that a user can check what a long prompt keeps.
int Tokenize(const std::vector<char*>& args) {
  const std::string dir = absl::GetFlag(FLAGS_model_dir);
  if (dir.empty() || args.size() < 3) {
    Fail("usage: dgrid tokenize --model_dir DIR \"text\" [\"text\" ...]");
  }
  const std::unique_ptr<Tokenizer> tokenizer = LoadBundleTokenizer(dir);
  for (size_t i = 2; i < args.size(); ++i) {
    // The servers' own checks (UTF-8, length, noncharacters), not fewer.
    const absl::Status text = CheckPromptText(absl::StrCat("prompt ", i - 1), args[i]);
    if (!text.ok()) Fail(std::string(text.message()));
  }
  for (size_t i = 2; i < args.size(); ++i) {
    const Tokens tokens = tokenizer->Encode(args[i]);
    std::cout << absl::StrJoin(tokens.ids, " ") << "\n";
    const std::string which = args.size() > 3 ? absl::StrCat("prompt ", i - 1, ": ") : "";
    if (tokens.dropped > 0) {
      std::cout.flush();
      std::cerr << which << tokens.dropped << " tokens dropped (the model keeps "
                << tokenizer->max_length() << ")\n";
    }
    if (!tokens.unknown.empty()) {
      std::cout.flush();
      std::cerr << which << "not in the vocabulary, read as unknown: "
                << QuotedList(tokens.unknown) << "\n";
    }
  }
  return 0;
}

int Health() {
  CheckTextFlags();
  auto stub = grpc::health::v1::Health::NewStub(Connect());
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  Check(stub->Check(&context, request, &response), "health check");
  const bool serving = response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  std::cout << (serving ? "SERVING" : "NOT_SERVING") << "\n";
  return serving ? 0 : 2;
}

// Before the run: the scaled image must be one a viewer opens.
void CheckScale(const v1::ModelInfo& model) {
  constexpr int64_t kMaxSide = 16384;
  const int scale = absl::GetFlag(FLAGS_scale);
  int64_t side = 1;
  for (int i = 0; i < std::min(2, model.image_shape_size()); ++i) {
    side = std::max(side, model.image_shape(i));
  }
  if (scale < 1 || side * scale > kMaxSide) {
    Fail(absl::StrCat("--scale: ", scale, " is out of range; ", model.name(), "'s ", side,
                      "-pixel images take 1 to ", std::max<int64_t>(1, kMaxSide / side),
                      " (at most ", kMaxSide, " pixels a side)"));
  }
}

int Branch() {
  const std::string out = absl::GetFlag(FLAGS_o).empty() ? "branch.png" : absl::GetFlag(FLAGS_o);
  CheckWritable(out, /*svg_allowed=*/false, /*sidecar=*/false);
  CheckTextFlags();
  const SamplerFlags flags;
  v1::SizeConditioning size;
  const bool sized = SizeFromFlags(&size);
  auto stub = v1::Denoiser::NewStub(Connect());
  const v1::ModelInfo model = FetchModel(*stub);
  CheckScale(model);
  v1::BranchRequest request;
  request.set_model(model.name());
  FillRequest(model, flags, request.mutable_sampler(), request.mutable_conditioning(),
              request.add_trajectories()->mutable_path());
  if (sized) *request.mutable_size() = size;
  const int steps = request.sampler().steps();
  for (int s = 1; s < steps; ++s) request.add_capture_steps(s);
  request.set_decode(true);
  grpc::ClientContext context;
  SetDeadline(&context);
  auto reader = stub->Branch(&context, request);
  v1::BranchEvent event;
  const bool tty = ::isatty(2);
  v1::Final final;
  while (reader->Read(&event)) {
    if (event.has_capture() && tty) {
      std::fprintf(stderr, "\rstep %d/%d (t=%d)", event.capture().step(), steps,
                   event.capture().timestep());
    }
    if (event.has_final()) final = event.final();
  }
  if (tty) std::fprintf(stderr, "\n");
  Check(reader->Finish(), "Branch");
  WriteScaledPng(final.image().pixels(), out);
  const std::string negative = absl::GetFlag(FLAGS_negative);
  std::cout << "wrote " << out << " (" << model.name() << ", prompt \""
            << absl::GetFlag(FLAGS_prompt) << "\""
            << (negative.empty() ? "" : absl::StrCat(", negative \"", negative, "\""))
            << ", seed " << absl::GetFlag(FLAGS_seed) << ", "
            << SamplerName(request.sampler()) << ", " << steps << " steps, "
            << final.model_evals() << " model evaluations)\n";
  return 0;
}

int Step() {
  CheckTextFlags();
  const SamplerFlags flags;
  v1::SizeConditioning size;
  const bool sized = SizeFromFlags(&size);
  auto stub = v1::Denoiser::NewStub(Connect());
  const v1::ModelInfo model = FetchModel(*stub);
  v1::StepRequest request;
  request.set_model(model.name());
  FillRequest(model, flags, request.mutable_sampler(), request.mutable_conditioning(),
              request.add_trajectories()->mutable_path());
  if (sized) *request.mutable_size() = size;
  const int step = absl::GetFlag(FLAGS_step);
  const int steps = request.sampler().steps();
  std::optional<std::chrono::system_clock::time_point> deadline;
  // --step's range follows from --steps, whose own range is the server's.
  if (steps >= 1 && (step < 0 || step >= steps)) {
    Fail(absl::StrCat("--step must be in [0, ", steps - 1, "] (", steps, " steps), got ", step));
  }
  if (step > 0) {
    // The latent at --step: the trajectory's prefix, run by the denoiser.
    v1::BranchRequest prefix;
    prefix.set_model(model.name());
    *prefix.mutable_sampler() = request.sampler();
    *prefix.mutable_conditioning() = request.conditioning();
    if (sized) *prefix.mutable_size() = size;
    prefix.set_end_step(step);
    *prefix.add_trajectories()->mutable_path() = request.trajectories(0).path();
    grpc::ClientContext context;
    SetDeadline(&context);
    deadline = context.deadline();  // one --timeout_s for both calls
    auto reader = stub->Branch(&context, prefix);
    v1::BranchEvent event;
    std::optional<v1::Tensor> latent;
    while (reader->Read(&event)) {
      if (event.has_final()) latent = event.final().latent();
    }
    Check(reader->Finish(), "Branch (the steps before --step)");
    if (!latent) Fail("the denoiser sent no latent for the steps before --step");
    *request.mutable_trajectories(0)->mutable_start_latent() = *latent;
  }
  request.set_step(step);
  grpc::ClientContext context;
  SetDeadline(&context);
  if (deadline) context.set_deadline(*deadline);
  v1::StepResponse response;
  Check(stub->Step(&context, request, &response), "Step");
  auto stats = [](const v1::Tensor& t) {
    const size_t n = t.raw_contents().size() / sizeof(float);
    const float* v = reinterpret_cast<const float*>(t.raw_contents().data());
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; ++i) {
      sum += v[i];
      sq += double(v[i]) * v[i];
    }
    const double mean = sum / n;
    return absl::StrCat("mean ", mean, " std ", std::sqrt(std::max(0.0, sq / n - mean * mean)));
  };
  // The model too: a denoiser's first model ran when --model named none.
  std::cout << "step " << step << " (" << SamplerName(request.sampler())
            << ") ran timestep " << response.timestep() << " of " << model.name()
            << "\n  x_next: "
            << stats(response.latents(0)) << "\n  x0_pred: " << stats(response.x0_previews(0))
            << "\n";
  return 0;
}

using Command = std::function<int(const std::vector<char*>&)>;

// A command and the flags it reads.
struct CommandSpec {
  Command run;
  std::set<std::string> flags;
};

const std::map<std::string, CommandSpec>& Commands() {
  // A command of flags alone refuses a word after it: `dgrid grid "ghost"`
  // would otherwise run an unprompted grid.
  auto flags_only = [](int (*run)()) -> Command {
    return [run](const std::vector<char*>& args) {
      if (args.size() > 2) {
        Fail(absl::StrCat("unexpected argument ", ShortQuote(args[2]),
                          ": this command takes flags only (a prompt is --prompt \"...\")"));
      }
      return run();
    };
  };
  auto with = [](std::set<std::string> flags, std::initializer_list<const char*> more) {
    flags.insert(more.begin(), more.end());
    return flags;
  };
  const std::set<std::string> connection = {"target", "timeout_s", "auth_token_file", "tls_ca",
                                            "tls_cert", "tls_key", "tls_name"};
  const std::set<std::string> trajectory =
      with(connection, {"model", "prompt", "negative", "seed", "sampler", "spacing",
                        "original_size", "crop", "target_size", "steps", "eta", "guidance"});
  const std::set<std::string> grid =
      with(trajectory, {"switch_prompt", "switch_negative", "branch_noise", "preset", "branches",
                        "branch_steps", "o"});
  static const auto* commands = new std::map<std::string, CommandSpec>{
      {"grid", {flags_only(Grid), grid}},
      {"curve", {flags_only(Curve), with(grid, {"trunks", "silence_s"})}},
      {"promote", {Promote, with(connection, {"row", "col", "o"})}},
      {"branch", {flags_only(Branch), with(trajectory, {"noise_seed", "segments", "o", "scale"})}},
      {"step", {flags_only(Step), with(trajectory, {"noise_seed", "segments", "step"})}},
      {"models", {flags_only(Models), connection}},
      {"health", {flags_only(Health), with(connection, {"service"})}},
      {"tokenize", {Tokenize, {"model_dir"}}}};
  return *commands;
}

// A flag the command does not read is refused rather than ignored: `dgrid
// promote GRID.json --switch-prompt ...` re-ran the recorded grid as if the
// switch had been taken.
void RefuseUnreadFlags(const std::string& command) {
  const std::set<std::string>& reads = Commands().at(command).flags;
  std::set<std::string> unread_names;
  // This program's own flags, given in the arguments, a --flagfile or the
  // environment alike: a flagfile shared by commands holds only flags all
  // of them read.
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::EndsWith(flag->Filename(), "dgrid.cc") || !GivenByUser(name)) {
      continue;
    }
    if (!reads.count(std::string(name))) unread_names.insert(std::string(name));
  }
  std::vector<std::string> unread;
  for (const std::string& name : unread_names) unread.push_back(absl::StrCat("--", name));
  if (unread.empty()) return;
  std::string hint;
  const std::set<std::string>& grid_flags = Commands().at("grid").flags;
  const bool changes_the_grid =
      std::any_of(unread_names.begin(), unread_names.end(),
                  [&grid_flags](const std::string& name) { return grid_flags.count(name) > 0; });
  if (command == "promote" && changes_the_grid) {
    hint = " (promote re-runs the grid GRID.json records, with the cell as its trunk; to change "
           "the grid, edit the sidecar's \"request\" or use the Python client's promote)";
  }
  Fail(absl::StrCat(absl::StrJoin(unread, ", "), unread.size() == 1 ? " has" : " have",
                    " no effect on dgrid ", command, hint));
}

constexpr char kUsage[] =
    "usage: dgrid COMMAND [flags]\n"
    "  grid     stream a grid from an orchestrator; write the PNG (-o) and a JSON sidecar\n"
    "  curve    a decision curve: --trunks N grids of the grid flags (seeds --seed + t),\n"
    "           judged; write the plot (-o, PNG or .svg) and the curve as JSON\n"
    "  promote  GRID.json --row R --col C: re-run with that cell as the trunk\n"
    "  branch   run one trajectory on a denoiser and write its image (-o)\n"
    "  step     run one sampler step on a denoiser and print statistics\n"
    "  models   list a server's models and prompts\n"
    "  health   check a server's gRPC health (--service=MODEL on a denoiser)\n"
    "  tokenize --model_dir DIR \"text\" ...: a text model's token ids for each prompt,\n"
    "           one line each (BOS ... EOS), read from the bundle (no server)\n"
    "dgrid COMMAND --help lists the flags a command reads.\n";

// dgrid --help, or COMMAND --help: the commands, or the flags the command
// reads with their defaults, on stdout. (absl's own --help prints every
// flag of every command, with this file's path, and exits 1.)
void PrintHelp(const std::string& command) {
  if (!Commands().count(command)) {
    std::cout << kUsage;
    return;
  }
  // The command's line and its continuation lines (indented further).
  bool in_command = false;
  for (absl::string_view line : absl::StrSplit(kUsage, '\n')) {
    if (absl::StartsWith(line, "  ") && !absl::StartsWith(line, "   ")) {
      in_command = absl::StartsWith(line, absl::StrCat("  ", command, " "));
    } else if (!absl::StartsWith(line, "   ")) {
      in_command = false;
    }
    if (in_command) std::cout << line << "\n";
  }
  std::cout << "flags:\n";
  for (const std::string& name : Commands().at(command).flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (!flag) continue;
    const std::string by_default = flag->DefaultValue();
    std::cout << (name.size() == 1 ? "  -" : "  --") << name << "  " << flag->Help()
              << (by_default.empty() ? "" : absl::StrCat(" (default: ", by_default, ")")) << "\n";
  }
}

// Whether the argument after `arg` is its value: `arg` names one of the
// flags (with - or --, hyphens already underscores) that takes a value, and
// gives none with "=".
bool ValueFollows(const std::string& arg) {
  if (arg.size() < 2 || arg[0] != '-' || arg.find('=') != std::string::npos) return false;
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(arg.substr(arg[1] == '-' ? 2 : 1));
  return flag && !flag->IsOfType<bool>();
}

}  // namespace
}  // namespace dgrid

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(dgrid::kUsage);
  // --switch-prompt and --switch_prompt alike (and with one dash): flag
  // names may use hyphens. Not a value given apart: "--prompt --a-b" keeps
  // its prompt.
  std::vector<std::string> spelled(argv, argv + argc);
  for (size_t i = 1; i < spelled.size(); ++i) {
    std::string& arg = spelled[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    const size_t start = arg[1] == '-' ? 2 : 1;
    const size_t end = std::min(arg.find('='), arg.size());
    if (end <= start) continue;
    std::replace(arg.begin() + start, arg.begin() + end, '-', '_');
    if (dgrid::ValueFollows(arg)) ++i;
  }
  // Help and version before absl's parse: absl's --help exits 1, and its
  // --version says "Debug build" of a release build.
  {
    std::string command;
    for (size_t i = 1; i < spelled.size(); ++i) {
      const std::string& arg = spelled[i];
      if (arg == "--") break;
      if (command.empty() && dgrid::Commands().count(arg)) command = arg;
      // A flag's value given apart ("--prompt -h") is no help.
      if (dgrid::ValueFollows(arg)) {
        ++i;
        continue;
      }
      if (arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull") {
        dgrid::PrintHelp(command);
        return 0;
      }
      if (arg == "--version" || arg == "-version") {
        std::cout << "dgrid: Diffusion Grid's command-line client, API dgrid.v1\n";
        return 0;
      }
    }
  }
  // A write past the file-size limit fails with EFBIG, as a full disk does, and
  // is reported; the signal would end the program with a half-written file.
  std::signal(SIGXFSZ, SIG_IGN);
  std::vector<char*> spelled_argv;
  for (std::string& arg : spelled) spelled_argv.push_back(arg.data());
  std::vector<char*> args =
      absl::ParseCommandLine(static_cast<int>(spelled_argv.size()), spelled_argv.data());
  if (args.size() < 2 || !dgrid::Commands().count(args[1])) {
    std::cerr << "dgrid: "
              << (args.size() < 2 ? std::string("expected a command")
                                  : absl::StrCat("unknown command ", dgrid::ShortQuote(args[1])))
              << "; the commands are grid, curve, promote, branch, step, models, health and "
                 "tokenize (see --help)\n";
    return 2;
  }
  try {
    dgrid::RefuseUnreadFlags(args[1]);
    if (absl::GetFlag(FLAGS_timeout_s) < 0) {
      dgrid::Fail(absl::StrCat("--timeout_s: ", absl::GetFlag(FLAGS_timeout_s),
                               " is negative; give seconds, or 0 for the default"));
    }
    const int code = dgrid::Commands().at(args[1]).run(args);
    // What the command printed must have gone out: token ids or a model
    // list lost to a full disk would otherwise exit 0.
    std::cout.flush();
    if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
      dgrid::Fail(absl::StrCat("cannot write to standard output: ", std::strerror(errno)));
    }
    return code;
  } catch (const dgrid::CliError& e) {
    std::cerr << "dgrid " << args[1] << ": " << e.message << "\n";
    return 1;
  }
}
