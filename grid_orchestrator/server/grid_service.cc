#include "grid_orchestrator/server/grid_service.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/bearer_token.h"
#include "common/grpc_status.h"
#include "common/short_text.h"
#include "common/start_thread.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"
#include "grid_orchestrator/server/client_watch.h"

namespace dgrid {
namespace {

// Events on their way to one client. The client's own thread pops and
// writes. Bounded in bytes: a client that does not read cannot make the
// orchestrator hold its grid's images for ever. Job threads, which hold
// replica slots, push and never block. The grid's worker thread holds none,
// so its pushes (a grid from the cache emits every cell at once) wait for
// room while the client reads: an SD grid's cached cells pass 16 MiB, and
// were taken for a client that stopped reading.
class Outbox {
 public:
  Outbox(size_t max_bytes, const GridCancel* cancel, absl::Time deadline)
      : max_bytes_(max_bytes), cancel_(cancel), deadline_(deadline) {}

  // The calling thread's pushes wait for room (it must hold no replica slot).
  void PaceThisThread() {
    std::lock_guard<std::mutex> lock(mu_);
    paced_ = std::this_thread::get_id();
  }
  // False once the bound is passed; the event is dropped then.
  bool Push(const v1::GridEvent& event) {
    const size_t size = event.ByteSizeLong();
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (std::this_thread::get_id() == paced_) {
        // Events queued that this one must wait behind (one alone past the
        // bound overflows it, as below).
        auto waits = [&] { return !overflowed_ && bytes_ > 0 && bytes_ + size > max_bytes_; };
        // Until the client's thread takes enough, or the grid ends: a write
        // blocked past max_write_stall cancels it.
        while (waits() && !cancel_->cancelled() && absl::Now() < deadline_) {
          room_.wait_for(lock, std::chrono::milliseconds(50));
        }
        if (cancel_->cancelled()) return true;  // dropped: the grid is over
        if (waits()) {
          late_ = true;  // the grid's time ran out while its client read
          return false;
        }
      }
      if (overflowed_ || bytes_ + size > max_bytes_) {
        overflowed_ = true;
        return false;
      }
      bytes_ += size;
      events_.push_back(event);
    }
    changed_.notify_one();
    return true;
  }
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    changed_.notify_one();
  }
  // Waits for the next event; false once closed and empty.
  bool Pop(v1::GridEvent* event) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [this] { return closed_ || !events_.empty(); });
      if (events_.empty()) return false;
      *event = std::move(events_.front());
      events_.pop_front();
      bytes_ -= event->ByteSizeLong();
    }
    room_.notify_one();
    return true;
  }
  bool overflowed() {
    std::lock_guard<std::mutex> lock(mu_);
    return overflowed_;
  }
  bool late() {
    std::lock_guard<std::mutex> lock(mu_);
    return late_;
  }

 private:
  const size_t max_bytes_;
  const GridCancel* const cancel_;
  const absl::Time deadline_;
  std::mutex mu_;
  std::condition_variable changed_;   // an event or the close
  std::condition_variable room_;      // bytes taken
  std::deque<v1::GridEvent> events_;  // guarded by mu_
  size_t bytes_ = 0;                  // guarded by mu_
  bool overflowed_ = false;           // guarded by mu_
  bool late_ = false;                 // guarded by mu_
  bool closed_ = false;               // guarded by mu_
  std::thread::id paced_;             // guarded by mu_
};

// A message past the transport's limit (gRPC's --max_message_bytes) would be
// refused after all the work, as if its client had gone.
// `whole`: the message holds every cell, which fewer rows or branches make
// smaller; else it is one event, of one image.
absl::Status FitsTheAnswer(const Caller& caller, const google::protobuf::Message& message,
                           absl::string_view what, bool whole) {
  if (caller.max_answer_bytes < 0) return absl::OkStatus();
  const int64_t bytes = static_cast<int64_t>(message.ByteSizeLong());
  if (bytes <= caller.max_answer_bytes) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " is ", ByteCount(bytes), ", past this orchestrator's message limit of ",
      ByteCount(caller.max_answer_bytes), " (--max_message_bytes): ",
      whole ? "ask for fewer rows or branches, or use the HTTP API" : "use the HTTP API",
      ", which has no such limit"));
}

}  // namespace

AdmittedGrid::~AdmittedGrid() {
  if (!counted_) service_->CountRefusal(absl::CancelledError("the grid never ran"));
  service_->Release(client_, plan_.batch_work);
}

