// A scripted Denoiser behind the generated StubInterface, for unit tests of
// the executor and GridService without a model: Branch answers each
// trajectory with a final (a tiny PNG whose grey level derives from the
// path), captures where asked, and follows a per-replica script for faults.
// Its judge has one head, "level": "high" for a grey level of 128 or more.
// Replicas still need a real health server on loopback, which the pool
// checks; FakeReplicas starts those.
//
//   FakeReplicas replicas(2);
//   replicas.script(0).fail_first = 1;  // replica 0: first call UNAVAILABLE
//   ASSIGN_OR_RETURN(auto pool, ReplicaPool::Create(replicas.PoolOptions(), nullptr));
#ifndef DGRID_GRID_ORCHESTRATOR_TESTING_FAKE_DENOISER_H_
#define DGRID_GRID_ORCHESTRATOR_TESTING_FAKE_DENOISER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dgrid/v1/denoiser.grpc.pb.h"
#include "grid_orchestrator/pool/replica_pool.h"

namespace dgrid::testing {

// What one fake replica does. Read under the replica's mutex.
struct FakeScript {
  std::string model = "fake";
  std::string version = "1";
  // The first `fail_first` Branch calls end with `fail_code` after sending
  // Progress(model_evals = evals_before_failing) and no result.
  int fail_first = 0;
  grpc::StatusCode fail_code = grpc::StatusCode::UNAVAILABLE;
  int64_t evals_before_failing = 0;
  // Those failing calls send their captures first (the trunk's progress
  // before a replica dies).
  bool captures_before_failing = false;
  // Every Branch call sends a final for this trajectory index (out of range
  // for the job) before anything else.
  int bad_trajectory_index = -1;
  // Every Branch call ends well without sending its finals.
  bool drop_finals = false;
  // Every final's image is these bytes, not a PNG.
  std::string final_png;
  // Every capture's latent is shaped {4}, not the model's {1, 2, 2} (the
  // same bytes).
  bool flat_capture_latents = false;
  // Every capture is sent twice.
  bool repeat_captures = false;
  // Every Branch call sends no captures (its finals still come).
  bool drop_captures = false;
  // Every Branch call skips its capture at this step (-1: none).
  int skip_capture_step = -1;
  // Every Branch call that is not failed ends with this code after sending
  // all its events (OK: ends well).
  grpc::StatusCode end_code = grpc::StatusCode::OK;
  // Every Branch call's first event comes this late.
  absl::Duration delay = absl::ZeroDuration();
  // The first `judge_fail_first` Judge calls end with `judge_fail_code`.
  int judge_fail_first = 0;
  grpc::StatusCode judge_fail_code = grpc::StatusCode::RESOURCE_EXHAUSTED;
  // Every Judge call answers OK with no verdicts.
  bool judge_answers_nothing = false;
  // Every verdict is this label index (-1: the image's own, 0 or 1).
  int judge_label = -1;
  // Every Judge call that answers, answers this late, or DEADLINE_EXCEEDED
  // at the call's deadline.
  absl::Duration judge_delay = absl::ZeroDuration();
  // A text model (free-text prompts) instead of 10 classes; its Tokenize
  // answers `tokenize_code` with `tokenize_message` unless OK.
  bool text = false;
  grpc::StatusCode tokenize_code = grpc::StatusCode::OK;
  std::string tokenize_message;
  // The Tokenize calls from this one on (counting from 0) answer
  // tokenize_code, until `tokenize_fail_calls` have; -1: every call does.
  int tokenize_fail_from = -1;
  int tokenize_fail_calls = 0;
  // Tokenize answers this late, or DEADLINE_EXCEEDED at the call's deadline.
  absl::Duration tokenize_delay = absl::ZeroDuration();
};

// Calls a fake replica received.
struct FakeLog {
  std::vector<v1::BranchRequest> branches;
  int judged_images = 0;
};

class FakeReplicas {
 public:
  explicit FakeReplicas(int n);
  ~FakeReplicas();

  FakeScript& script(int i);
  // A restart onto another version of the model, while calls may run: the
  // replica stops serving (the pool forgets its models at its next health
  // round, `pool->CheckHealthNow()`), takes `version`, and serves again
  // (the pool asks for its models anew at the round after).
  void StopServing(int i);
  void ServeVersion(int i, const std::string& version);
  FakeLog log(int i);
  const std::string& address(int i) const;
  // Pool options over the replicas, with fast health checks and the fake
  // stubs.
  ReplicaPool::Options PoolOptions();
  // The model as the replicas describe it (latent 1x2x2, 10 classes).
  static v1::ModelInfo Model(const std::string& name, const std::string& version);

 private:
  struct Replica;
  std::vector<std::unique_ptr<Replica>> replicas_;
};

}  // namespace dgrid::testing

#endif  // DGRID_GRID_ORCHESTRATOR_TESTING_FAKE_DENOISER_H_
