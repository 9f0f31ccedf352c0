#include "denoiser_service/server/denoiser_service_impl.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/bearer_token.h"
#include "common/grpc_status.h"
#include "common/png_image.h"
#include "common/short_text.h"
#include "common/stall_watchdog.h"
#include "common/status_macros.h"
#include "common/tensor_codec.h"
#include "common/wire.h"
#include "denoiser_service/engine/field_error.h"
#include "denoiser_service/server/wire_fields.h"
#include "denoiser_service/text/tokenizer.h"

namespace dgrid {
namespace {

// The batcher asks whether a run's client went away at every iteration
// (Run::AttachCaller), so a handler waiting on the engine wakes only for its
// events, its progress messages and, failing those, this often to look for
// itself. When every handler woke every 20 ms to poll, the denoiser's gRPC
// threads took 9.7 % of the CPU during a decision curve (4.6 % after;
// bench/PROFILE.md), each wake-up taking a core from a pass's chunk.
constexpr absl::Duration kIdlePoll = absl::Seconds(1);

// TokenizedText.unknown_words: what a client is told of a prompt's words the
// vocabulary lacks, bounded whatever the prompt.
constexpr int kMaxUnknownWords = 16;
// Images all Decode and Judge calls may hold at once (DenoiserServiceImpl::
// image_bytes_): 256 images of 1024x1024 RGB, one full call of SDXL's size.
constexpr int64_t kMaxImageBytes = int64_t{768} << 20;

constexpr size_t kMaxUnknownWordBytes = 64;

// Lets the batcher cancel `run` when the call behind `context` goes away,
// until the returned guard ends (before the call does).
auto WatchCaller(Run& run, grpc::ServerContext& context) {
  run.AttachCaller([&context] { return context.IsCancelled(); });
  return absl::Cleanup([&run] { run.DetachCaller(); });
}

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
  ASSIGN_OR_RETURN(out.spacing,
                   SpacingFromProto(s.spacing(), m.defaults.spacing, "sampler.spacing"));
  ASSIGN_OR_RETURN(out.sampler, SamplerFromProto(s.sampler(), "sampler.sampler"));
  return out;
}

// Fills the run's conditioning from the request: a class index for a class
// model, the prompt and negative prompt for a text model.
absl::Status ParseConditioning(const v1::Conditioning& c, const BundleManifest& m,
                               RunRequest* run) {
  if (m.is_text()) {
    if (c.label_case() == v1::Conditioning::kClassIndex) {
      return absl::InvalidArgumentError(absl::StrCat(
          "conditioning.class_index: ", m.name, " is a text model; give conditioning.prompt"));
    }
    // Checked before the engine's tokenizer reads them.
    RETURN_IF_ERROR(CheckPromptText("conditioning.prompt", c.prompt()));
    RETURN_IF_ERROR(CheckPromptText("conditioning.negative_prompt", c.negative_prompt()));
    run->prompt = c.prompt();
    run->negative_prompt = c.negative_prompt();
    return absl::OkStatus();
  }
  if (!c.negative_prompt().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "conditioning.negative_prompt: ", m.name, " is a class model and takes none"));
  }
  switch (c.label_case()) {
    case v1::Conditioning::kClassIndex:
      if (c.class_index() < 0 || c.class_index() >= static_cast<int>(m.class_labels.size())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "conditioning.class_index must be in [0, ", m.class_labels.size(), ") for model ",
            m.name, ", got ", c.class_index()));
      }
      run->class_index = c.class_index();
      return absl::OkStatus();
    case v1::Conditioning::kPrompt: {
      // The empty prompt is no class, as in a path segment and a grid.
      if (c.prompt().empty()) {
        run->class_index = -1;
        return absl::OkStatus();
      }
      const int index = m.ClassIndex(c.prompt());
      if (index < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("conditioning.prompt: unknown prompt ", ShortQuote(c.prompt()),
                         " for model ", m.name, ", a class model; its prompts are: ",
                         ShortList(m.class_labels)));
      }
      run->class_index = index;
      return absl::OkStatus();
    }
    default:
      run->class_index = -1;
      return absl::OkStatus();
  }
}

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// A Branch call's writes, each ended (the call cancelled) when its client
// takes nothing for the stall bound: else a stream nobody reads holds a
// server thread, of the 1024 every client shares, and its events, for as
// long as its client keeps the connection (1,000 such streams refused every
// other call, while health said SERVING).
class StalledWrites {
 public:
  StalledWrites(grpc::ServerContext& context, grpc::ServerWriter<v1::BranchEvent>& writer,
                StallWatchdog* watchdog)
      : context_(context), writer_(writer), watchdog_(watchdog) {}
  // False when the write failed: the client went away, or took nothing.
  bool Write(const v1::BranchEvent& event) {
    if (!watchdog_) return writer_.Write(event);
    const StallWatchdog::CallId id = watchdog_->Watch([this] { context_.TryCancel(); });
    const bool written = writer_.Write(event);
    if (watchdog_->Unwatch(id)) stalled_ = true;
    return written && !stalled_;
  }
  bool stalled() const { return stalled_; }