GridService::GridService(ReplicaPool* pool, GridExecutor* executor, OrchestratorMetrics* metrics,
                         OrchestratorLimits limits, std::string auth_token)
    : pool_(pool),
      executor_(executor),
      metrics_(metrics),
      limits_(limits),
      auth_token_(std::move(auth_token)) {}

absl::Status GridService::Authenticate(const Caller& caller) const {
  if (auth_token_.empty()) return absl::OkStatus();
  if (caller.authorization.empty()) {
    return absl::UnauthenticatedError("missing \"authorization: Bearer <token>\"");
  }
  // The token itself is never logged or echoed.
  if (!BearerTokenMatches(caller.authorization, auth_token_)) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ModelInfo> GridService::ChooseModel(const v1::GridRequest& request) {
  absl::StatusOr<v1::GetModelInfoResponse> models = pool_->Models(request.model());
  if (!models.ok()) return models.status();
  if (models->models_size() == 0) return absl::UnavailableError("the denoisers serve no model");
  if (request.model().empty()) return models->models(0);
  std::vector<std::string> names;
  for (const v1::ModelInfo& m : models->models()) {
    if (m.name() == request.model()) return m;
    names.push_back(m.name());
  }
  return absl::InvalidArgumentError(absl::StrCat("model: unknown model ", ShortQuote(request.model()),
                                                 "; served: ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<GridPlanSpec> GridService::Plan(const v1::GridRequest& request,
                                               const ModelPin* pin, absl::Time deadline) {
  absl::StatusOr<v1::ModelInfo> model =
      pin ? pool_->Model(pin->model, pin->version) : ChooseModel(request);
  if (!model.ok()) return model.status();
  absl::StatusOr<GridPlanSpec> plan = PlanGrid(request, *model, limits_.plan);
  if (!plan.ok() || !plan->text) return plan;
  // What the tokenizer keeps of the prompts: the response says how many
  // tokens a long prompt lost.
  ReplicaPool::Want want;
  want.model = plan->model;
  want.version = plan->model_version;
  // At most 5 s, and never past the caller's deadline: a client with 500 ms
  // left is not kept waiting for seconds and then handed a grid already late.
  want.deadline = std::min(absl::Now() + absl::Seconds(5), deadline);
  want.control = true;
  // Past the caller's own deadline (the bound here), the call is late, not
  // the replicas' fault.
  const bool callers_bound = want.deadline == deadline;
  const auto late = [] {
    return absl::DeadlineExceededError(
        "the call's deadline passed while the prompts were being tokenized");
  };
  if (callers_bound && absl::Now() >= deadline) return late();
  absl::StatusOr<ReplicaPool::Lease> lease = pool_->Acquire(want);
  if (!lease.ok()) {
    return callers_bound && lease.status().code() == absl::StatusCode::kDeadlineExceeded
               ? late()
               : lease.status();
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(want.deadline));
  v1::TokenizeRequest tokenize;
  tokenize.set_model(plan->model);
  // The request's prompts, then a promoted trunk's segment prompts: text the
  // denoiser would otherwise refuse only once the grid ran, as the trunk
  // job's failure (counted a failed grid, the service's fault).
  std::vector<std::string> fields;  // texts[i]'s field
  auto add = [&](std::string field, const std::string& text) {
    fields.push_back(std::move(field));
    tokenize.add_texts(text);
  };
  add("prompt", plan->prompt);
  add("negative_prompt", plan->negative_prompt);
  add("switch_prompt", plan->switch_prompt);
  add("switch_negative_prompt", plan->switch_negative_prompt);
  // The plan's trunk is canonical (a segment that changes nothing dropped):
  // a field is named by the request's segment of the same step.
  auto request_segment = [&request](int from_step) {
    for (int j = 0; j < request.trunk().segments_size(); ++j) {
      if (request.trunk().segments(j).from_step() == from_step) return j;
    }
    return -1;
  };
  for (size_t i = 0; i < plan->trunk.segments.size(); ++i) {
    const std::optional<SegmentConditioning>& c = plan->trunk.segments[i].conditioning;
    if (!c) continue;
    const int j = request_segment(plan->trunk.segments[i].from_step);
    const std::string field =
        absl::StrCat("trunk.segments[", j >= 0 ? j : static_cast<int>(i), "].conditioning.");
    add(field + "prompt", c->prompt);
    add(field + "negative_prompt", c->negative_prompt);
  }
  v1::TokenizeResponse tokens;
  const grpc::Status status = lease->stub()->Tokenize(&context, tokenize, &tokens);
  if (callers_bound && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
      absl::Now() >= deadline) {
    return late();
  }
  if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
    // The replica's settings (its request or message limit) refuse what
    // this orchestrator sends: no retry helps, and it is no client's mistake
    // (counted failed, HTTP 500), as a replica's refusal of a grid's job.
    return absl::InternalError(
        absl::StrCat("the denoiser at ", lease->address(), " cannot tokenize this grid's prompts (",
                     status.error_message(), ")"));
  }
  if (!status.ok() && status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    // Not the prompts' fault: the replica's (a token it refuses, a timeout,
    // a restart). Passed on as it came, a denoiser's UNAUTHENTICATED read as
    // the client's own token being wrong.
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) lease->MarkUnhealthy();
    return absl::UnavailableError(absl::StrCat(
        "the denoiser at ", lease->address(), " could not tokenize the prompts (",
        FromGrpcStatus(status).ToString(), "); retry"));
  }
  if (!status.ok()) {
    // The denoiser names the texts by position; the client sent fields.
    std::string message = status.error_message();
    for (size_t i = 0; i < fields.size(); ++i) {
      const std::string position = absl::StrCat("texts[", i, "]:");
      if (absl::StartsWith(message, position)) {
        message.replace(0, position.size() - 1, fields[i]);
        break;
      }
    }
    return FromGrpcStatus(grpc::Status(status.error_code(), message));
  }
  if (tokens.texts_size() != tokenize.texts_size()) {
    return absl::InternalError("Tokenize answered the wrong count");
  }
  // A switch that reads as the prompt (another case, other spaces), or that
  // changes only what this guidance does not read, changes nothing the model
  // sees: its cells are the plain grid's, and cost nothing beyond it. The
  // plan keeps the switch prompt as typed.
  auto same = [&](int a, int b) {
    return std::equal(tokens.texts(a).ids().begin(), tokens.texts(a).ids().end(),
                      tokens.texts(b).ids().begin(), tokens.texts(b).ids().end());
  };
  const bool prompt_unseen = same(2, 0) || !GuidanceReadsPrompt(plan->guidance);
  // An empty negative prompt may be zeros, not its tokens (an SDXL bundle's
  // zeros_for_empty_negative, which ModelInfo does not carry): only another
  // non-empty one with the same tokens reads alike for every model.
  const bool negative_unseen =
      plan->switch_negative_prompt.empty() || (same(3, 1) && !plan->negative_prompt.empty()) ||
      !GuidanceReadsNegativePrompt(plan->guidance);
  if (!plan->switch_prompt.empty() && !plan->switch_unseen && prompt_unseen && negative_unseen) {
    plan = PlanGrid(request, *model, limits_.plan, /*switch_unseen=*/true);
    if (!plan.ok()) return plan;
  }
  plan->prompt_tokens_dropped = tokens.texts(0).dropped();
  plan->negative_prompt_tokens_dropped = tokens.texts(1).dropped();
  plan->switch_prompt_tokens_dropped = tokens.texts(2).dropped();
  plan->switch_negative_prompt_tokens_dropped = tokens.texts(3).dropped();
  for (const v1::TokenizedText& text : tokens.texts()) {
    for (const std::string& word : text.unknown_words()) {
      if (std::find(plan->unknown_words.begin(), plan->unknown_words.end(), word) ==
          plan->unknown_words.end()) {
        plan->unknown_words.push_back(word);
      }
    }
  }
  return plan;
}

void GridService::CountRefusal(const absl::Status& status) {
  if (metrics_) metrics_->CountGrid(Outcome(status), std::nullopt);
}

void GridService::Drop(std::unique_ptr<AdmittedGrid> grid, const absl::Status& why) {
  grid->counted_ = true;
  CountRefusal(why);
}

void GridService::Release(const std::string& client, bool curve_trunk) {
  std::lock_guard<std::mutex> lock(clients_mu_);
  --grids_in_flight_;
  if (curve_trunk) --curve_grids_in_flight_;
  if (--grids_per_client_[client] == 0) grids_per_client_.erase(client);
  if (metrics_) metrics_->SetGridsInFlight(grids_in_flight_, curve_grids_in_flight_);
}

absl::StatusOr<std::unique_ptr<AdmittedGrid>> GridService::Admit(const Caller& caller,
                                                                 const v1::GridRequest& request,
                                                                 const AdmitOptions& options) {
  auto refuse = [this, &options, &caller](absl::Status status) {
    const bool waits = options.refusal == Refusal::kCallerWaits &&
                       (status.code() == absl::StatusCode::kResourceExhausted ||
                        status.code() == absl::StatusCode::kUnavailable);
    // The caller's own deadline, passed while planning: cancelled, as later.
    if (metrics_ && !waits) {
      metrics_->CountGrid(Outcome(status, absl::Now() >= caller.deadline), std::nullopt);
    }
    return status;
  };
  if (absl::Status auth = Authenticate(caller); !auth.ok()) return refuse(auth);
  // Admission: past the bounds, refuse rather than queue without limit. Both
  // counts move together under one lock, so neither passes its limit even
  // for a moment (curves ask again and again while they wait for a place).
  {
    std::lock_guard<std::mutex> lock(clients_mu_);
    const auto held = grids_per_client_.find(caller.client);
    const int mine = held == grids_per_client_.end() ? 0 : held->second;
    absl::Status full;
    // A full service first, though the client is at its own limit too: the
    // error-ratio alerts count "rejected" and leave "throttled" to the
    // client. Behind an Ingress every browser is one address, whose limit
    // is the service's (components/ingress), and an overload was all
    // "throttled", unseen by them.
    if (grids_in_flight_ >= limits_.max_concurrent_grids) {
      full = absl::ResourceExhaustedError(absl::StrCat(
          "too many grids in flight (limit ", limits_.max_concurrent_grids, "); retry later"));
    } else if (mine >= limits_.max_grids_per_client) {
      full = ThrottledError(absl::StrCat("too many grids in flight from this client (limit ",
                                         limits_.max_grids_per_client, "); retry later"));
    } else if (options.curve_trunk && curve_grids_in_flight_ >= limits_.CurvePlaces()) {
      full = absl::ResourceExhaustedError(absl::StrCat(
          "decision curves hold all the grid places they may (", limits_.CurvePlaces(), " of ",
          limits_.max_concurrent_grids, ", the rest kept for grids); retry later"));
    }
    if (!full.ok()) return refuse(full);
    ++grids_per_client_[caller.client];
    ++grids_in_flight_;
    if (options.curve_trunk) ++curve_grids_in_flight_;
    if (metrics_) metrics_->SetGridsInFlight(grids_in_flight_, curve_grids_in_flight_);
  }
  absl::StatusOr<GridPlanSpec> plan = Plan(request, options.pin, caller.deadline);
  if (!plan.ok()) {
    Release(caller.client, options.curve_trunk);
    return refuse(plan.status());
  }
  plan->images = options.images;
  plan->batch_work = options.curve_trunk;
  return std::unique_ptr<AdmittedGrid>(new AdmittedGrid(this, caller.client, std::move(*plan)));
}

absl::StatusOr<v1::Grid> GridService::Run(const AdmittedGrid& admitted, const Caller& caller,
                                          const ClientSink& sink, GridCancel* cancel,
                                          bool stream_grid) {
  admitted.counted_ = true;  // on every path below
  const absl::Time limit = admitted.admitted_ + limits_.default_grid_timeout;
  const absl::Time deadline = std::min(caller.deadline, limit);
  Outbox outbox(limits_.max_outbox_bytes, cancel, deadline);
  absl::StatusOr<v1::Grid> grid;
  // Out of threads (a pids limit), the grid fails.
  auto count = [&](const std::string& outcome) {
    if (!metrics_) return;
    std::optional<double> seconds;
    // A curve's trunks wait for their siblings by design: not timed.
    if (!admitted.plan_.batch_work) {
      seconds = absl::ToDoubleSeconds(absl::Now() - admitted.admitted_);
    }
    metrics_->CountGrid(outcome, seconds);
  };
  auto failed = [&](const absl::Status& status) {
    count(Outcome(status));
    return status;
  };
  absl::StatusOr<std::thread> worker = StartThread(
      [&] {
        outbox.PaceThisThread();
        grid = executor_->Run(
            admitted.plan(), deadline,
            [&](const v1::GridEvent& event) {
              if (!outbox.Push(event)) cancel->Cancel();
            },
            cancel, caller.deadline);
        outbox.Close();
      },
      "the grid's worker");
  if (!worker.ok()) return failed(worker.status());
  bool client_ok = true;
  bool stalled = false;
  absl::Status oversized;  // an event past the transport's message limit
  {
    absl::StatusOr<std::unique_ptr<ClientWatch>> watch =
        ClientWatch::Start(caller, limits_.max_write_stall, cancel);
    if (!watch.ok()) {
      cancel->Cancel();
      worker->join();  // the outbox takes what the cancelled grid still sends
      return failed(watch.status());
    }
    auto deliver = [&](const v1::GridEvent& event) {
      if (!client_ok || !oversized.ok()) return;
      oversized = FitsTheAnswer(caller, event,
                                event.has_grid() ? "the grid's last event" : "one of its events",
                                /*whole=*/event.has_grid());
      if (!oversized.ok()) {
        cancel->Cancel();
        return;
      }
      (*watch)->WriteStarts();
      client_ok = sink(event);
      (*watch)->WriteEnds();
      if (!client_ok) cancel->Cancel();
    };
    v1::GridEvent event;
    while (outbox.Pop(&event)) deliver(event);
    worker->join();
    // The unary answer: the grid itself.
    if (grid.ok() && !stream_grid) {
      if (absl::Status fits = FitsTheAnswer(caller, *grid, "the grid's answer", /*whole=*/true);
          !fits.ok()) {
        grid = fits;
      }
    }
    // The finished grid is the one event a reading client must get, so it
    // skips the outbox's bound; its write is watched like the others.
    if (grid.ok() && stream_grid) {
      v1::GridEvent last;
      *last.mutable_grid() = *grid;
      deliver(last);
    }
    stalled = (*watch)->stalled();
  }
  const absl::Time now = absl::Now();
  if (!oversized.ok()) {
    count("failed");  // the server's limit, not the client's doing
    return oversized;
  }
  if (outbox.late()) {
    // A client reading too slowly for the grid's time: its doing (as a
    // stall), or its own deadline's.
    const absl::Status late =
        absl::DeadlineExceededError("the grid's time ran out while its client read its cells");
    count(now >= caller.deadline ? "cancelled" : "abandoned");
    return NameTheServersLimit(late, now, limit, caller.deadline, limits_.default_grid_timeout);
  }
  absl::Status abandoned;
  if (outbox.overflowed()) {
    abandoned = absl::CancelledError(absl::StrCat(
        "grid cancelled: the client stopped reading its stream (over ",
        limits_.max_outbox_bytes, " bytes of events waited for it)"));
  } else if (stalled) {
    abandoned = absl::CancelledError(absl::StrCat(
        "grid cancelled: a write to the client blocked for more than ",
        absl::FormatDuration(limits_.max_write_stall)));
  } else if (!client_ok && caller.cut_off()) {
    abandoned = absl::CancelledError("grid cancelled: the client read its stream too slowly");
  }
  if (!abandoned.ok()) {
    count("abandoned");
    return abandoned;
  }
  if (!client_ok) {
    // A write failed without a stall: the client cancelled or hung up, its
    // own doing, counted as when its cancel is seen before a write fails.
    count("cancelled");
    return absl::CancelledError("grid cancelled: the client went away");
  }
  // The caller's own deadline, once passed, is the caller's doing; the
  // server's --grid_timeout_s or a stalled replica is a failure.
  count(RunOutcome(grid.status(), now >= caller.deadline));
  if (grid.ok()) return grid;
  return NameTheServersLimit(grid.status(), now, limit, caller.deadline,
                             limits_.default_grid_timeout);
}

absl::Status NameTheServersLimit(const absl::Status& status, absl::Time now, absl::Time limit,
                                 absl::Time caller_deadline, absl::Duration grid_timeout) {
  if (status.code() != absl::StatusCode::kDeadlineExceeded || now < limit ||
      limit >= caller_deadline) {
    return status;
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "the grid ran past this orchestrator's time limit (--grid_timeout_s, ",
      absl::ToDoubleSeconds(grid_timeout), " s): ", status.message()));
}

absl::StatusOr<v1::Grid> GridService::RunGrid(const Caller& caller,
                                              const v1::GridRequest& request,
                                              const ClientSink& sink, GridCancel* cancel,
                                              bool stream_grid) {
  absl::StatusOr<std::unique_ptr<AdmittedGrid>> admitted = Admit(caller, request);
  if (!admitted.ok()) return admitted.status();
  return Run(**admitted, caller, sink, cancel, stream_grid);
}

absl::StatusOr<v1::ListModelsResponse> GridService::ListModels(const Caller& caller) {
  if (absl::Status auth = Authenticate(caller); !auth.ok()) return auth;
  absl::StatusOr<v1::GetModelInfoResponse> models = pool_->Models();
  if (!models.ok()) return models.status();
  v1::ListModelsResponse response;
  *response.mutable_models() = models->models();
  return response;
}

}  // namespace dgrid
