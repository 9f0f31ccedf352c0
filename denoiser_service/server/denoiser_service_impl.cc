#include "denoiser_service/server/denoiser_service_impl.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"
#include "common/png_image.h"
#include "common/status_macros.h"
#include "common/tensor_codec.h"

namespace dgrid {
namespace {

// How often a handler waiting on the engine checks for client cancellation.
constexpr absl::Duration kCancelPoll = absl::Milliseconds(20);

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",          "UNKNOWN",        "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? kNames[i] : "UNKNOWN";
}

absl::StatusOr<SamplerSettings> ParseSampler(const v1::SamplerConfig& s,
                                             const BundleManifest& m) {
  SamplerSettings out;
  out.steps = s.steps();
  out.eta = s.eta();
  out.guidance = s.guidance();
  switch (s.spacing()) {
    case v1::SPACING_UNSPECIFIED:
      out.spacing = m.defaults.spacing;
      break;
    case v1::SPACING_LEADING:
      out.spacing = Spacing::kLeading;
      break;
    case v1::SPACING_TRAILING:
      out.spacing = Spacing::kTrailing;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("sampler.spacing: unknown value ", static_cast<int>(s.spacing())));
  }
  return out;
}

absl::StatusOr<int64_t> ParseConditioning(const v1::Conditioning& c, const BundleManifest& m) {
  switch (c.label_case()) {
    case v1::Conditioning::kClassIndex:
      if (c.class_index() < 0 || c.class_index() >= static_cast<int>(m.class_labels.size())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "conditioning.class_index must be in [0, ", m.class_labels.size(), ") for model ",
            m.name, ", got ", c.class_index()));
      }
      return c.class_index();
    case v1::Conditioning::kPrompt: {
      const int index = m.ClassIndex(c.prompt());
      if (index < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("conditioning.prompt: unknown prompt \"", c.prompt(), "\" for model ",
                         m.name, "; known: ", absl::StrJoin(m.class_labels, ", ")));
      }
      return index;
    }
    default:
      return -1;
  }
}

Path ParsePath(const v1::Path& p) {
  Path path;
  path.init_seed = p.init_seed();
  path.segments.reserve(p.segments_size());
  for (const v1::Segment& s : p.segments()) path.segments.push_back({s.from_step(), s.noise_seed()});
  return path;
}

// Decodes one latent with the model's decoder into pixels and PNG.
absl::Status DecodeImage(DenoiserModel& model, absl::Span<const float> latent, v1::Image* image) {
  absl::StatusOr<std::vector<uint8_t>> pixels = model.Decode(latent, 1);
  if (!pixels.ok()) return pixels.status();
  const std::vector<int64_t>& is = model.manifest().image_shape;
  EncodeUint8Tensor(*pixels, is, image->mutable_pixels());
  absl::StatusOr<std::string> png = EncodePng(*pixels, is[1], is[0], is[2]);
  if (!png.ok()) return png.status();
  image->set_png(std::move(*png));
  return absl::OkStatus();
}

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// Shared by Step and Branch: everything but the step range.
template <typename Request>
absl::StatusOr<RunRequest> ParseRun(const Request& request, const BundleManifest& m,
                                    int max_trajectories, int start_step) {
  RunRequest run;
  ASSIGN_OR_RETURN(run.sampler, ParseSampler(request.sampler(), m));
  ASSIGN_OR_RETURN(run.class_index, ParseConditioning(request.conditioning(), m));
  if (request.trajectories_size() == 0) {
    return absl::InvalidArgumentError("trajectories must not be empty");
  }
  if (request.trajectories_size() > max_trajectories) {
    return absl::ResourceExhaustedError(absl::StrCat("trajectories: ", request.trajectories_size(),
                                                     " in one request exceeds the limit of ",
                                                     max_trajectories));
  }
  const std::vector<int64_t>& shape = m.latent_shape;
  run.trajectories.resize(request.trajectories_size());
  for (int i = 0; i < request.trajectories_size(); ++i) {
    const v1::TrajectoryInput& in = request.trajectories(i);
    TrajectoryStart& t = run.trajectories[i];
    t.path = ParsePath(in.path());
    if (in.has_start_latent()) {
      RETURN_IF_ERROR(DecodeFloatTensorInto(
          in.start_latent(), shape, absl::StrCat("trajectories[", i, "].start_latent"),
          &t.latent));
    } else if (start_step != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "trajectories[", i, "].start_latent is required when starting at step ", start_step));
    }
  }
  return run;
}

}  // namespace

DenoiserServiceImpl::DenoiserServiceImpl(std::map<std::string, ServedModel>* models,
                                         int max_trajectories_per_request,
                                         DenoiserMetrics* metrics)
    : models_(models),
      max_trajectories_per_request_(max_trajectories_per_request),
      metrics_(metrics) {}