 private:
  grpc::ServerContext& context_;
  grpc::ServerWriter<v1::BranchEvent>& writer_;
  StallWatchdog* const watchdog_;
  bool stalled_ = false;
};

// Sends a Branch caller a Progress event at least every `interval` (never
// when zero), so that it can time out a stuck replica by progress rather
// than by wall time, and count what a failed attempt spent.
class ProgressTicker {
 public:
  // Intervals below 20 ms are raised to it: a caller cannot make the replica
  // spend itself on progress messages.
  ProgressTicker(absl::Duration interval, const TrajectoryBatcher& batcher)
      : interval_(interval > absl::ZeroDuration() ? std::max(interval, absl::Milliseconds(20))
                                                  : interval),
        batcher_(batcher) {}
  // How long to wait on the engine: until the next progress message is due.
  absl::Duration poll() const {
    if (interval_ <= absl::ZeroDuration()) return kIdlePoll;
    return std::clamp(last_ + interval_ - absl::Now(), absl::Milliseconds(1), interval_);
  }
  // False when the write failed: the client went away.
  bool SendIfDue(const Run& run, StalledWrites* writer) {
    if (interval_ <= absl::ZeroDuration() || absl::Now() - last_ < interval_) return true;
    return Send(run, writer);
  }
  bool Send(const Run& run, StalledWrites* writer) {
    if (interval_ <= absl::ZeroDuration()) return true;
    last_ = absl::Now();
    v1::BranchEvent event;
    event.mutable_progress()->set_model_evals(run.model_evals());
    event.mutable_progress()->set_replica_forwards(batcher_.forwards());
    return writer->Write(event);
  }

 private:
  const absl::Duration interval_;
  const TrajectoryBatcher& batcher_;
  absl::Time last_ = absl::Now();
};

// A refusal for this replica's message limit, as FAILED_PRECONDITION: an
// orchestrator sends GetModelInfo, Tokenize and Judge calls of its own
// making, and passes a replica's INVALID_ARGUMENT on to its client as the
// client's mistake.
absl::Status AsReplicasLimit(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  return absl::FailedPreconditionError(status.message());
}

// Distinct segment conditionings one Step or Branch request may carry, and
// segments of one path that carry one (each a switch the engine holds for
// the trajectory's life; a grid's cell switches at most 16 times).
constexpr size_t kMaxConditioningsPerRequest = 64;
constexpr int kMaxSwitchesPerPath = 64;

