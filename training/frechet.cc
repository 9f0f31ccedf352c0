#include "frechet.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dgrid::training {

namespace {

at::Tensor AsTensor(const std::vector<double>& v, std::vector<int64_t> shape) {
  return at::from_blob(const_cast<double*>(v.data()), shape, at::kDouble).clone();
}

}  // namespace

absl::StatusOr<FeatureMoments> ComputeMoments(absl::Span<const float> features, int dim) {
  if (dim <= 0 || features.size() % dim != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("features: ", features.size(), " values are not rows of ", dim));
  }
  const int64_t n = static_cast<int64_t>(features.size()) / dim;
  if (n < 2) return absl::InvalidArgumentError("features: need at least two rows");
  try {
    at::Tensor x =
        at::from_blob(const_cast<float*>(features.data()), {n, dim}, at::kFloat).to(at::kDouble);
    at::Tensor mean = x.mean(0);
    at::Tensor centred = x - mean;
    at::Tensor cov = centred.t().matmul(centred).div_(static_cast<double>(n - 1)).contiguous();
    FeatureMoments m;
    m.dim = dim;
    m.count = n;
    m.mean.resize(dim);
    m.cov.resize(static_cast<size_t>(dim) * dim);
    std::memcpy(m.mean.data(), mean.contiguous().data_ptr<double>(), sizeof(double) * dim);
    std::memcpy(m.cov.data(), cov.data_ptr<double>(), sizeof(double) * m.cov.size());
    return m;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("feature moments: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<double> FrechetDistance(const FeatureMoments& a, const FeatureMoments& b) {
  const int d = a.dim;
  if (d <= 0 || b.dim != d || a.mean.size() != static_cast<size_t>(d) ||
      b.mean.size() != static_cast<size_t>(d) || a.cov.size() != static_cast<size_t>(d) * d ||
      b.cov.size() != static_cast<size_t>(d) * d) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fréchet distance: moments of dimension ", a.dim, " and ", b.dim));
  }
  try {
    at::Tensor mu1 = AsTensor(a.mean, {d}), mu2 = AsTensor(b.mean, {d});
    at::Tensor s1 = AsTensor(a.cov, {d, d}), s2 = AsTensor(b.cov, {d, d});
    // Symmetrise away rounding so that eigh sees the matrix it assumes.
    s1 = (s1 + s1.t()) * 0.5;
    s2 = (s2 + s2.t()) * 0.5;
    auto [w1, v1] = at::linalg_eigh(s1);
    at::Tensor root1 = v1.matmul(at::diag(w1.clamp_min(0).sqrt())).matmul(v1.t());
    at::Tensor inner = root1.matmul(s2).matmul(root1);
    inner = (inner + inner.t()) * 0.5;
    const double tr_root = at::linalg_eigvalsh(inner).clamp_min(0).sqrt().sum().item<double>();
    const double mean_term = (mu1 - mu2).square().sum().item<double>();
    const double fd =
        mean_term + s1.trace().item<double>() + s2.trace().item<double>() - 2 * tr_root;
    if (!std::isfinite(fd)) return absl::InternalError("Fréchet distance is not finite");
    // Rounding can leave a tiny negative value for identical sets.
    return std::max(fd, 0.0);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("Fréchet distance: ", e.what_without_backtrace()));
  }
}

}  // namespace dgrid::training
