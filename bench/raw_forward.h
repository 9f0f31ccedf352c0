// The model's raw passes, timed as the engine can run them: whole, on the
// intra-op threads, or as a chunk per core (ForwardWorkers). The limits of
// dgrid-bench denoiser and dgrid-bench grid are the better of the two.
#ifndef DGRID_BENCH_RAW_FORWARD_H_
#define DGRID_BENCH_RAW_FORWARD_H_

#include "absl/time/time.h"
#include "denoiser_service/engine/denoiser_model.h"
#include "denoiser_service/engine/forward_workers.h"
#include "denoiser_service/engine/image_judge.h"

namespace dgrid {

// Seconds per image-denoiser forward of `batch` rows through `workers`,
// timed over at least `seconds` after a warm-up (constant latents, t = 500,
// the null class or the empty prompt's encoding). 0 when a forward fails.
double SecondsPerForward(DenoiserModel& model, ForwardWorkers& workers, int batch,
                         absl::Duration seconds);

// Seconds per decoder pass of `batch` latents through `workers`, likewise.
double SecondsPerDecode(DenoiserModel& model, ForwardWorkers& workers, int batch,
                        absl::Duration seconds);

// Seconds per judge pass over `batch` images through `workers`, likewise
// (mid-grey images of the bundle's image_shape).
double SecondsPerJudge(const ImageJudge& judge, const BundleManifest& manifest,
                       ForwardWorkers& workers, int batch, absl::Duration seconds);

}  // namespace dgrid

#endif  // DGRID_BENCH_RAW_FORWARD_H_