// Shared by Step and Branch: everything but the step range.
template <typename Request>
absl::StatusOr<RunRequest> ParseRun(const Request& request, const BundleManifest& m,
                                    int max_trajectories, int start_step) {
  RunRequest run;
  ASSIGN_OR_RETURN(run.sampler, ParseSampler(request.sampler(), m));
  RETURN_IF_ERROR(ParseConditioning(request.conditioning(), m, &run));
  run.size = SizeFromProto(request.size());
  if (request.trajectories_size() == 0) {
    return absl::InvalidArgumentError("trajectories must not be empty");
  }
  if (request.trajectories_size() > max_trajectories) {
    // A fixed limit: no retry can succeed, so not RESOURCE_EXHAUSTED.
    return absl::InvalidArgumentError(absl::StrCat("trajectories: ", request.trajectories_size(),
                                                   " in one request exceeds the limit of ",
                                                   max_trajectories));
  }
  const std::vector<int64_t>& shape = m.latent_shape;
  run.trajectories.resize(request.trajectories_size());
  // Each distinct conditioning is tokenized and encoded (on the batcher's
  // thread, beside every other client's passes): a bound per request, far
  // above what a grid sends (its request's, its switch's and its trunk's).
  std::set<std::tuple<int, std::string, std::string>> conditionings;
  for (int i = 0; i < request.trajectories_size(); ++i) {
    const v1::TrajectoryInput& in = request.trajectories(i);
    TrajectoryStart& t = run.trajectories[i];
    t.path = PathFromProto(in.path());
    int switches = 0;
    for (int j = 0; j < in.path().segments_size(); ++j) {
      if (!in.path().segments(j).has_conditioning()) continue;
      const v1::Conditioning& c = in.path().segments(j).conditioning();
      const std::string field =
          absl::StrCat("trajectories[", i, "].path.segments[", j, "].conditioning");
      if (++switches > kMaxSwitchesPerPath) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": more than ", kMaxSwitchesPerPath, " segments of one path carry a "
            "conditioning"));
      }
      if (c.label_case() == v1::Conditioning::kClassIndex && c.class_index() < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".class_index must be >= 0, got ", c.class_index()));
      }
      if (m.is_text()) {
        // Checked before the engine's tokenizer reads them.
        RETURN_IF_ERROR(CheckPromptText(field + ".prompt", c.prompt()));
        RETURN_IF_ERROR(CheckPromptText(field + ".negative_prompt", c.negative_prompt()));
      }
      conditionings.insert(
          {c.label_case() == v1::Conditioning::kClassIndex ? c.class_index() : -1,
           c.label_case() == v1::Conditioning::kPrompt ? c.prompt() : "", c.negative_prompt()});
      if (conditionings.size() > kMaxConditioningsPerRequest) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": more than ", kMaxConditioningsPerRequest,
                         " distinct segment conditionings in one request"));
      }
    }
    if (in.has_start_latent()) {
      RETURN_IF_ERROR(DecodeFloatTensorInto(
          in.start_latent(), shape, absl::StrCat("trajectories[", i, "].start_latent"),
          &t.latent));
    } else if (start_step > 0 && start_step < run.sampler.steps) {
      // (A step out of range is the engine's to name: "step must be in ...".)
      return absl::InvalidArgumentError(absl::StrCat(
          "trajectories[", i, "].start_latent is required when starting at step ", start_step));
    }
  }
  return run;
}

// A Branch request as the engine takes it: ParseRun plus the step range,
// captures, images, fairness and deadline.
absl::StatusOr<RunRequest> ParseBranch(const v1::BranchRequest& request, const BundleManifest& m,
                                       int max_trajectories, absl::Time deadline) {
  if (request.progress_interval_ms() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("progress_interval_ms must be >= 0 (0: no progress events), got ",
                     request.progress_interval_ms()));
  }
  ASSIGN_OR_RETURN(RunRequest run, ParseRun(request, m, max_trajectories, request.start_step()));
  run.start_step = request.start_step();
  run.end_step = request.end_step();
  run.capture_steps.assign(request.capture_steps().begin(), request.capture_steps().end());
  run.previews = request.previews();
  run.decode = request.decode();
  run.decode_finals_only = request.decode_finals_only();
  run.deadline = deadline;
  run.fairness_key = request.fairness_key();
  run.fairness_rank = request.fairness_rank();
  run.batch_work = request.batch_work();
  return run;
}