absl::StatusOr<ServedModel*> DenoiserServiceImpl::FindModel(const std::string& name) {
  auto it = models_->find(name);
  if (it == models_->end()) {
    std::vector<std::string> names;
    for (const auto& [n, _] : *models_) names.push_back(n);
    return absl::InvalidArgumentError(absl::StrCat("model: unknown model \"", name,
                                                   "\"; this replica serves: ",
                                                   absl::StrJoin(names, ", ")));
  }
  return &it->second;
}

grpc::Status DenoiserServiceImpl::Count(const char* method, grpc::Status status) {
  if (metrics_) metrics_->CountRequest(method, CodeName(status.error_code()));
  return status;
}

grpc::Status DenoiserServiceImpl::GetModelInfo(grpc::ServerContext*,
                                               const v1::GetModelInfoRequest* request,
                                               v1::GetModelInfoResponse* response) {
  for (const auto& [name, served] : *models_) {
    if (!request->model().empty() && request->model() != name) continue;
    const BundleManifest& m = served.model->manifest();
    v1::ModelInfo* info = response->add_models();
    info->set_name(m.name);
    info->set_version(m.version);
    info->mutable_latent_shape()->Assign(m.latent_shape.begin(), m.latent_shape.end());
    info->mutable_image_shape()->Assign(m.image_shape.begin(), m.image_shape.end());
    for (const std::string& label : m.class_labels) info->add_prompts(label);
    info->set_train_timesteps(m.schedule.train_timesteps);
    info->set_steps_offset(m.schedule.steps_offset);
    static const char* const kPrediction[] = {"epsilon", "sample", "v_prediction"};
    info->set_prediction_type(kPrediction[static_cast<int>(m.schedule.prediction)]);
    v1::SamplerConfig* d = info->mutable_defaults();
    d->set_steps(m.defaults.steps);
    d->set_eta(m.defaults.eta);
    d->set_guidance(m.defaults.guidance);
    d->set_spacing(m.defaults.spacing == Spacing::kLeading ? v1::SPACING_LEADING
                                                          : v1::SPACING_TRAILING);
    info->set_license(m.license);
    info->set_description(m.description);
  }
  if (response->models_size() == 0) {
    return Count("GetModelInfo", ToGrpcStatus(FindModel(request->model()).status()));
  }
  return Count("GetModelInfo", grpc::Status::OK);
}

grpc::Status DenoiserServiceImpl::Step(grpc::ServerContext* context,
                                       const v1::StepRequest* request,
                                       v1::StepResponse* response) {
  auto served = FindModel(request->model());
  if (!served.ok()) return Count("Step", ToGrpcStatus(served.status()));
  const BundleManifest& m = (*served)->model->manifest();
  auto run_request =
      ParseRun(*request, m, max_trajectories_per_request_, request->step());
  if (!run_request.ok()) return Count("Step", ToGrpcStatus(run_request.status()));
  run_request->start_step = request->step();
  run_request->end_step = request->step() + 1;
  run_request->previews = true;
  run_request->deadline = DeadlineOf(*context);
  const int n = request->trajectories_size();

  auto run = (*served)->batcher->Start(std::move(*run_request));
  if (!run.ok()) {
    // The engine names "start_step"; on this RPC the field is "step".
    absl::Status s = run.status();
    if (absl::StartsWith(s.message(), "start_step") || absl::StartsWith(s.message(), "end_step")) {
      s = absl::InvalidArgumentError(absl::StrCat("step must be in [0, sampler.steps), got ",
                                                  request->step()));
    }
    return Count("Step", ToGrpcStatus(s));
  }
  for (int i = 0; i < n; ++i) response->add_latents();
  for (int i = 0; i < n; ++i) response->add_x0_previews();
  RunEvent event;
  while (true) {
    const Run::Wait w = (*run)->Next(kCancelPoll, &event);
    if (w == Run::Wait::kDone) break;
    if (w == Run::Wait::kTimeout) {
      if (context->IsCancelled()) (*run)->Cancel();
      continue;
    }
    EncodeFloatTensor(event.latent, m.latent_shape, response->mutable_latents(event.trajectory));
    EncodeFloatTensor(event.x0, m.latent_shape,
                      response->mutable_x0_previews(event.trajectory));
    response->set_timestep(event.timestep);
  }
  return Count("Step", ToGrpcStatus((*run)->status()));
}

