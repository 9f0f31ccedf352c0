#include "loss_plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace dgrid::training {

absl::Status WriteLossCsv(const std::vector<LossPoint>& curve, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  out << "step,epoch,loss,images_per_s,lr\n";
  for (const LossPoint& p : curve) {
    out << absl::StrFormat("%d,%.4f,%.6f,%.1f,%.6g\n", p.step, p.epoch, p.loss, p.images_per_s,
                           p.lr);
  }
  if (!out.flush()) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LossPoint>> ReadLossCsv(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<LossPoint> curve;
  std::string line;
  std::getline(in, line);  // header
  int line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    std::vector<std::string> f = absl::StrSplit(line, ',');
    LossPoint p;
    if (f.size() != 5 ||
        std::sscanf(line.c_str(), "%ld,%lf,%lf,%lf,%lf", &p.step, &p.epoch, &p.loss,
                    &p.images_per_s, &p.lr) != 5) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": bad row"));
    }
    curve.push_back(p);
  }
  return curve;
}

namespace {

constexpr int kWidth = 800;
constexpr int kHeight = 480;
constexpr double kLeft = 70, kRight = 20, kTop = 40, kBottom = 50;

void Text(cairo_t* cr, double x, double y, const std::string& s, double align_x) {
  cairo_text_extents_t ext;
  cairo_text_extents(cr, s.c_str(), &ext);
  cairo_move_to(cr, x - ext.width * align_x - ext.x_bearing, y);
  cairo_show_text(cr, s.c_str());
}

}  // namespace

absl::Status WriteLossPlot(const std::vector<LossPoint>& curve, const std::string& title,
                           const std::string& path) {
  if (curve.empty()) return absl::FailedPreconditionError("loss plot: no points");
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, kWidth, kHeight);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);

  double lo = curve[0].loss, hi = curve[0].loss;
  for (const LossPoint& p : curve) {
    lo = std::min(lo, p.loss);
    hi = std::max(hi, p.loss);
  }
  lo = std::max(lo, 1e-6);
  const double log_lo = std::floor(std::log10(lo) * 4) / 4;
  const double log_hi = std::max(std::ceil(std::log10(std::max(hi, 1e-6)) * 4) / 4, log_lo + 0.25);
  const double max_step = std::max<double>(1, curve.back().step);
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto px = [&](double step) { return kLeft + pw * step / max_step; };
  auto py = [&](double loss) {
    double l = std::log10(std::max(loss, 1e-6));
    return kTop + ph * (1 - (l - log_lo) / (log_hi - log_lo));
  };

  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, 12);
  cairo_set_line_width(cr, 1);

  // Grid and y labels at 1, 2, 5 times each decade.
  for (int decade = static_cast<int>(std::floor(log_lo)); decade <= std::ceil(log_hi); ++decade) {
    for (double m : {1.0, 2.0, 5.0}) {
      double v = m * std::pow(10.0, decade);
      double l = std::log10(v);
      if (l < log_lo - 1e-9 || l > log_hi + 1e-9) continue;
      cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
      cairo_move_to(cr, kLeft, py(v));
      cairo_line_to(cr, kLeft + pw, py(v));
      cairo_stroke(cr);
      cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
      Text(cr, kLeft - 6, py(v) + 4, absl::StrFormat("%g", v), 1.0);
    }
  }
  for (int i = 0; i <= 5; ++i) {
    double step = max_step * i / 5;
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    Text(cr, px(step), kTop + ph + 18, absl::StrFormat("%d", static_cast<int64_t>(step)), 0.5);
  }
  Text(cr, kLeft + pw / 2, kHeight - 10, "optimizer step", 0.5);
  cairo_save(cr);
  cairo_translate(cr, 16, kTop + ph / 2);
  cairo_rotate(cr, -M_PI / 2);
  Text(cr, 0, 0, "training loss (log scale)", 0.5);
  cairo_restore(cr);
  cairo_set_font_size(cr, 14);
  Text(cr, kLeft + pw / 2, 24,
       absl::StrFormat("%s — final %.4f after %d steps", title, curve.back().loss,
                       curve.back().step),
       0.5);

  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_rectangle(cr, kLeft, kTop, pw, ph);
  cairo_stroke(cr);

  // Raw intervals, light.
  cairo_set_source_rgb(cr, 0.65, 0.75, 0.95);
  for (size_t i = 0; i < curve.size(); ++i) {
    if (i == 0) cairo_move_to(cr, px(curve[i].step), py(curve[i].loss));
    else cairo_line_to(cr, px(curve[i].step), py(curve[i].loss));
  }
  cairo_stroke(cr);
  // Centered moving average over about 2% of the run.
  const int half = std::max<int>(1, static_cast<int>(curve.size() / 100));
  cairo_set_source_rgb(cr, 0.05, 0.2, 0.7);
  cairo_set_line_width(cr, 2);
  for (size_t i = 0; i < curve.size(); ++i) {
    size_t a = i >= static_cast<size_t>(half) ? i - half : 0;
    size_t b = std::min(curve.size() - 1, i + half);
    double sum = 0;
    for (size_t j = a; j <= b; ++j) sum += curve[j].loss;
    double avg = sum / static_cast<double>(b - a + 1);
    if (i == 0) cairo_move_to(cr, px(curve[i].step), py(avg));
    else cairo_line_to(cr, px(curve[i].step), py(avg));
  }
  cairo_stroke(cr);

  cairo_destroy(cr);
  cairo_surface_flush(surface);
  cairo_status_t st = cairo_surface_write_to_png(surface, path.c_str());
  cairo_surface_destroy(surface);
  if (st != CAIRO_STATUS_SUCCESS) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path, ": ", cairo_status_to_string(st)));
  }
  return absl::OkStatus();
}

}  // namespace dgrid::training
