// The gRPC adapter of the denoiser: each handler parses and validates the
// request, calls the engine and encodes the answer (as TF Serving's
// prediction_service_impl). The sampling logic lives in engine/. Requests
// that do not parse get INVALID_ARGUMENT naming the field (see
// common/request_parsing.h), before any handler runs.
#ifndef DGRID_DENOISER_SERVER_DENOISER_SERVICE_IMPL_H_
#define DGRID_DENOISER_SERVER_DENOISER_SERVICE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/request_parsing.h"
#include "common/stall_watchdog.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/engine/image_judge.h"
#include "denoiser_service/engine/trajectory_batcher.h"
#include "denoiser_service/server/denoiser_metrics.h"
#include "dgrid/v1/denoiser.grpc.pb.h"

namespace dgrid {

// The bytes one item adds to a Step answer (a latent and its x0) and, at
// the least, to a Decode answer (an image's pixels; its PNG comes on top):
// fixed by the model, for the checks against the message limit.
struct AnswerSizes {
  int64_t step_item = 0;
  int64_t decode_item = 0;
};
AnswerSizes AnswerSizesOf(const BundleManifest& m);

struct ServedModel {
  std::unique_ptr<DenoiserModel> model;
  AnswerSizes answer;  // AnswerSizesOf its manifest
  std::unique_ptr<TrajectoryBatcher> batcher;
  // The bundle's judge, when its manifest names one; else null.
  std::unique_ptr<ImageJudge> judge;
  // Position in --model_dir: GetModelInfo lists models in this order, and a
  // request that names no model gets the first.
  int order = 0;
};

// Serves dgrid.v1.Denoiser: the constructor adds each method.
class DenoiserServiceImpl final : public RequestParsingService {
 public:
  // `models` is keyed by model name. `metrics` may be null. A non-empty
  // `auth_token` must come with every call as "Bearer <token>".
  DenoiserServiceImpl(std::map<std::string, ServedModel>* models,
                      int max_trajectories_per_request, int max_message_bytes,
                      DenoiserMetrics* metrics, std::string auth_token = "");

  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::GetModelInfoResponse* response);
  grpc::Status Step(grpc::ServerContext* context, const v1::StepRequest* request,
                    v1::StepResponse* response);
  grpc::Status Branch(grpc::ServerContext* context, const v1::BranchRequest* request,
                      grpc::ServerWriter<v1::BranchEvent>* writer);
  grpc::Status Decode(grpc::ServerContext* context, const v1::DecodeRequest* request,
                      v1::DecodeResponse* response);
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response);
  grpc::Status Judge(grpc::ServerContext* context, const v1::JudgeRequest* request,
                     v1::JudgeResponse* response);

  // The bearer token, checked before a request is parsed; refusals and
  // requests that do not parse are counted as the handlers count calls.
  grpc::Status Admit(const char* method, const grpc::ServerContext& context) override;
  void Refused(const char* method, const grpc::Status& status) override;

  // Ends a Branch call whose write the client leaves untaken past the
  // watchdog's stall bound (none: a write may wait for ever). The watchdog
  // must outlive the calls.
  void WatchWrites(StallWatchdog* watchdog) { write_watch_ = watchdog; }

 private:
  absl::StatusOr<ServedModel*> FindModel(const std::string& name);
  // FindModel, and UNAVAILABLE when `version` is set and the model here is
  // another version (BranchRequest.model_version).
  absl::StatusOr<ServedModel*> FindModel(const std::string& name, const std::string& version);
  grpc::Status Count(const char* method, grpc::Status status);
  // UNAUTHENTICATED unless the call carries the token (when one is set).
  absl::Status Authorize(const grpc::ServerContext& context) const;
  // INVALID_ARGUMENT naming `field` when an answer of `n` items and
  // `bytes` (or more) passes the message limit, which gRPC would find only
  // after the work, answering a bare "larger than max".
  absl::Status CheckAnswerSize(absl::string_view field, int n, int64_t bytes,
                               absl::string_view items) const;

  std::map<std::string, ServedModel>* const models_;
  const int max_trajectories_per_request_;
  const int64_t max_message_bytes_;
  DenoiserMetrics* const metrics_;
  const std::string auth_token_;
  StallWatchdog* write_watch_ = nullptr;
  // Image bytes a Decode or Judge call holds while it waits for its turns on
  // the engine: a Judge call's decoded PNGs (a small PNG can decode to a
  // large image: a plain colour compresses 1000:1), a Decode call's pixels.
  // Calls past kMaxImageBytes in all are refused, retryably (one call larger
  // than it alone, as invalid).
  class HeldImageBytes {
   public:
    HeldImageBytes(std::atomic<int64_t>* pool, int64_t bytes) : pool_(pool), bytes_(bytes) {}
    HeldImageBytes(HeldImageBytes&& other) noexcept;
    HeldImageBytes& operator=(HeldImageBytes&&) = delete;
    ~HeldImageBytes();

   private:
    std::atomic<int64_t>* pool_;
    int64_t bytes_;
  };
  // The pixels of `n` images of model `m`, against image_bytes_; the error
  // names `field`.
  absl::StatusOr<HeldImageBytes> HoldImageBytes(absl::string_view field, int n,
                                                const BundleManifest& m);
  std::atomic<int64_t> image_bytes_{0};
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVER_DENOISER_SERVICE_IMPL_H_
