// A progress line on stderr for long training loops: step counts, loss,
// images per second and time left. On a terminal it redraws one line; when
// stderr is a file or pipe (a background run's log) it prints a plain line
// at most every `log_every_s` seconds, so logs stay readable.
//
//   ProgressBar bar("epoch 1/8", total_steps);
//   for (...) bar.Update(step, loss, images_per_s);
//   bar.Finish();
#ifndef DGRID_TRAINING_PROGRESS_H_
#define DGRID_TRAINING_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace dgrid::training {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, double log_every_s = 30.0,
              std::FILE* out = stderr);

  void set_label(std::string label) { label_ = std::move(label); }
  // `done` counts steps out of total; `eta` is estimated from the steps done
  // since construction (or since `done` was first seen, on a resumed run).
  void Update(int64_t done, double loss, double images_per_s);
  // Ends the terminal line (prints the last state on both kinds of output).
  void Finish();

 private:
  void Draw(bool force);

  std::string label_;
  int64_t total_;
  double log_every_s_;
  std::FILE* out_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int64_t first_done_ = -1;
  int64_t done_ = 0;
  double loss_ = 0, images_per_s_ = 0;
};

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_PROGRESS_H_