grpc::Status DenoiserServiceImpl::Branch(grpc::ServerContext* context,
                                         const v1::BranchRequest* request,
                                         grpc::ServerWriter<v1::BranchEvent>* writer) {
  auto served = FindModel(request->model());
  if (!served.ok()) return Count("Branch", ToGrpcStatus(served.status()));
  ServedModel& model = **served;
  const BundleManifest& m = model.model->manifest();
  auto run_request =
      ParseRun(*request, m, max_trajectories_per_request_, request->start_step());
  if (!run_request.ok()) return Count("Branch", ToGrpcStatus(run_request.status()));
  run_request->start_step = request->start_step();
  run_request->end_step = request->end_step();
  run_request->capture_steps.assign(request->capture_steps().begin(),
                                    request->capture_steps().end());
  run_request->previews = request->previews();
  run_request->deadline = DeadlineOf(*context);

  auto run = model.batcher->Start(std::move(*run_request));
  if (!run.ok()) return Count("Branch", ToGrpcStatus(run.status()));

  RunEvent event;
  v1::BranchEvent out;
  while (true) {
    const Run::Wait w = (*run)->Next(kCancelPoll, &event);
    if (w == Run::Wait::kDone) break;
    if (w == Run::Wait::kTimeout) {
      if (context->IsCancelled()) (*run)->Cancel();
      continue;
    }
    out.Clear();
    v1::Tensor* latent;
    v1::Tensor* x0;
    v1::Image* image = nullptr;
    v1::Image* x0_image;
    if (event.kind == RunEvent::Kind::kCapture) {
      v1::Capture* c = out.mutable_capture();
      c->set_trajectory(event.trajectory);
      c->set_step(event.step);
      c->set_timestep(event.timestep);
      latent = c->mutable_latent();
      x0 = c->mutable_x0_preview();
      image = c->mutable_image();
      x0_image = c->mutable_x0_image();
    } else {
      v1::Final* f = out.mutable_final();
      f->set_trajectory(event.trajectory);
      f->set_model_evals(event.model_evals);
      latent = f->mutable_latent();
      x0 = f->mutable_x0_preview();
      image = f->mutable_image();
      x0_image = f->mutable_x0_image();
    }
    EncodeFloatTensor(event.latent, m.latent_shape, latent);
    const bool preview = request->previews() && !event.x0.empty();
    if (preview) EncodeFloatTensor(event.x0, m.latent_shape, x0);
    absl::Status decoded = absl::OkStatus();
    if (request->decode()) {
      decoded = DecodeImage(*model.model, event.latent, image);
      if (decoded.ok() && preview) {
        decoded = DecodeImage(*model.model, event.x0, x0_image);
      }
    }
    if (!decoded.ok()) {
      (*run)->Cancel();
      return Count("Branch", ToGrpcStatus(decoded));
    }
    if (!writer->Write(out)) {
      // The client went away: stop its trajectories on the engine.
      (*run)->Cancel();
    }
  }
  return Count("Branch", ToGrpcStatus((*run)->status()));
}

grpc::Status DenoiserServiceImpl::Decode(grpc::ServerContext*, const v1::DecodeRequest* request,
                                         v1::DecodeResponse* response) {
  auto served = FindModel(request->model());
  if (!served.ok()) return Count("Decode", ToGrpcStatus(served.status()));
  DenoiserModel& model = *(*served)->model;
  const BundleManifest& m = model.manifest();
  if (request->latents_size() > max_trajectories_per_request_) {
    return Count("Decode", grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                        absl::StrCat("latents: at most ",
                                                     max_trajectories_per_request_,
                                                     " per request")));
  }
  std::vector<float> latents;
  std::vector<float> one;
  for (int i = 0; i < request->latents_size(); ++i) {
    absl::Status s = DecodeFloatTensorInto(request->latents(i), m.latent_shape,
                                           absl::StrCat("latents[", i, "]"), &one);
    if (!s.ok()) return Count("Decode", ToGrpcStatus(s));
    latents.insert(latents.end(), one.begin(), one.end());
  }
  auto pixels = model.Decode(latents, request->latents_size());
  if (!pixels.ok()) return Count("Decode", ToGrpcStatus(pixels.status()));
  const std::vector<int64_t>& is = m.image_shape;
  const size_t per_image = static_cast<size_t>(m.ImageNumel());
  for (int i = 0; i < request->latents_size(); ++i) {
    absl::Span<const uint8_t> px(pixels->data() + i * per_image, per_image);
    v1::Image* image = response->add_images();
    EncodeUint8Tensor(px, is, image->mutable_pixels());
    auto png = EncodePng(px, is[1], is[0], is[2]);
    if (!png.ok()) return Count("Decode", ToGrpcStatus(png.status()));
    image->set_png(std::move(*png));
  }
  return Count("Decode", grpc::Status::OK);
}

}  // namespace dgrid
