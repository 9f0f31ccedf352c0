#include "bench/raw_forward.h"

#include <array>
#include <functional>
#include <vector>

#include "absl/time/clock.h"
#include "denoiser_service/text/tokenizer.h"

namespace dgrid {
namespace {

// Seconds per Run of `pass` through `workers`: two warm-ups, then at least
// `seconds` and three passes.
double TimePasses(ForwardWorkers& workers, int batch, absl::Duration seconds,
                  const ForwardWorkers::ChunkFn& pass) {
  for (int i = 0; i < 2; ++i) {
    if (!workers.Run(batch, pass).ok()) return 0;
  }
  int passes = 0;
  const absl::Time start = absl::Now();
  while (absl::Now() - start < seconds || passes < 3) {
    if (!workers.Run(batch, pass).ok()) return 0;
    ++passes;
  }
  return absl::ToDoubleSeconds(absl::Now() - start) / passes;
}

}  // namespace

double SecondsPerForward(DenoiserModel& model, ForwardWorkers& workers, int batch,
                         absl::Duration seconds) {
  const size_t numel = static_cast<size_t>(model.latent_numel());
  std::vector<float> x(batch * numel, 0.1f), out(batch * numel);
  std::vector<float> t(batch, 500);
  std::vector<int64_t> cond(batch, model.manifest().null_label);
  std::vector<float> context, time_ids;
  const size_t per = model.encoding_size();
  if (const Tokenizer* tokenizer = model.tokenizer()) {
    // As the engine caches it: encoded once, outside the loop.
    const std::vector<int64_t> empty = tokenizer->Padded(tokenizer->Encode(""));
    std::vector<float> one(per);
    if (!model.EncodeText(empty, 1, absl::MakeSpan(one)).ok()) return 0;
    for (int i = 0; i < batch; ++i) context.insert(context.end(), one.begin(), one.end());
    if (model.manifest().text.size_ids) {
      const std::array<float, 6> row = model.TimeIds({});
      for (int i = 0; i < batch; ++i) time_ids.insert(time_ids.end(), row.begin(), row.end());
    }
  }
  return TimePasses(workers, batch, seconds, [&](int begin, int count) {
    auto xs = absl::MakeConstSpan(x).subspan(begin * numel, count * numel);
    auto ts = absl::MakeConstSpan(t).subspan(begin, count);
    auto o = absl::MakeSpan(out).subspan(begin * numel, count * numel);
    if (context.empty()) {
      return model.Forward(xs, ts, absl::MakeConstSpan(cond).subspan(begin, count), count, o);
    }
    return model.ForwardText(
        xs, ts, absl::MakeConstSpan(context).subspan(begin * per, count * per),
        time_ids.empty() ? absl::Span<const float>()
                         : absl::MakeConstSpan(time_ids).subspan(begin * 6, count * 6),
        count, o);
  });
}

double SecondsPerDecode(DenoiserModel& model, ForwardWorkers& workers, int batch,
                        absl::Duration seconds) {
  const size_t numel = static_cast<size_t>(model.latent_numel());
  std::vector<float> z(batch * numel, 0.1f);
  return TimePasses(workers, batch, seconds, [&](int begin, int count) {
    return model.Decode(absl::MakeConstSpan(z).subspan(begin * numel, count * numel), count)
        .status();
  });
}

double SecondsPerJudge(const ImageJudge& judge, const BundleManifest& manifest,
                       ForwardWorkers& workers, int batch, absl::Duration seconds) {
  const size_t numel = static_cast<size_t>(manifest.ImageNumel());
  std::vector<uint8_t> pixels(batch * numel, 128);
  return TimePasses(workers, batch, seconds, [&](int begin, int count) {
    return judge.Judge(absl::MakeConstSpan(pixels).subspan(begin * numel, count * numel), count)
        .status();
  });
}

}  // namespace dgrid
