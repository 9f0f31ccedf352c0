#include "common/timesteps.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dgrid {

std::vector<int> DdimTimesteps(int train, int steps, Spacing spacing, int steps_offset) {
  std::vector<int> t(steps);
  if (spacing == Spacing::kLeading) {
    // diffusers "leading": multiples of train // steps, plus steps_offset.
    const int ratio = train / steps;
    for (int i = 0; i < steps; ++i) t[i] = (steps - 1 - i) * ratio + steps_offset;
  } else if (spacing == Spacing::kLinspace) {
    // diffusers "linspace" for DDIM: np.linspace(0, train - 1, steps).round(),
    // reversed (halves to even, as np.round).
    for (int i = 0; i < steps; ++i) {
      t[i] = static_cast<int>(std::nearbyint(LinspaceTimestep(train, steps, i)));
    }
  } else {
    // diffusers "trailing": np.round(np.arange(train, 0, -train / steps)) - 1,
    // as numpy computes it: arange's i-th value is start + i * delta with
    // delta = (start + step) - start, and np.round rounds halves to even
    // (nearbyint in the default rounding mode; std::round would round them up,
    // giving 812 where diffusers has 811 at 16 steps). The first `steps` of
    // them: at 62 counts in [1, 1000] (61, 103, ...) arange's length rounds
    // up to one more value, -1, which diffusers runs as an extra last step.
    const double start = train;
    const double delta = (start - start / steps) - start;
    for (int i = 0; i < steps; ++i) {
      t[i] = static_cast<int>(std::nearbyint(start + i * delta)) - 1;
    }
  }
  for (int& v : t) v = std::clamp(v, 0, train - 1);
  return t;
}

double LinspaceTimestep(int train, int steps, int i) {
  // numpy's linspace: k * ((stop - start) / (num - 1)) + start, the last value
  // stop itself; one value is start (0).
  if (steps == 1) return 0.0;
  const int k = steps - 1 - i;
  if (k == steps - 1) return train - 1;
  return k * ((train - 1.0) / (steps - 1));
}

bool LinspaceHasFractions(int train, int steps) {
  for (int i = 0; i < steps; ++i) {
    const float t = static_cast<float>(LinspaceTimestep(train, steps, i));
    if (t != std::nearbyint(t)) return true;
  }
  return false;
}

std::string LinspaceFractionsProblem(const std::string& model, int train, int steps) {
  std::vector<int> whole = {1};
  for (int n = 2; n <= train && whole.size() <= 12; ++n) {
    if ((train - 1) % (n - 1) == 0) whole.push_back(n);
  }
  const bool more = whole.size() > 12;
  if (more) whole.resize(12);
  return absl::StrCat("Euler ancestral with linspace spacing runs fractional timesteps at ", steps,
                      " steps, and ", model,
                      " takes whole ones (its bundle's timestep_dtype is \"long\"); give leading "
                      "or trailing spacing, DDIM, or a step count whose linspace timesteps are "
                      "whole (", absl::StrJoin(whole, ", "), more ? ", ..." : "", ")");
}

std::string TimestepsProblem(int train_timesteps, int steps, Spacing spacing, int steps_offset) {
  if (spacing != Spacing::kLeading || steps < 1) return "";
  auto last = [&](int n) { return (n - 1) * (train_timesteps / n) + steps_offset; };
  if (last(steps) <= train_timesteps - 1) return "";
  // The most steps below this that fit. Not every smaller count does: the
  // first timestep does not grow with the step count (offset 2: 998 steps
  // fit, 500 pass the end, 499 fit).
  int fits = steps - 1;
  while (fits > 0 && last(fits) > train_timesteps - 1) --fits;
  return absl::StrCat(steps, " leading steps with steps_offset ", steps_offset,
                      " would reach timestep ", last(steps), " of a schedule that ends at ",
                      train_timesteps - 1, "; ",
                      fits > 0 ? absl::StrCat(fits, " steps fit (the most below ", steps, "), ")
                               : "",
                      "or give trailing or linspace spacing");
}

bool DdimLastStepAddsNoise(int last_timestep, int train_timesteps, int steps,
                           bool set_alpha_to_one) {
  if (DdimPreviousTimestep(last_timestep, train_timesteps, steps) >= 0) return true;
  return !set_alpha_to_one && last_timestep != 0;
}

std::vector<double> AlphasCumprod(const NoiseScheduleSpec& spec) {
  const int n = spec.train_timesteps;
  std::vector<double> betas(n);
  if (spec.beta_schedule == "squaredcos_cap_v2") {
    // Nichol & Dhariwal's cosine schedule, with beta capped at 0.999.
    auto alpha_bar = [](double t) {
      const double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
      return c * c;
    };
    for (int i = 0; i < n; ++i) {
      betas[i] = std::min(1.0 - alpha_bar((i + 1.0) / n) / alpha_bar(double(i) / n), 0.999);
    }
  } else if (spec.beta_schedule == "scaled_linear") {
    const double a = std::sqrt(spec.beta_start), b = std::sqrt(spec.beta_end);
    for (int i = 0; i < n; ++i) {
      const double r = a + (b - a) * i / (n - 1);
      betas[i] = r * r;
    }
  } else {
    for (int i = 0; i < n; ++i) {
      betas[i] = spec.beta_start + (spec.beta_end - spec.beta_start) * i / (n - 1);
    }
  }
  std::vector<double> out(n);
  double prod = 1.0;
  for (int i = 0; i < n; ++i) {
    prod *= 1.0 - betas[i];
    out[i] = prod;
  }
  return out;
}

}  // namespace dgrid