// Writes a Branch run's events to its caller as they come, with Progress
// events between them, until the run ends; cancels the run when the client
// goes away. Returns the run's status in the wire's field names.
absl::Status StreamBranch(const v1::BranchRequest& request, const ServedModel& model, Run& run,
                          int64_t max_message_bytes, grpc::ServerContext& context,
                          StalledWrites& writer) {
  const BundleManifest& m = model.model->manifest();
  RunEvent event;
  v1::BranchEvent out;
  ProgressTicker progress(absl::Milliseconds(request.progress_interval_ms()), *model.batcher);
  const auto watch = WatchCaller(run, context);
  bool client_gone = false;
  while (true) {
    const Run::Wait w = run.Next(progress.poll(), &event);
    if (w == Run::Wait::kDone) break;
    if (w == Run::Wait::kTimeout) {
      if (context.IsCancelled() || !progress.SendIfDue(run, &writer)) {
        client_gone = true;
        run.Cancel();
      }
      continue;
    }
    // Cancelled (its client gone): the events still queued would be encoded
    // as PNGs for writes that fail at once.
    if (run.cancelled()) continue;
    const bool images = request.decode() && (event.kind == RunEvent::Kind::kFinal ||
                                             !request.decode_finals_only());
    if (absl::Status decoded = RunEventToProto(event, m, request.previews(), images, &out);
        !decoded.ok()) {
      run.Cancel();
      return decoded;
    }
    // Its PNGs can take an event past the limit that Branch's check before
    // the work allowed: gRPC would refuse the write as a client gone.
    if (const int64_t bytes = static_cast<int64_t>(out.ByteSizeLong()); bytes > max_message_bytes) {
      run.Cancel();
      return absl::FailedPreconditionError(absl::StrCat(
          request.previews() ? "previews" : "decode", ": an event of ", ByteCount(bytes),
          " (latent and images) is past this replica's message limit of ",
          ByteCount(max_message_bytes), " (--max_message_bytes)"));
    }
    if (!writer.Write(out) || !progress.SendIfDue(run, &writer)) {
      // The client went away: stop its trajectories on the engine.
      client_gone = true;
      run.Cancel();
    }
  }
  // A run that ended before its events were all written is no OK call.
  if (writer.stalled()) {
    return absl::CancelledError(
        "the client took no event for the write stall bound (--max_write_stall_s)");
  }
  if (client_gone && run.status().ok()) return absl::CancelledError("the client went away");
  const absl::Status status = ToWireFields(run.status(), DenoiserRpc::kBranch);
  // A failed attempt's last count: the caller counts what it spent.
  if (!status.ok()) progress.Send(run, &writer);
  return status;
}

// A Judge request's image as the judge takes it: 8-bit [H, W, C] of the
// model's image_shape, from its pixels tensor or its PNG. Errors name
// `field` (images[i]).
absl::Status ParseJudgeImage(const v1::Image& image, const BundleManifest& m,
                             const std::string& field, std::vector<uint8_t>* out) {
  const std::vector<int64_t>& is = m.image_shape;
  const size_t numel = static_cast<size_t>(m.ImageNumel());
  if (image.has_pixels()) {
    const v1::Tensor& t = image.pixels();
    if (t.dtype() != v1::DATA_TYPE_UINT8) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".pixels.dtype must be DATA_TYPE_UINT8, got ", DataTypeText(t.dtype())));
    }
    if (!std::equal(t.shape().begin(), t.shape().end(), is.begin(), is.end())) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".pixels.shape must be [",
                                                     absl::StrJoin(is, ","), "] (H, W, C)"));
    }
    if (t.raw_contents().size() != numel) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".pixels.raw_contents must hold ", numel, " bytes"));
    }
    out->insert(out->end(), t.raw_contents().begin(), t.raw_contents().end());
    return absl::OkStatus();
  }
  if (image.png().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": give pixels or png"));
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(image.png().data());
  absl::StatusOr<DecodedPng> png = DecodePngOfSize({bytes, image.png().size()},
                                                   static_cast<int>(is[1]),
                                                   static_cast<int>(is[0]));
  if (!png.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ".", png.status().message()));
  const int want = static_cast<int>(is[2]);
  // RGBA for an RGB model: the alpha is dropped.
  if (png->channels != want && !(want == 3 && png->channels == 4)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".png has ", png->channels,
                                                   " channels; ", m.name, " draws ", want));
  }
  for (size_t i = 0; i < static_cast<size_t>(is[0] * is[1]); ++i) {
    out->insert(out->end(), png->pixels.begin() + i * png->channels,
                png->pixels.begin() + i * png->channels + want);
  }
  return absl::OkStatus();
}

}  // namespace

DenoiserServiceImpl::DenoiserServiceImpl(std::map<std::string, ServedModel>* models,
                                         int max_trajectories_per_request,
                                         int max_message_bytes, DenoiserMetrics* metrics,
                                         std::string auth_token)
    : RequestParsingService(v1::Denoiser::service_full_name()),
      models_(models),
      max_trajectories_per_request_(max_trajectories_per_request),
      max_message_bytes_(max_message_bytes),
      metrics_(metrics),
      auth_token_(std::move(auth_token)) {
  AddUnary("GetModelInfo", &DenoiserServiceImpl::GetModelInfo);
  AddUnary("Step", &DenoiserServiceImpl::Step);
  AddServerStreaming("Branch", &DenoiserServiceImpl::Branch);
  AddUnary("Decode", &DenoiserServiceImpl::Decode);
  AddUnary("Tokenize", &DenoiserServiceImpl::Tokenize);
  AddUnary("Judge", &DenoiserServiceImpl::Judge);
}

