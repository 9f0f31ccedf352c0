#include "progress.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_format.h"

namespace dgrid::training {
namespace {

std::string Duration(double s) {
  if (s < 0 || s > 1e7) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t / 60) % 60);
  return absl::StrFormat("%dm%02ds", t / 60, t % 60);
}

}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total, double log_every_s, std::FILE* out)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      log_every_s_(log_every_s),
      out_(out),
      tty_(isatty(fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void ProgressBar::Update(int64_t done, double loss, double images_per_s) {
  if (first_done_ < 0) {
    first_done_ = done;
    start_ = std::chrono::steady_clock::now();
  }
  done_ = done;
  loss_ = loss;
  images_per_s_ = images_per_s;
  Draw(false);
}

void ProgressBar::Finish() {
  Draw(true);
  if (tty_) std::fputc('\n', out_);
  std::fflush(out_);
}

void ProgressBar::Draw(bool force) {
  const auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (!force && since_draw < (tty_ ? 0.2 : log_every_s_)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const int64_t steps_here = done_ - std::max<int64_t>(first_done_, 0);
  const double eta =
      steps_here > 0 ? elapsed / static_cast<double>(steps_here) * (total_ - done_) : -1;
  const double frac = std::clamp(static_cast<double>(done_) / total_, 0.0, 1.0);
  std::string stats = absl::StrFormat("%d/%d  loss %.4f  %.0f img/s  elapsed %s  left %s", done_,
                                      total_, loss_, images_per_s_, Duration(elapsed),
                                      Duration(eta));
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '#');
    bar.append(kWidth - filled, '.');
    std::fprintf(out_, "\r%s [%s] %3.0f%% %s\033[K", label_.c_str(), bar.c_str(), frac * 100,
                 stats.c_str());
  } else {
    std::fprintf(out_, "%s %3.0f%% %s\n", label_.c_str(), frac * 100, stats.c_str());
  }
  std::fflush(out_);
}

}  // namespace dgrid::training
