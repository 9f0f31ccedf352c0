#include "grid_orchestrator/execute/grid_judge.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/start_thread.h"
#include "common/grpc_status.h"
#include "grid_orchestrator/execute/retry_policy.h"
#include "grid_orchestrator/metrics/orchestrator_metrics.h"

namespace dgrid {
namespace {

// One Judge call for `images`, tried on up to kJudgeAttempts replicas.
absl::StatusOr<v1::JudgeResponse> CallJudge(ReplicaPool* pool, OrchestratorMetrics* metrics,
                                            const GridPlanSpec& plan,
                                            const std::vector<const std::string*>& images,
                                            const std::vector<int>& labels_per_head,
                                            absl::Time deadline, absl::Duration call_timeout,
                                            GridCancel* cancel) {
  const int heads = static_cast<int>(labels_per_head.size());
  // Counted as jobs are, attempt by attempt.
  auto count = [metrics](const char* outcome) {
    if (metrics) metrics->CountJob(outcome);
  };
  v1::JudgeRequest request;
  request.set_model(plan.model);
  request.set_model_version(plan.model_version);
  for (const std::string* png : images) request.add_images()->set_png(*png);
  ReplicaPool::Want want;
  want.model = plan.model;
  want.version = plan.model_version;
  want.deadline = deadline;
  want.cancelled = cancel->flag();
  want.control = true;
  absl::Status last;
  for (int attempt = 0; attempt < kJudgeAttempts; ++attempt) {
    absl::StatusOr<ReplicaPool::Lease> lease = pool->Acquire(want);
    if (!lease.ok()) {
      // The pool refuses a cancelled curve's call: its end, not a failure.
      count(cancel->cancelled() ? "cancelled" : "failed");
      return lease.status();
    }
    grpc::ClientContext context;
    const absl::Time call_deadline = std::min(deadline, absl::Now() + call_timeout);
    context.set_deadline(absl::ToChronoTime(call_deadline));
    if (!cancel->Register(&context)) {
      count("cancelled");
      return absl::CancelledError("curve cancelled");
    }
    v1::JudgeResponse response;
    // A Judge call reports no progress: its replica's health checks tell a
    // stopped replica from a busy one. Without the watch (no thread to be
    // had) the call's own limit still holds.
    absl::Notification done;
    std::atomic<bool> gave_up{false};
    absl::StatusOr<std::thread> watch = StartThread(
        [&] {
          absl::Time down_since = absl::InfiniteFuture();
          while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(50))) {
            if (lease->Healthy()) {
              down_since = absl::InfiniteFuture();
              continue;
            }
            down_since = std::min(down_since, absl::Now());
            if (absl::Now() - down_since >= kJudgeUnhealthyGrace) {
              gave_up = true;
              context.TryCancel();
              return;
            }
          }
        },
        "a Judge call's health watch");
    const grpc::Status status = lease->stub()->Judge(&context, request, &response);
    done.Notify();
    if (watch.ok()) watch->join();
    cancel->Unregister(&context);
    bool retryable = true;
    if (!status.ok() && gave_up) {
      last = absl::UnavailableError(
          absl::StrCat("replica ", lease->address(), ": health checks found it down for ",
                       absl::FormatDuration(kJudgeUnhealthyGrace), " during a Judge call"));
    } else if (status.ok()) {
      // A malformed answer is that replica's bad output: tried elsewhere,
      // as a job's is.
      if (response.images_size() != request.images_size()) {
        last = absl::InternalError(absl::StrCat("replica ", lease->address(), " judged ",
                                                response.images_size(), " of ",
                                                request.images_size(), " images"));
      } else {
        last = absl::OkStatus();
        for (const v1::ImageVerdict& verdict : response.images()) {
          if (verdict.heads_size() != heads) {
            last = absl::InternalError(absl::StrCat("replica ", lease->address(), " answered ",
                                                    verdict.heads_size(), " judge heads, not ",
                                                    heads));
            break;
          }
          // A label the head lacks would count as a change of label, and
          // reach the client's trunk labels, where a label name is looked up.
          for (int h = 0; h < heads && last.ok(); ++h) {
            const int label = verdict.heads(h).label_index();
            if (label < 0 || label >= labels_per_head[h]) {
              last = absl::InternalError(absl::StrCat(
                  "replica ", lease->address(), " answered label ", label, " of judge head ", h,
                  ", which has ", labels_per_head[h], " labels"));
            }
          }
          if (!last.ok()) break;
        }
      }
      if (last.ok()) {
        count("ok");
        return response;
      }
    } else {
      // The orchestrator built the call from a replica's images: a replica's
      // "invalid" (--max_trajectories_per_request below kImagesPerJudgeCall,
      // say) is INTERNAL, tried elsewhere as for a grid's jobs.
      last = ReplicaStatus(lease->address(), FromGrpcStatus(status));
      // Whatever comes next, a replica that is going away gets no more work.
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) lease->MarkUnhealthy();
      // The call's own timeout on a replica that health checks still find
      // serving (wedged), with the curve's deadline still ahead: another
      // replica may serve, and this one gets no new job for a while, as
      // after a job's stall.
      const bool own_timeout = status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
                               call_deadline < deadline;
      if (own_timeout) lease->MarkStalled();
      retryable = JudgeCallRetryable(ToGrpcStatus(last).error_code()) || own_timeout;
    }
    if (!retryable || cancel->cancelled() || attempt + 1 == kJudgeAttempts) {
      count(cancel->cancelled() ? "cancelled" : "failed");
      break;
    }
    count("retried");
    if (metrics) metrics->CountRetry();
    want.avoid.insert(lease->address());
  }
  return absl::Status(last.code(), absl::StrCat("Judge: ", last.message()));
}

}  // namespace