absl::StatusOr<ServedModel*> DenoiserServiceImpl::FindModel(const std::string& name) {
  if (name.empty()) {
    // "" is the first model, as the README and GetModelInfo have it.
    ServedModel* first = nullptr;
    for (auto& [_, served] : *models_) {
      if (!first || served.order < first->order) first = &served;
    }
    if (first) return first;
  }
  auto it = models_->find(name);
  if (it == models_->end()) {
    std::vector<std::string> names;
    for (const auto& [n, _] : *models_) names.push_back(n);
    return absl::InvalidArgumentError(absl::StrCat("model: unknown model ", ShortQuote(name),
                                                   "; this replica serves: ",
                                                   absl::StrJoin(names, ", ")));
  }
  return &it->second;
}

absl::StatusOr<ServedModel*> DenoiserServiceImpl::FindModel(const std::string& name,
                                                            const std::string& version) {
  absl::StatusOr<ServedModel*> served = FindModel(name);
  if (!served.ok() || version.empty()) return served;
  const std::string& here = (*served)->model->manifest().version;
  if (here == version) return served;
  return absl::UnavailableError(absl::StrCat(
      "model_version: this replica serves ", (*served)->model->manifest().name, " version ",
      ShortQuote(here), ", not ", ShortQuote(version), "; ask another replica"));
}

absl::Status DenoiserServiceImpl::Authorize(const grpc::ServerContext& context) const {
  if (auth_token_.empty()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  // The token itself is never logged or echoed. Given twice, it is refused:
  // a proxy in front may read the other.
  if (it == metadata.end() || metadata.count("authorization") > 1 ||
      !BearerTokenMatches(absl::string_view(it->second.data(), it->second.size()), auth_token_)) {
    return absl::UnauthenticatedError(
        "this denoiser answers only its orchestrator: missing or invalid bearer token");
  }
  return absl::OkStatus();
}

// Every call, before its request is parsed: one without the token learns
// nothing of what it sent.
grpc::Status DenoiserServiceImpl::Admit(const char* method, const grpc::ServerContext& context) {
  return ToGrpcStatus(Authorize(context));
}

void DenoiserServiceImpl::Refused(const char* method, const grpc::Status& status) {
  Count(method, status);
}

grpc::Status DenoiserServiceImpl::Count(const char* method, grpc::Status status) {
  if (metrics_) metrics_->CountRequest(method, CodeName(status.error_code()));
  return status;
}

grpc::Status DenoiserServiceImpl::GetModelInfo(grpc::ServerContext* context,
                                               const v1::GetModelInfoRequest* request,
                                               v1::GetModelInfoResponse* response) {
  std::vector<const ServedModel*> in_order;
  for (const auto& [name, served] : *models_) {
    if (request->model().empty() || request->model() == name) in_order.push_back(&served);
  }
  std::sort(in_order.begin(), in_order.end(),
            [](const ServedModel* a, const ServedModel* b) { return a->order < b->order; });
  for (const ServedModel* served : in_order) {
    *response->add_models() = ModelInfoFromManifest(served->model->manifest());
  }
  if (response->models_size() == 0) {
    return Count("GetModelInfo", ToGrpcStatus(FindModel(request->model()).status()));
  }
  return Count("GetModelInfo", ToGrpcStatus(AsReplicasLimit(CheckAnswerSize(
                                   "model", response->models_size(),
                                   static_cast<int64_t>(response->ByteSizeLong()),
                                   "model descriptions"))));
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
  // One step; at INT32_MAX (refused as out of range) without overflowing.
  run_request->end_step =
      static_cast<int>(std::min<int64_t>(int64_t{request->step()} + 1, INT32_MAX));
  run_request->previews = true;
  run_request->deadline = DeadlineOf(*context);
  const int n = request->trajectories_size();
  const absl::Status fits = CheckAnswerSize(
      "trajectories", n, n * (*served)->answer.step_item, "latents and x0 previews");
  if (!fits.ok()) return Count("Step", ToGrpcStatus(fits));

  auto run = (*served)->batcher->Start(std::move(*run_request));
  if (!run.ok()) {
    return Count("Step", ToGrpcStatus(ToWireFields(run.status(), DenoiserRpc::kStep)));
  }
  for (int i = 0; i < n; ++i) response->add_latents();
  for (int i = 0; i < n; ++i) response->add_x0_previews();
  RunEvent event;
  const auto watch = WatchCaller(**run, *context);
  while (true) {
    const Run::Wait w = (*run)->Next(kIdlePoll, &event);
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
  absl::Status status = ToWireFields((*run)->status(), DenoiserRpc::kStep);
  if (status.ok()) {
    status = CheckAnswerSize("trajectories", n, static_cast<int64_t>(response->ByteSizeLong()),
                             "latents and x0 previews");
  }
  return Count("Step", ToGrpcStatus(status));
}

grpc::Status DenoiserServiceImpl::Branch(grpc::ServerContext* context,
                                         const v1::BranchRequest* request,
                                         grpc::ServerWriter<v1::BranchEvent>* writer) {
  auto served = FindModel(request->model(), request->model_version());
  if (!served.ok()) return Count("Branch", ToGrpcStatus(served.status()));
  ServedModel& model = **served;
  auto run_request = ParseBranch(*request, model.model->manifest(),
                                 max_trajectories_per_request_, DeadlineOf(*context));
  if (!run_request.ok()) return Count("Branch", ToGrpcStatus(run_request.status()));
  // One event, at the least its latent and (asked for) its x0 and images;
  // their PNGs come on top, checked as each is written.
  const bool previews = request->previews();
  const int64_t latents = previews ? model.answer.step_item : model.answer.step_item / 2;
  const int64_t images = request->decode() ? (previews ? 2 : 1) * model.answer.decode_item : 0;
  if (latents + images > max_message_bytes_) {
    // The replica's setting, not the request alone: an orchestrator passes
    // it on as such, not as its client's mistake.
    const char* field = previews ? "previews" : request->decode() ? "decode" : "trajectories";
    return Count("Branch", ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
                               field, ": one event of this model is ", ByteCount(latents + images),
                               " at the least, past this replica's message limit of ",
                               ByteCount(max_message_bytes_), " (--max_message_bytes)"))));
  }
  auto run = model.batcher->Start(std::move(*run_request));
  if (!run.ok()) {
    return Count("Branch", ToGrpcStatus(ToWireFields(run.status(), DenoiserRpc::kBranch)));
  }
  StalledWrites writes(*context, *writer, write_watch_);
  return Count("Branch", ToGrpcStatus(StreamBranch(*request, model, **run, max_message_bytes_,
                                                   *context, writes)));
}

