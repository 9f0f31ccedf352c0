// The denoiser's Prometheus metrics (names in docs/ARCHITECTURE.md,
// "Metrics"): request counts by method and code, and the engine's batch
// size, queue wait, forward time, active trajectories and model evaluations.
#ifndef DGRID_DENOISER_SERVER_DENOISER_METRICS_H_
#define DGRID_DENOISER_SERVER_DENOISER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>

#include "denoiser_service/engine/trajectory_batcher.h"

namespace dgrid {

class DenoiserMetrics final : public BatcherObserver {
 public:
  explicit DenoiserMetrics(prometheus::Registry& registry);

  void CountRequest(const std::string& method, const std::string& code);
  // dgrid_denoiser_ready: 1 while the server serves, 0 while its bundles
  // load (and once it shuts down).
  void SetReady(bool ready);

  void OnForward(int trajectories, int rows, absl::Duration forward) override;
  void OnQueueWait(absl::Duration wait, bool batch_work) override;
  void OnActiveChange(int delta) override;
  void OnTextContexts(int hits, int misses, absl::Duration encode) override;
  void OnDecode(int images, absl::Duration decode) override;

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Histogram& batch_size_;
  prometheus::Family<prometheus::Histogram>& queue_seconds_;
  prometheus::Histogram& queue_interactive_;  // queue_seconds_{work="interactive"}
  prometheus::Histogram& queue_batch_;        // queue_seconds_{work="batch"}
  prometheus::Histogram& forward_seconds_;
  prometheus::Gauge& active_;
  prometheus::Gauge& ready_;
  prometheus::Counter& model_evals_;
  prometheus::Counter& forward_rows_;
  prometheus::Family<prometheus::Counter>& text_contexts_;
  prometheus::Histogram& text_encode_seconds_;
  prometheus::Histogram& decode_seconds_;
  prometheus::Counter& decoded_images_;
};

}  // namespace dgrid

#endif  // DGRID_DENOISER_SERVER_DENOISER_METRICS_H_
