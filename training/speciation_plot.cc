#include "speciation_plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dgrid::training {

namespace {

constexpr int kWidth = 900;
constexpr int kHeight = 540;
constexpr double kLeft = 80, kRight = 30, kTop = 70, kBottom = 80;

void Text(cairo_t* cr, double x, double y, const std::string& s, double align_x) {
  cairo_text_extents_t ext;
  cairo_text_extents(cr, s.c_str(), &ext);
  cairo_move_to(cr, x - ext.width * align_x - ext.x_bearing, y);
  cairo_show_text(cr, s.c_str());
}

}  // namespace

absl::Status WriteSpeciationPlot(const EvalResult& r, const std::string& path) {
  const SpeciationEval& sp = r.speciation;
  if (sp.points.empty()) return absl::FailedPreconditionError("speciation plot: no points");
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, kWidth, kHeight);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);

  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  // x spans the whole sampler, so the last branch step sits where it is in
  // the run, not at the edge.
  const double x_max = sp.steps;
  auto px = [&](double step) { return kLeft + pw * (step + 1) / (x_max + 1); };
  auto py = [&](double p) { return kTop + ph * (1 - p); };

  cairo_set_line_width(cr, 1);
  cairo_set_font_size(cr, 12);
  for (int i = 0; i <= 10; ++i) {
    const double p = i / 10.0;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, kLeft, py(p));
    cairo_line_to(cr, kLeft + pw, py(p));
    cairo_stroke(cr);
    if (i % 2 == 0) {
      cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
      Text(cr, kLeft - 8, py(p) + 4, absl::StrFormat("%.1f", p), 1.0);
    }
  }
  for (const SpeciationPoint& p : sp.points) {
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_font_size(cr, 12);
    Text(cr, px(p.step), kTop + ph + 18, absl::StrCat(p.step), 0.5);
    cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
    cairo_set_font_size(cr, 10);
    Text(cr, px(p.step), kTop + ph + 32, absl::StrCat("t=", p.timestep), 0.5);
  }
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_set_font_size(cr, 13);
  Text(cr, kLeft + pw / 2, kHeight - 18,
       absl::StrFormat("branch step k of %d (DDIM timestep t below)", sp.steps), 0.5);
  cairo_save(cr);
  cairo_translate(cr, 22, kTop + ph / 2);
  cairo_rotate(cr, -M_PI / 2);
  Text(cr, 0, 0, "P(branch class ≠ trunk class)", 0.5);
  cairo_restore(cr);
  cairo_set_font_size(cr, 15);
  Text(cr, kLeft + pw / 2, 26,
       absl::StrFormat("%s: when does the sampler choose the class?", r.model_name), 0.5);
  cairo_set_font_size(cr, 11);
  cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
  Text(cr, kLeft + pw / 2, 46,
       absl::StrFormat("%d unconditional trunks x %d branches per step, DDIM %d steps, eta %g, "
                       "%s; bars: 95%% bootstrap interval over trunks",
                       sp.trunks, sp.branches, sp.steps, r.eta, r.spacing),
       0.5);

  // Level of independent samples: a branch that kept nothing of its trunk.
  const double dashes[] = {6, 4};
  cairo_set_source_rgb(cr, 0.75, 0.3, 0.2);
  cairo_set_dash(cr, dashes, 2, 0);
  cairo_move_to(cr, kLeft, py(sp.p_change_independent));
  cairo_line_to(cr, kLeft + pw, py(sp.p_change_independent));
  cairo_stroke(cr);
  cairo_set_dash(cr, nullptr, 0, 0);
  cairo_set_font_size(cr, 11);
  const double label_y = sp.p_change_independent > 0.9 ? py(sp.p_change_independent) + 15
                                                       : py(sp.p_change_independent) - 6;
  Text(cr, kLeft + pw - 6, label_y,
       absl::StrFormat("independent samples: 1 - Σ q_c² = %.2f", sp.p_change_independent), 1.0);

  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_rectangle(cr, kLeft, kTop, pw, ph);
  cairo_stroke(cr);

  // Error bars, then the curve and its points on top.
  cairo_set_source_rgb(cr, 0.35, 0.5, 0.85);
  cairo_set_line_width(cr, 1.5);
  for (const SpeciationPoint& p : sp.points) {
    const double x = px(p.step);
    cairo_move_to(cr, x, py(p.ci95_lo));
    cairo_line_to(cr, x, py(p.ci95_hi));
    cairo_move_to(cr, x - 4, py(p.ci95_lo));
    cairo_line_to(cr, x + 4, py(p.ci95_lo));
    cairo_move_to(cr, x - 4, py(p.ci95_hi));
    cairo_line_to(cr, x + 4, py(p.ci95_hi));
    cairo_stroke(cr);
  }
  cairo_set_source_rgb(cr, 0.05, 0.2, 0.7);
  cairo_set_line_width(cr, 2);
  for (size_t i = 0; i < sp.points.size(); ++i) {
    const double x = px(sp.points[i].step), y = py(sp.points[i].p_change);
    if (i == 0)
      cairo_move_to(cr, x, y);
    else
      cairo_line_to(cr, x, y);
  }
  cairo_stroke(cr);
  for (const SpeciationPoint& p : sp.points) {
    cairo_arc(cr, px(p.step), py(p.p_change), 4, 0, 2 * M_PI);
    cairo_fill(cr);
  }

  cairo_destroy(cr);
  cairo_surface_flush(surface);
  const cairo_status_t st = cairo_surface_write_to_png(surface, path.c_str());
  cairo_surface_destroy(surface);
  if (st != CAIRO_STATUS_SUCCESS) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path, ": ", cairo_status_to_string(st)));
  }
  return absl::OkStatus();
}

}  // namespace dgrid::training