bool JudgeCallRetryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::ABORTED || code == grpc::StatusCode::INTERNAL;
}

absl::StatusOr<TrunkObservation> JudgeGrid(ReplicaPool* pool, OrchestratorMetrics* metrics,
                                           const GridPlanSpec& plan, const v1::Grid& grid,
                                           const std::vector<int>& labels_per_head,
                                           absl::Time deadline, absl::Duration call_timeout,
                                           GridCancel* cancel) {
  const size_t heads = labels_per_head.size();
  TrunkObservation observed;
  for (const v1::GridRow& row : grid.rows()) {
    observed.divergence.push_back(row.divergence());
    observed.divergence_to_trunk.push_back(row.divergence_to_trunk());
  }
  if (heads == 0) return observed;
  // The trunk's final first, then the cells row by row.
  std::vector<const std::string*> images = {&grid.trunk().png()};
  for (const v1::GridRow& row : grid.rows()) {
    for (const v1::GridCell& cell : row.cells()) images.push_back(&cell.png());
  }
  std::vector<std::vector<int>> labels;  // [image][head]
  for (size_t first = 0; first < images.size(); first += kImagesPerJudgeCall) {
    const size_t end = std::min(images.size(), first + kImagesPerJudgeCall);
    absl::StatusOr<v1::JudgeResponse> judged =
        CallJudge(pool, metrics, plan, {images.begin() + first, images.begin() + end},
                  labels_per_head, deadline, call_timeout, cancel);
    if (!judged.ok()) return judged.status();
    for (const v1::ImageVerdict& verdict : judged->images()) {
      std::vector<int>& image = labels.emplace_back();
      for (const v1::HeadVerdict& head : verdict.heads()) image.push_back(head.label_index());
    }
  }
  observed.trunk_labels = labels[0];
  size_t next = 1;
  for (const v1::GridRow& row : grid.rows()) {
    auto& cells = observed.branch_labels.emplace_back();
    for (int c = 0; c < row.cells_size(); ++c) cells.push_back(labels[next++]);
  }
  return observed;
}

}  // namespace dgrid
