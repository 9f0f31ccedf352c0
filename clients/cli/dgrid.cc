// dgrid: the command-line client. Each subcommand is one function; errors are
// one readable line on stderr and a non-zero exit code.
//
//   dgrid branch --target=127.0.0.1:50051 --prompt=sneaker --seed=7 -o sneaker.png
//   dgrid step --target=127.0.0.1:50051 --step=0 --seed=7
//   dgrid models --target=127.0.0.1:50051
//   dgrid health --target=127.0.0.1:50051
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "common/png_image.h"
#include "common/tensor_codec.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Server address host:port.");
ABSL_FLAG(std::string, model, "", "Model name; empty = the server's first model.");
ABSL_FLAG(std::string, prompt, "", "Class name, e.g. sneaker; empty = unconditional.");
ABSL_FLAG(uint64_t, seed, 0, "Initial-latent seed (path.init_seed).");
ABSL_FLAG(uint64_t, noise_seed, 1, "Noise seed of the first segment.");
ABSL_FLAG(std::string, segments, "",
          "Extra path segments as from_step:noise_seed,... (a branch), e.g. 10:555.");
ABSL_FLAG(int, steps, 0, "DDIM steps; 0 = the model's default.");
ABSL_FLAG(double, eta, -1, "DDIM eta in [0, 1]; negative = the model's default.");
ABSL_FLAG(double, guidance, -1, "Guidance scale; negative = the model's default.");
ABSL_FLAG(int, step, 0, "dgrid step: which step to run (from x_T when 0).");
ABSL_FLAG(int, scale, 8, "Nearest-neighbour upscaling of written PNGs.");
ABSL_FLAG(std::string, o, "", "Output PNG path.");
ABSL_FLAG(std::string, service, "", "dgrid health: service name (a model); empty = server.");
ABSL_FLAG(int, timeout_s, 120, "Deadline for each call, in seconds.");

namespace dgrid {
namespace {

// Errors end the program with one line.
struct CliError {
  std::string message;
};

[[noreturn]] void Fail(const std::string& message) { throw CliError{message}; }

void Check(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) {
    Fail(absl::StrCat(what, ": ", FromGrpcStatus(status).ToString()));
  }
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
}

std::shared_ptr<grpc::Channel> Connect() {
  return grpc::CreateChannel(absl::GetFlag(FLAGS_target), grpc::InsecureChannelCredentials());
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

// Sampler settings: flags override the model's defaults.
void FillRequest(const v1::ModelInfo& model, v1::SamplerConfig* sampler,
                 v1::Conditioning* conditioning, v1::Path* path) {
  *sampler = model.defaults();
  if (absl::GetFlag(FLAGS_steps) != 0) sampler->set_steps(absl::GetFlag(FLAGS_steps));
  if (absl::GetFlag(FLAGS_eta) >= 0) sampler->set_eta(absl::GetFlag(FLAGS_eta));
  if (absl::GetFlag(FLAGS_guidance) >= 0) sampler->set_guidance(absl::GetFlag(FLAGS_guidance));
  if (!absl::GetFlag(FLAGS_prompt).empty()) conditioning->set_prompt(absl::GetFlag(FLAGS_prompt));
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

void WriteScaledPng(const v1::Tensor& pixels, const std::string& path) {
  if (pixels.shape_size() != 3) Fail("the server returned no image");
  const int h = pixels.shape(0), w = pixels.shape(1), c = pixels.shape(2);
  const int k = std::max(1, absl::GetFlag(FLAGS_scale));
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
  std::ofstream out(path, std::ios::binary);
  if (!out.write(png->data(), png->size())) Fail(absl::StrCat("cannot write ", path));
}

int Models() {
  auto stub = v1::Denoiser::NewStub(Connect());
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetModelInfoResponse response;
  Check(stub->GetModelInfo(&context, {}, &response), "GetModelInfo");
  for (const v1::ModelInfo& m : response.models()) {
    std::cout << m.name() << " (version " << m.version() << ", latent "
              << absl::StrJoin(m.latent_shape(), "x") << ", default " << m.defaults().steps()
              << " steps, eta " << m.defaults().eta() << ", guidance " << m.defaults().guidance()
              << ")\n  prompts: " << absl::StrJoin(m.prompts(), ", ") << "\n";
  }
  return 0;
}

int Health() {
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

int Branch() {
  auto stub = v1::Denoiser::NewStub(Connect());
  const v1::ModelInfo model = FetchModel(*stub);
  v1::BranchRequest request;
  request.set_model(model.name());
  FillRequest(model, request.mutable_sampler(), request.mutable_conditioning(),
              request.add_trajectories()->mutable_path());
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
  const std::string out = absl::GetFlag(FLAGS_o).empty() ? "branch.png" : absl::GetFlag(FLAGS_o);
  WriteScaledPng(final.image().pixels(), out);
  std::cout << "wrote " << out << " (" << model.name() << ", prompt \""
            << absl::GetFlag(FLAGS_prompt) << "\", seed " << absl::GetFlag(FLAGS_seed) << ", "
            << final.model_evals() << " model evaluations)\n";
  return 0;
}

int Step() {
  auto stub = v1::Denoiser::NewStub(Connect());
  const v1::ModelInfo model = FetchModel(*stub);
  v1::StepRequest request;
  request.set_model(model.name());
  FillRequest(model, request.mutable_sampler(), request.mutable_conditioning(),
              request.add_trajectories()->mutable_path());
  if (absl::GetFlag(FLAGS_step) != 0) {
    Fail("--step > 0 needs a start latent; use dgrid branch to run a prefix");
  }
  request.set_step(0);
  grpc::ClientContext context;
  SetDeadline(&context);
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
  std::cout << "step 0 ran timestep " << response.timestep() << "\n  x_next: "
            << stats(response.latents(0)) << "\n  x0_pred: " << stats(response.x0_previews(0))
            << "\n";
  return 0;
}

const std::map<std::string, int (*)()>& Commands() {
  static const auto* commands = new std::map<std::string, int (*)()>{
      {"branch", Branch}, {"step", Step}, {"models", Models}, {"health", Health}};
  return *commands;
}

}  // namespace
}  // namespace dgrid

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dgrid COMMAND [flags]\n"
      "  branch   run one trajectory on a denoiser and write its image (-o)\n"
      "  step     run one sampler step on a denoiser and print statistics\n"
      "  models   list a server's models and prompts\n"
      "  health   check a server's gRPC health (--service=MODEL)\n");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2 || !dgrid::Commands().count(args[1])) {
    std::cerr << "dgrid: expected a command: branch, step, models or health (see --help)\n";
    return 2;
  }
  try {
    return dgrid::Commands().at(args[1])();
  } catch (const dgrid::CliError& e) {
    std::cerr << "dgrid " << args[1] << ": " << e.message << "\n";
    return 1;
  }
}