AnswerSizes AnswerSizesOf(const BundleManifest& m) {
  AnswerSizes sizes;
  v1::StepResponse step;
  const std::vector<float> zeros(static_cast<size_t>(m.LatentNumel()));
  EncodeFloatTensor(zeros, m.latent_shape, step.add_latents());
  EncodeFloatTensor(zeros, m.latent_shape, step.add_x0_previews());
  sizes.step_item = static_cast<int64_t>(step.ByteSizeLong());
  v1::DecodeResponse decode;
  EncodeUint8Tensor(std::vector<uint8_t>(static_cast<size_t>(m.ImageNumel())), m.image_shape,
                    decode.add_images()->mutable_pixels());
  sizes.decode_item = static_cast<int64_t>(decode.ByteSizeLong());
  return sizes;
}

absl::Status DenoiserServiceImpl::CheckAnswerSize(absl::string_view field, int n, int64_t bytes,
                                                  absl::string_view items) const {
  if (bytes <= max_message_bytes_) return absl::OkStatus();
  const int64_t item_bytes = n > 0 ? (bytes + n - 1) / n : bytes;
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": ", n, " ", items, " make an answer of ", ByteCount(bytes),
      ", past this replica's message limit of ", ByteCount(max_message_bytes_),
      " (--max_message_bytes); at most ", max_message_bytes_ / std::max<int64_t>(item_bytes, 1),
      " fit in one call"));
}

DenoiserServiceImpl::HeldImageBytes::HeldImageBytes(HeldImageBytes&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), bytes_(other.bytes_) {}

DenoiserServiceImpl::HeldImageBytes::~HeldImageBytes() {
  if (pool_) pool_->fetch_sub(bytes_);
}

absl::StatusOr<DenoiserServiceImpl::HeldImageBytes> DenoiserServiceImpl::HoldImageBytes(
    absl::string_view field, int n, const BundleManifest& m) {
  const int64_t bytes = int64_t{n} * m.ImageNumel();
  if (bytes > kMaxImageBytes) {  // never fits: not RESOURCE_EXHAUSTED
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", n, " images of ", m.name,
                                                   "'s size take ", bytes >> 20,
                                                   " MiB; at most ", kMaxImageBytes >> 20,
                                                   " MiB in one call"));
  }
  for (int64_t held = image_bytes_.load();;) {
    if (held + bytes > kMaxImageBytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          field, ": other Decode and Judge calls hold ", held >> 20, " MiB of images; try again"));
    }
    if (image_bytes_.compare_exchange_weak(held, held + bytes)) break;
  }
  return HeldImageBytes(&image_bytes_, bytes);
}

