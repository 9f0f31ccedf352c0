#include "grid_orchestrator/testing/fake_denoiser.h"

#include <grpcpp/health_check_service_interface.h>

#include <deque>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/png_image.h"

namespace dgrid::testing {
namespace {

class FakeReader : public grpc::ClientReaderInterface<v1::BranchEvent> {
 public:
  FakeReader(std::deque<v1::BranchEvent> events, grpc::Status status,
             absl::Duration delay = absl::ZeroDuration(),
             absl::Time deadline = absl::InfiniteFuture())
      : events_(std::move(events)), status_(std::move(status)), delay_(delay),
        deadline_(deadline) {}
  bool Read(v1::BranchEvent* event) override {
    // The first event comes after the scripted delay, unless the call's
    // deadline comes first, as gRPC would end it.
    if (delay_ > absl::ZeroDuration() && absl::Now() + delay_ > deadline_) {
      absl::SleepFor(deadline_ - absl::Now());
      events_.clear();
      status_ = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
    } else {
      absl::SleepFor(delay_);
    }
    delay_ = absl::ZeroDuration();
    if (events_.empty()) return false;
    *event = std::move(events_.front());
    events_.pop_front();
    return true;
  }
  bool NextMessageSize(uint32_t* size) override {
    if (events_.empty()) return false;
    *size = static_cast<uint32_t>(events_.front().ByteSizeLong());
    return true;
  }
  grpc::Status Finish() override { return status_; }
  void WaitForInitialMetadata() override {}

 private:
  std::deque<v1::BranchEvent> events_;
  grpc::Status status_;
  absl::Duration delay_;
  const absl::Time deadline_;
};

// A call's deadline, as gRPC holds it.
absl::Time DeadlineOf(const grpc::ClientContext& context) {
  return context.deadline() == std::chrono::system_clock::time_point::max()
             ? absl::InfiniteFuture()
             : absl::FromChrono(context.deadline());
}

// Waits `delay`, or until the call's deadline comes first: then false, where
// gRPC would end the call DEADLINE_EXCEEDED.
bool AnswerAfter(const grpc::ClientContext& context, absl::Duration delay) {
  const absl::Time deadline = DeadlineOf(context);
  const absl::Time answer = absl::Now() + delay;
  absl::SleepFor(std::min(answer, deadline) - absl::Now());
  return answer <= deadline;
}

// A 2x2 grey PNG whose level derives from the path: distinct paths give
// (mostly) distinct cells, like a real model.
std::string PathPng(const v1::Path& path) {
  uint64_t h = path.init_seed() * 0x9E3779B97F4A7C15ull;
  for (const v1::Segment& s : path.segments()) h = (h ^ s.noise_seed()) * 0xBF58476D1CE4E5B9ull;
  const uint8_t level = static_cast<uint8_t>(h >> 56);
  return *EncodePng(std::vector<uint8_t>(4, level), 2, 2, 1);
}

v1::Tensor Latent() {
  v1::Tensor t;
  t.set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t d : {1, 2, 2}) t.add_shape(d);
  t.set_raw_contents(std::string(4 * sizeof(float), '\0'));
  return t;
}

}  // namespace

struct FakeReplicas::Replica {
  class Stub;
  std::mutex mu;
  FakeScript script;
  FakeLog log;
  int calls = 0;
  int judge_calls = 0;
  int tokenize_calls = 0;
  int port = 0;
  std::string address;
  v1::Denoiser::Service unused;  // a sync server needs one service
  std::unique_ptr<grpc::Server> health;
};

class FakeReplicas::Replica::Stub : public v1::Denoiser::StubInterface {
 public:
  explicit Stub(Replica* r) : r_(r) {}

