#include "denoiser_service/server/denoiser_metrics.h"

namespace dgrid {
namespace {

// Up to 5 minutes: under a curve a trajectory can queue for tens of seconds,
// and a CPU pass of a Stable Diffusion batch takes as long.
prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
          30, 60, 120, 300};
}

}  // namespace

DenoiserMetrics::DenoiserMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("dgrid_denoiser_requests_total")
                    .Help("Denoiser RPCs by method and gRPC status code.")
                    .Register(registry)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("dgrid_denoiser_batch_size")
                      .Help("Forward rows per forward pass (guided trajectories count 2).")
                      .Register(registry)
                      .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64,
                                                                       128, 256})),
      queue_seconds_(prometheus::BuildHistogram()
                         .Name("dgrid_denoiser_queue_seconds")
                         .Help("Time from admission to a trajectory's first forward pass, by "
                               "work: interactive (grids), batch (decision curves' trunks, "
                               "which queue by design).")
                         .Register(registry)),
      queue_interactive_(queue_seconds_.Add({{"work", "interactive"}}, SecondsBuckets())),
      queue_batch_(queue_seconds_.Add({{"work", "batch"}}, SecondsBuckets())),
      forward_seconds_(prometheus::BuildHistogram()
                           .Name("dgrid_denoiser_forward_seconds")
                           .Help("Duration of one batched forward pass.")
                           .Register(registry)
                           .Add({}, SecondsBuckets())),
      active_(prometheus::BuildGauge()
                  .Name("dgrid_denoiser_active_trajectories")
                  .Help("Trajectories in the engine's active set.")
                  .Register(registry)
                  .Add({})),
      ready_(prometheus::BuildGauge()
                 .Name("dgrid_denoiser_ready")
                 .Help("1 while the replica serves; 0 while its bundles load (its metrics "
                       "are up first: a large model loads for minutes) or once it shuts down.")
                 .Register(registry)
                 .Add({})),
      model_evals_(prometheus::BuildCounter()
                       .Name("dgrid_denoiser_model_evals_total")
                       .Help("Trajectory steps evaluated (one per trajectory per iteration).")
                       .Register(registry)
                       .Add({})),
      forward_rows_(prometheus::BuildCounter()
                        .Name("dgrid_denoiser_forward_rows_total")
                        .Help("Images passed through the model (guided steps count 2).")
                        .Register(registry)
                        .Add({})),
      text_contexts_(prometheus::BuildCounter()
                         .Name("dgrid_denoiser_text_contexts_total")
                         .Help("Text models: prompt contexts looked up in the engine's cache, "
                               "by result (hit, miss = encoded).")
                         .Register(registry)),
      text_encode_seconds_(prometheus::BuildHistogram()
                               .Name("dgrid_denoiser_text_encode_seconds")
                               .Help("Duration of one batched text-encoder pass.")
                               .Register(registry)
                               .Add({}, SecondsBuckets())),
      decode_seconds_(prometheus::BuildHistogram()
                          .Name("dgrid_denoiser_decode_seconds")
                          .Help("Duration of one batched decoder (VAE) pass.")
                          .Register(registry)
                          .Add({}, SecondsBuckets())),
      decoded_images_(prometheus::BuildCounter()
                          .Name("dgrid_denoiser_decoded_images_total")
                          .Help("Latents decoded to images.")
                          .Register(registry)
                          .Add({})) {
  for (const char* r : {"hit", "miss"}) text_contexts_.Add({{"result", r}});
  // Series that the error ratio divides exist from the start: rate() sees
  // no first burst of a series that appears with it.
  for (const char* method : {"Step", "Branch", "Decode", "Tokenize", "Judge", "GetModelInfo"}) {
    for (const char* code : {"OK", "CANCELLED", "INVALID_ARGUMENT", "UNKNOWN", "DEADLINE_EXCEEDED",
                             "RESOURCE_EXHAUSTED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                             "DATA_LOSS"}) {
      requests_.Add({{"method", method}, {"code", code}});
    }
  }
}

void DenoiserMetrics::CountRequest(const std::string& method, const std::string& code) {
  requests_.Add({{"method", method}, {"code", code}}).Increment();
}

void DenoiserMetrics::SetReady(bool ready) { ready_.Set(ready ? 1 : 0); }

void DenoiserMetrics::OnForward(int trajectories, int rows, absl::Duration forward) {
  batch_size_.Observe(rows);
  forward_seconds_.Observe(absl::ToDoubleSeconds(forward));
  model_evals_.Increment(trajectories);
  forward_rows_.Increment(rows);
}

void DenoiserMetrics::OnQueueWait(absl::Duration wait, bool batch_work) {
  (batch_work ? queue_batch_ : queue_interactive_).Observe(absl::ToDoubleSeconds(wait));
}

// Each model's batcher reports its own changes: the gauge is their sum.
void DenoiserMetrics::OnActiveChange(int delta) {
  if (delta >= 0) {
    active_.Increment(delta);
  } else {
    active_.Decrement(-delta);
  }
}

void DenoiserMetrics::OnTextContexts(int hits, int misses, absl::Duration encode) {
  if (hits > 0) text_contexts_.Add({{"result", "hit"}}).Increment(hits);
  if (misses > 0) {
    text_contexts_.Add({{"result", "miss"}}).Increment(misses);
    text_encode_seconds_.Observe(absl::ToDoubleSeconds(encode));
  }
}

void DenoiserMetrics::OnDecode(int images, absl::Duration decode) {
  decoded_images_.Increment(images);
  decode_seconds_.Observe(absl::ToDoubleSeconds(decode));
}

}  // namespace dgrid