grpc::Status DenoiserServiceImpl::Decode(grpc::ServerContext* context,
                                         const v1::DecodeRequest* request,
                                         v1::DecodeResponse* response) {
  auto served = FindModel(request->model());
  if (!served.ok()) return Count("Decode", ToGrpcStatus(served.status()));
  const BundleManifest& m = (*served)->model->manifest();
  if (request->latents_size() > max_trajectories_per_request_) {
    return Count("Decode", grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                        absl::StrCat("latents: at most ",
                                                     max_trajectories_per_request_,
                                                     " per request")));
  }
  const int n = request->latents_size();
  // At least each image's pixels (its PNG comes on top, its size unknown).
  const absl::Status fits =
      CheckAnswerSize("latents", n, n * (*served)->answer.decode_item, "images");
  if (!fits.ok()) return Count("Decode", ToGrpcStatus(fits));
  // The decoded pixels wait in memory for the engine's turn, as a Judge
  // call's do: one budget for both.
  absl::StatusOr<HeldImageBytes> held = HoldImageBytes("latents", n, m);
  if (!held.ok()) return Count("Decode", ToGrpcStatus(held.status()));
  std::vector<float> latents;
  std::vector<float> one;
  for (int i = 0; i < request->latents_size(); ++i) {
    absl::Status s = DecodeFloatTensorInto(request->latents(i), m.latent_shape,
                                           absl::StrCat("latents[", i, "]"), &one);
    if (!s.ok()) return Count("Decode", ToGrpcStatus(s));
    latents.insert(latents.end(), one.begin(), one.end());
  }
  // On the engine's thread: RPC threads never run the model. A caller that
  // gave up stops the turns still to come.
  auto pixels = (*served)->batcher->Decode(std::move(latents), request->latents_size(),
                                           DeadlineOf(*context),
                                           [context] { return context->IsCancelled(); });
  if (!pixels.ok()) {
    absl::Status status = pixels.status();
    // The decoder's refusal of a caller's latent names no field of its own.
    if (status.code() == absl::StatusCode::kInvalidArgument && !ErrorField(status)) {
      status = absl::InvalidArgumentError(absl::StrCat("latents: ", status.message()));
    }
    return Count("Decode", ToGrpcStatus(status));
  }
  const size_t per_image = static_cast<size_t>(m.ImageNumel());
  for (int i = 0; i < request->latents_size(); ++i) {
    absl::Status filled = ImageToProto(
        absl::MakeConstSpan(pixels->data() + i * per_image, per_image), m, response->add_images());
    if (!filled.ok()) return Count("Decode", ToGrpcStatus(filled));
  }
  // The pixels and their PNGs, which only now have a size.
  return Count("Decode", ToGrpcStatus(CheckAnswerSize(
                             "latents", n, static_cast<int64_t>(response->ByteSizeLong()),
                             "images")));
}