  grpc::Status GetModelInfo(grpc::ClientContext*, const v1::GetModelInfoRequest&,
                            v1::GetModelInfoResponse* response) override {
    std::lock_guard<std::mutex> lock(r_->mu);
    v1::ModelInfo* m = response->add_models();
    *m = Model(r_->script.model, r_->script.version);
    if (r_->script.text) {
      m->clear_prompts();
      m->set_conditioning("text");
      m->set_max_prompt_tokens(8);
    }
    return grpc::Status::OK;
  }
  grpc::Status Step(grpc::ClientContext*, const v1::StepRequest&, v1::StepResponse*) override {
    return {grpc::StatusCode::UNIMPLEMENTED, "fake"};
  }
  grpc::Status Decode(grpc::ClientContext*, const v1::DecodeRequest&,
                      v1::DecodeResponse*) override {
    return {grpc::StatusCode::UNIMPLEMENTED, "fake"};
  }
  grpc::Status Tokenize(grpc::ClientContext* context, const v1::TokenizeRequest& request,
                        v1::TokenizeResponse* response) override {
    absl::Duration delay;
    {
      std::lock_guard<std::mutex> lock(r_->mu);
      delay = r_->script.tokenize_delay;
    }
    if (delay > absl::ZeroDuration() && !AnswerAfter(*context, delay)) {
      return {grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"};
    }
    std::lock_guard<std::mutex> lock(r_->mu);
    if (!r_->script.text) return {grpc::StatusCode::UNIMPLEMENTED, "fake: a class model"};
    const int call = r_->tokenize_calls++;
    const FakeScript& s = r_->script;
    if (s.tokenize_code != grpc::StatusCode::OK &&
        (s.tokenize_fail_from < 0 ||
         (call >= s.tokenize_fail_from && call < s.tokenize_fail_from + s.tokenize_fail_calls))) {
      return {s.tokenize_code, s.tokenize_message};
    }
    // BOS, an id per word as a lowercasing tokenizer reads it, EOS.
    for (const std::string& text : request.texts()) {
      v1::TokenizedText* out = response->add_texts();
      out->add_ids(1);
      for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
        out->add_ids(10 + std::hash<std::string>()(absl::AsciiStrToLower(word)) % 1000);
      }
      out->add_ids(2);
    }
    return grpc::Status::OK;
  }
  // The judge's one head, "level": "high" when the PNG's grey level is at
  // least 128.
  grpc::Status Judge(grpc::ClientContext* context, const v1::JudgeRequest& request,
                     v1::JudgeResponse* response) override {
    absl::Duration judge_delay;
    int judge_label = -1;
    {
      std::lock_guard<std::mutex> lock(r_->mu);
      if (!request.model_version().empty() && request.model_version() != r_->script.version) {
        return {grpc::StatusCode::UNAVAILABLE, "fake: another model version"};
      }
      if (r_->judge_calls++ < r_->script.judge_fail_first) {
        return {r_->script.judge_fail_code, "scripted judge failure"};
      }
      if (r_->script.judge_answers_nothing) return grpc::Status::OK;
      r_->log.judged_images += request.images_size();
      judge_delay = r_->script.judge_delay;
      judge_label = r_->script.judge_label;
    }
    if (!AnswerAfter(*context, judge_delay)) {
      return {grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded"};
    }
    for (const v1::Image& image : request.images()) {
      absl::StatusOr<DecodedPng> png = DecodePng(
          {reinterpret_cast<const uint8_t*>(image.png().data()), image.png().size()});
      if (!png.ok()) return {grpc::StatusCode::INVALID_ARGUMENT, "fake judge: not a PNG"};
      const bool high = png->pixels[0] >= 128;
      v1::HeadVerdict* head = response->add_images()->add_heads();
      head->set_head("level");
      head->set_label_index(judge_label >= 0 ? judge_label : high ? 1 : 0);
      head->set_label(high ? "high" : "low");
      head->set_probability(1);
    }
    return grpc::Status::OK;
  }

 private:
  grpc::ClientReaderInterface<v1::BranchEvent>* BranchRaw(
      grpc::ClientContext* context, const v1::BranchRequest& request) override {
    std::lock_guard<std::mutex> lock(r_->mu);
    r_->log.branches.push_back(request);
    const int call = r_->calls++;
    std::deque<v1::BranchEvent> events;
    const FakeScript& s = r_->script;
    // As a denoiser does (BranchRequest.model_version).
    if (!request.model_version().empty() && request.model_version() != s.version) {
      return new FakeReader({}, {grpc::StatusCode::UNAVAILABLE, "fake: another model version"});
    }
    if (call < s.fail_first) {
      for (int i = 0; s.captures_before_failing && i < request.trajectories_size(); ++i) {
        for (int step : request.capture_steps()) {
          v1::BranchEvent capture;
          capture.mutable_capture()->set_trajectory(i);
          capture.mutable_capture()->set_step(step);
          *capture.mutable_capture()->mutable_latent() = Latent();
          capture.mutable_capture()->mutable_image()->set_png(
              PathPng(request.trajectories(i).path()));
          capture.mutable_capture()->mutable_x0_image()->set_png(
              PathPng(request.trajectories(i).path()));
          events.push_back(capture);
        }
      }
      v1::BranchEvent progress;
      progress.mutable_progress()->set_model_evals(s.evals_before_failing);
      events.push_back(progress);
      return new FakeReader(std::move(events), {s.fail_code, "scripted failure"});
    }
    if (s.bad_trajectory_index >= 0) {
      v1::BranchEvent bad;
      bad.mutable_final()->set_trajectory(s.bad_trajectory_index);
      *bad.mutable_final()->mutable_latent() = Latent();
      bad.mutable_final()->mutable_image()->set_png(PathPng(request.trajectories(0).path()));
      events.push_back(bad);
    }
    const int end = request.end_step() ? request.end_step() : request.sampler().steps();
    for (int i = 0; i < request.trajectories_size(); ++i) {
      const v1::Path& path = request.trajectories(i).path();
      for (int step : request.capture_steps()) {
        if (s.drop_captures) break;
        if (step == s.skip_capture_step) continue;
        v1::BranchEvent capture;
        v1::Capture* c = capture.mutable_capture();
        c->set_trajectory(i);
        c->set_step(step);
        *c->mutable_latent() = Latent();
        if (s.flat_capture_latents) {
          c->mutable_latent()->clear_shape();
          c->mutable_latent()->add_shape(4);
        }
        if (!request.decode_finals_only()) {
          c->mutable_image()->set_png(PathPng(path));
          c->mutable_x0_image()->set_png(PathPng(path));
        }
        events.push_back(capture);
        if (s.repeat_captures) events.push_back(capture);
      }
      if (s.drop_finals) continue;
      v1::BranchEvent final;
      v1::Final* f = final.mutable_final();
      f->set_trajectory(i);
      *f->mutable_latent() = Latent();
      f->mutable_image()->set_png(s.final_png.empty() ? PathPng(path) : s.final_png);
      f->set_model_evals(end - request.start_step());
      events.push_back(final);
    }
    const grpc::Status ending = s.end_code == grpc::StatusCode::OK
                                    ? grpc::Status::OK
                                    : grpc::Status(s.end_code, "scripted end after the results");
    return new FakeReader(std::move(events), ending, s.delay, DeadlineOf(*context));
  }
  grpc::ClientAsyncResponseReaderInterface<v1::GetModelInfoResponse>* AsyncGetModelInfoRaw(
      grpc::ClientContext*, const v1::GetModelInfoRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::GetModelInfoResponse>* PrepareAsyncGetModelInfoRaw(
      grpc::ClientContext*, const v1::GetModelInfoRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::StepResponse>* AsyncStepRaw(
      grpc::ClientContext*, const v1::StepRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::StepResponse>* PrepareAsyncStepRaw(
      grpc::ClientContext*, const v1::StepRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncReaderInterface<v1::BranchEvent>* AsyncBranchRaw(
      grpc::ClientContext*, const v1::BranchRequest&, grpc::CompletionQueue*, void*) override {
    return nullptr;
  }
  grpc::ClientAsyncReaderInterface<v1::BranchEvent>* PrepareAsyncBranchRaw(
      grpc::ClientContext*, const v1::BranchRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::DecodeResponse>* AsyncDecodeRaw(
      grpc::ClientContext*, const v1::DecodeRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::DecodeResponse>* PrepareAsyncDecodeRaw(
      grpc::ClientContext*, const v1::DecodeRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::TokenizeResponse>* AsyncTokenizeRaw(
      grpc::ClientContext*, const v1::TokenizeRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::TokenizeResponse>* PrepareAsyncTokenizeRaw(
      grpc::ClientContext*, const v1::TokenizeRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::JudgeResponse>* AsyncJudgeRaw(
      grpc::ClientContext*, const v1::JudgeRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }
  grpc::ClientAsyncResponseReaderInterface<v1::JudgeResponse>* PrepareAsyncJudgeRaw(
      grpc::ClientContext*, const v1::JudgeRequest&, grpc::CompletionQueue*) override {
    return nullptr;
  }

  Replica* const r_;
};

FakeReplicas::FakeReplicas(int n) {
  grpc::EnableDefaultHealthCheckService(true);
  for (int i = 0; i < n; ++i) {
    auto r = std::make_unique<Replica>();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &r->port);
    builder.RegisterService(&r->unused);
    r->health = builder.BuildAndStart();
    r->health->GetHealthCheckService()->SetServingStatus("", true);
    r->address = absl::StrCat("127.0.0.1:", r->port);
    replicas_.push_back(std::move(r));
  }
}

FakeReplicas::~FakeReplicas() {
  for (auto& r : replicas_) r->health->Shutdown(std::chrono::system_clock::now());
}

FakeScript& FakeReplicas::script(int i) { return replicas_[i]->script; }

void FakeReplicas::StopServing(int i) {
  replicas_[i]->health->GetHealthCheckService()->SetServingStatus("", false);
}

void FakeReplicas::ServeVersion(int i, const std::string& version) {
  {
    std::lock_guard<std::mutex> lock(replicas_[i]->mu);
    replicas_[i]->script.version = version;
  }
  replicas_[i]->health->GetHealthCheckService()->SetServingStatus("", true);
}

FakeLog FakeReplicas::log(int i) {
  std::lock_guard<std::mutex> lock(replicas_[i]->mu);
  return replicas_[i]->log;
}

const std::string& FakeReplicas::address(int i) const { return replicas_[i]->address; }

ReplicaPool::Options FakeReplicas::PoolOptions() {
  ReplicaPool::Options o;
  for (const auto& r : replicas_) {
    if (!o.targets.empty()) o.targets += ",";
    o.targets += r->address;
  }
  o.health_interval = absl::Milliseconds(50);
  // Generous: under TSan on a loaded 2-core machine a health round trip can
  // take a second.
  o.health_timeout = absl::Seconds(5);
  o.unavailable_grace = absl::Seconds(2);
  o.stub_factory = [this](const std::string& address, std::shared_ptr<grpc::Channel>)
      -> std::unique_ptr<v1::Denoiser::StubInterface> {
    for (const auto& r : replicas_) {
      if (r->address == address) return std::make_unique<Replica::Stub>(r.get());
    }
    return nullptr;
  };
  return o;
}

v1::ModelInfo FakeReplicas::Model(const std::string& name, const std::string& version) {
  v1::ModelInfo m;
  m.set_name(name);
  m.set_version(version);
  for (int64_t d : {1, 2, 2}) m.add_latent_shape(d);
  for (int64_t d : {2, 2, 1}) m.add_image_shape(d);
  for (int c = 0; c < 10; ++c) m.add_prompts(absl::StrCat("class", c));
  m.set_train_timesteps(1000);
  m.set_prediction_type("epsilon");
  m.mutable_defaults()->set_steps(10);
  m.mutable_defaults()->set_eta(1);
  m.mutable_defaults()->set_guidance(1);
  m.mutable_defaults()->set_spacing(v1::SPACING_LEADING);
  m.set_steps_offset(1);
  v1::JudgeHeadInfo* level = m.mutable_judge()->add_heads();
  level->set_name("level");
  level->add_labels("low");
  level->add_labels("high");
  return m;
}

}  // namespace dgrid::testing