grpc::Status DenoiserServiceImpl::Tokenize(grpc::ServerContext* context,
                                           const v1::TokenizeRequest* request,
                                           v1::TokenizeResponse* response) {
  auto served = FindModel(request->model());
  if (!served.ok()) return Count("Tokenize", ToGrpcStatus(served.status()));
  const Tokenizer* tokenizer = (*served)->model->tokenizer();
  if (!tokenizer) {
    return Count("Tokenize", ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
                                 "model: ", (*served)->model->manifest().name,
                                 " is a class model; it has no tokenizer"))));
  }
  if (request->texts_size() > max_trajectories_per_request_) {
    // This replica's setting: an orchestrator tokenizes a grid's prompts of
    // its own accord (4 texts, and 2 a trunk switch).
    return Count("Tokenize", ToGrpcStatus(AsReplicasLimit(absl::InvalidArgumentError(absl::StrCat(
                                 "texts: at most ", max_trajectories_per_request_,
                                 " per request (--max_trajectories_per_request)")))));
  }
  // Every text is checked before any is tokenized: each then costs at most
  // about a millisecond, and a caller that gave up stops the rest.
  for (int i = 0; i < request->texts_size(); ++i) {
    absl::Status checked = CheckPromptText(absl::StrCat("texts[", i, "]"), request->texts(i));
    if (!checked.ok()) return Count("Tokenize", ToGrpcStatus(checked));
  }
  for (const std::string& text : request->texts()) {
    if (absl::Now() > DeadlineOf(*context)) {
      return Count("Tokenize", grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                            "the caller's deadline passed"));
    }
    if (context->IsCancelled()) {
      return Count("Tokenize",
                   grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled"));
    }
    const Tokens tokens = tokenizer->Encode(text);
    v1::TokenizedText* out = response->add_texts();
    out->mutable_ids()->Assign(tokens.ids.begin(), tokens.ids.end());
    out->set_dropped(tokens.dropped);
    for (const std::string& word : tokens.unknown) {
      if (out->unknown_words_size() == kMaxUnknownWords) break;
      out->add_unknown_words(std::string(Utf8Prefix(word, kMaxUnknownWordBytes)));
    }
  }
  return Count("Tokenize", ToGrpcStatus(AsReplicasLimit(CheckAnswerSize(
                               "texts", response->texts_size(),
                               static_cast<int64_t>(response->ByteSizeLong()), "token lists"))));
}

grpc::Status DenoiserServiceImpl::Judge(grpc::ServerContext* context,
                                        const v1::JudgeRequest* request,
                                        v1::JudgeResponse* response) {
  auto served = FindModel(request->model(), request->model_version());
  if (!served.ok()) return Count("Judge", ToGrpcStatus(served.status()));
  const BundleManifest& m = (*served)->model->manifest();
  ImageJudge* judge = (*served)->judge.get();
  if (!judge) {
    return Count("Judge", ToGrpcStatus(absl::FailedPreconditionError(absl::StrCat(
                              "model: ", m.name, " has no judge (its manifest names none)"))));
  }
  const int n = request->images_size();
  if (n == 0 || n > max_trajectories_per_request_) {
    // A fixed limit: no retry can succeed, so not RESOURCE_EXHAUSTED. (An
    // orchestrator's judge reads a replica's INVALID_ARGUMENT as the
    // replica's, and tries another: CallJudge.)
    return Count("Judge", ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
                              "images: ", n, " in one request; give 1 to ",
                              max_trajectories_per_request_))));
  }
  absl::StatusOr<HeldImageBytes> held = HoldImageBytes("images", n, m);
  if (!held.ok()) return Count("Judge", ToGrpcStatus(held.status()));
  std::vector<uint8_t> pixels;
  pixels.reserve(static_cast<size_t>(n) * m.ImageNumel());
  for (int i = 0; i < n; ++i) {
    absl::Status parsed =
        ParseJudgeImage(request->images(i), m, absl::StrCat("images[", i, "]"), &pixels);
    if (!parsed.ok()) return Count("Judge", ToGrpcStatus(parsed));
  }
  // On the batcher's forward workers, in turns with the trajectories.
  const size_t per_image = static_cast<size_t>(m.ImageNumel());
  std::vector<ImageVerdict> verdicts(n);
  const absl::Status judged = (*served)->batcher->RunBeside(
      n,
      [&](int begin, int count) -> absl::Status {
        ASSIGN_OR_RETURN(std::vector<ImageVerdict> part,
                         judge->Judge(absl::MakeConstSpan(pixels).subspan(begin * per_image,
                                                                          count * per_image),
                                      count));
        std::move(part.begin(), part.end(), verdicts.begin() + begin);
        return absl::OkStatus();
      },
      DeadlineOf(*context), [context] { return context->IsCancelled(); });
  if (!judged.ok()) return Count("Judge", ToGrpcStatus(judged));
  const std::vector<JudgeHead>& heads = judge->spec().heads;
  for (const ImageVerdict& verdict : verdicts) {
    v1::ImageVerdict* out = response->add_images();
    for (size_t h = 0; h < heads.size(); ++h) {
      v1::HeadVerdict* head = out->add_heads();
      head->set_head(heads[h].name);
      head->set_label_index(verdict[h].label);
      head->set_label(heads[h].labels[verdict[h].label]);
      head->set_probability(verdict[h].probability);
    }
  }
  return Count("Judge", ToGrpcStatus(AsReplicasLimit(CheckAnswerSize(
                            "images", n, static_cast<int64_t>(response->ByteSizeLong()),
                            "verdicts"))));
}

}  // namespace dgrid
