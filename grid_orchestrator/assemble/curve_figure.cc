#include "grid_orchestrator/assemble/curve_figure.h"

#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/short_text.h"
#include "grid_orchestrator/assemble/surface_png.h"

namespace dgrid {
namespace {

constexpr int kWidth = 820;
constexpr int kPanelHeight = 300;
constexpr int kHeader = 64;
constexpr int kLeft = 64, kRight = 220, kTop = 30, kBottom = 44;

struct Rgb {
  double r, g, b;
};
// Series colours (colour-blind safe, Okabe-Ito), then the page's inks.
constexpr Rgb kSeries[] = {{0.00, 0.45, 0.70}, {0.84, 0.37, 0.00}, {0.00, 0.62, 0.45},
                           {0.80, 0.47, 0.65}, {0.90, 0.62, 0.00}, {0.34, 0.71, 0.91}};
constexpr Rgb kInk{0.10, 0.10, 0.12}, kMuted{0.42, 0.42, 0.46}, kGrid{0.90, 0.90, 0.92};

struct CairoDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
  void operator()(cairo_t* cr) const { cairo_destroy(cr); }
};

void Color(cairo_t* cr, Rgb c) { cairo_set_source_rgb(cr, c.r, c.g, c.b); }

void Text(cairo_t* cr, double x, double y, const std::string& text, double size, Rgb color,
          double align = 0, bool bold = false) {
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
  const std::string drawable = DrawableText(text);
  cairo_text_extents_t e;
  cairo_text_extents(cr, drawable.c_str(), &e);
  Color(cr, color);
  cairo_move_to(cr, std::round(x - align * e.x_advance), std::round(y));
  cairo_show_text(cr, drawable.c_str());
}

// Whether `text` is no wider than `width` in the context's font.
bool Fits(cairo_t* cr, const std::string& text, double width) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, DrawableText(text).c_str(), &e);
  return e.x_advance <= width;
}

// `text`, or its longest start that fits `width` with "…" after it, in the
// context's font.
std::string CutToWidth(cairo_t* cr, const std::string& text, double width) {
  if (Fits(cr, text, width)) return text;
  size_t fits = 0, too_long = text.size();
  while (too_long - fits > 1) {
    const size_t mid = (fits + too_long) / 2;
    (Fits(cr, absl::StrCat(Utf8Prefix(text, mid), "…"), width) ? fits : too_long) = mid;
  }
  return absl::StrCat(Utf8Prefix(text, fits), "…");
}

// `text` in one line no wider than `width` at `size`, cut with "…".
std::string FitLine(cairo_t* cr, const std::string& text, double size, double width,
                    bool bold = false) {
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
  return CutToWidth(cr, text, width);
}

// `text` in lines no wider than `width` at `size`, broken at spaces; a word
// wider than the width alone is cut, with "…".
std::vector<std::string> Wrap(cairo_t* cr, const std::string& text, double size, double width) {
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
  auto fits = [&](const std::string& line) { return Fits(cr, line, width); };
  std::vector<std::string> lines;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    const std::string longer = line.empty() ? std::string(word) : absl::StrCat(line, " ", word);
    if (line.empty() || fits(longer)) {
      line = longer;
    } else {
      lines.push_back(line);
      line = std::string(word);
    }
  }
  if (!line.empty()) lines.push_back(line);
  for (std::string& l : lines) l = CutToWidth(cr, l, width);
  return lines;
}

void Line(cairo_t* cr, double x0, double y0, double x1, double y1, Rgb color, double width) {
  Color(cr, color);
  cairo_set_line_width(cr, width);
  cairo_move_to(cr, x0, y0);
  cairo_line_to(cr, x1, y1);
  cairo_stroke(cr);
}

// One series of a panel: a value and its error per branch step.
struct Series {
  std::string label;
  std::vector<Estimate> points;
  const HalfStep* half = nullptr;  // marked on the x axis when found
  size_t color = 0;                // index into kSeries
  // Per point, a 95% interval drawn dashed where the standard error is 0
  // (every trunk agrees, and ± 0 would say nothing); null for none.
  const std::vector<Interval>* wide = nullptr;
};

// A panel with the branch step on x and [0, y_max] on y, at `top`.
void DrawPanel(cairo_t* cr, int top, const std::string& y_label, double y_max,
               const std::vector<int>& steps, const std::vector<Series>& series) {
  const double x0 = kLeft, x1 = kWidth - kRight, y0 = top + kTop, y1 = top + kPanelHeight - kBottom;
  const double min_step = steps.front(), max_step = std::max<double>(steps.back(), min_step + 1);
  auto px = [&](double step) { return x0 + 10 + (step - min_step) / (max_step - min_step) * (x1 - x0 - 20); };
  auto py = [&](double v) { return y1 - std::clamp(v / y_max, 0.0, 1.05) * (y1 - y0); };
  double ly = top + kTop + 14;  // the next legend entry's first baseline
  for (int i = 0; i <= 4; ++i) {
    const double v = y_max * i / 4, gy = std::round(py(v)) + 0.5;
    Line(cr, x0, gy, x1, gy, i == 0 ? kMuted : kGrid, 1);
    Text(cr, x0 - 6, gy + 3.5, absl::StrFormat(y_max >= 1 ? "%.2f" : "%.3f", v), 10, kMuted, 1);
  }
  for (int step : steps) {
    const double tx = std::round(px(step)) + 0.5;
    Line(cr, tx, y1, tx, y1 + 4, kMuted, 1);
    Text(cr, tx, y1 + 15, absl::StrCat(step), 10, kMuted, 0.5);
  }
  Text(cr, (x0 + x1) / 2, y1 + 32, "branch step (the branches share the trunk's first k steps)", 11,
       kInk, 0.5);
  Text(cr, x0 - 50, top + 16, y_label, 12, kInk, 0, true);
  for (size_t s = 0; s < series.size(); ++s) {
    const Rgb color = kSeries[series[s].color % (sizeof(kSeries) / sizeof(kSeries[0]))];
    const auto& pts = series[s].points;
    Color(cr, color);
    cairo_set_line_width(cr, 2);
    for (size_t i = 0; i < pts.size(); ++i) {
      if (i == 0) cairo_move_to(cr, px(steps[i]), py(pts[i].mean));
      else cairo_line_to(cr, px(steps[i]), py(pts[i].mean));
    }
    cairo_stroke(cr);
    for (size_t i = 0; i < pts.size(); ++i) {
      const double x = px(steps[i]);
      const double lo = py(pts[i].mean - pts[i].standard_error);
      const double hi = py(pts[i].mean + pts[i].standard_error);
      Line(cr, x, lo, x, hi, color, 1.5);
      Line(cr, x - 4, lo, x + 4, lo, color, 1.5);
      Line(cr, x - 4, hi, x + 4, hi, color, 1.5);
      const std::vector<Interval>* wide = series[s].wide;
      if (wide && i < wide->size() && pts[i].standard_error == 0) {
        const double dashes[] = {3, 2};
        cairo_set_dash(cr, dashes, 2, 0);
        Line(cr, x, py((*wide)[i].lo), x, py((*wide)[i].hi), color, 1.5);
        cairo_set_dash(cr, nullptr, 0, 0);
        Line(cr, x - 3, py((*wide)[i].lo), x + 3, py((*wide)[i].lo), color, 1.5);
        Line(cr, x - 3, py((*wide)[i].hi), x + 3, py((*wide)[i].hi), color, 1.5);
      }
      Color(cr, color);
      cairo_arc(cr, x, py(pts[i].mean), 3.5, 0, 2 * M_PI);
      cairo_fill(cr);
    }
    std::string legend = series[s].label;
    const HalfStep* half = series[s].half;
    if (half && half->found) {
      // The half step: a dashed drop line at its value, its 68% interval as
      // a band (to the panel's edge when it runs past the last row).
      const double hx = px(half->value);
      const double band_end = half->hi_after_last_row ? x1 : px(half->hi);
      cairo_set_source_rgba(cr, color.r, color.g, color.b, 0.15);
      cairo_rectangle(cr, px(half->lo), y1 - 8, std::max(1.0, band_end - px(half->lo)), 8);
      cairo_fill(cr);
      const double dashes[] = {4, 3};
      cairo_set_dash(cr, dashes, 2, 0);
      Line(cr, hx, py(pts[0].mean / 2), hx, y1, color, 1);
      Line(cr, x0, py(pts[0].mean / 2), hx, py(pts[0].mean / 2), color, 1);
      cairo_set_dash(cr, nullptr, 0, 0);
    }
    if (half) {
      HalfStepWords words;
      words.differs_at_first_row = pts[0].mean > 0;
      words.found = half->found;
      words.step = half->value;
      words.standard_error = half->standard_error;
      words.lo = half->lo;
      words.hi_after_last_row = half->hi_after_last_row;
      words.found_fraction = half->found_fraction;
      words.last_step = steps.back();
      // No-break spaces keep "± SE" with its number.
      legend = absl::StrCat(legend, ": ",
                            absl::StrReplaceAll(DescribeHalfStep(words), {{" ± ", "\u00A0±\u00A0"}}));
    }
    // Wrapped to the space right of the panel: a long entry ran off the
    // figure's edge.
    if (ly > y1) continue;  // no room left in the panel: the series stands unlabelled
    Line(cr, x1 + 12, ly - 4, x1 + 30, ly - 4, color, 2);
    for (const std::string& line : Wrap(cr, legend, 10, kWidth - (x1 + 34) - 8)) {
      if (ly > y1) break;
      Text(cr, x1 + 34, ly, line, 10, kInk);
      ly += 13;
    }
    ly += 6;
  }
}

// INVALID_ARGUMENT when the statistics do not match the rows or the heads.
absl::Status CheckFigure(const CurveFigure& f) {
  const CurveStatistics& s = f.statistics;
  const size_t rows = f.branch_steps.size();
  if (rows == 0) return absl::InvalidArgumentError("curve figure: no rows");
  if (f.head_names.size() != s.heads.size()) {
    return absl::InvalidArgumentError("curve figure: one name per head");
  }
  if (s.divergence.size() != rows || s.divergence_to_trunk.size() != rows) {
    return absl::InvalidArgumentError("curve figure: divergence per row");
  }
  for (const HeadCurveStatistics& h : s.heads) {
    if (h.p_differs.size() != rows) {
      return absl::InvalidArgumentError("curve figure: p_differs per row");
    }
  }
  return absl::OkStatus();
}

int FigureHeight(const CurveFigure& f) {
  const int panels = f.statistics.heads.empty() ? 1 : 2;
  return kHeader + panels * kPanelHeight;
}

// Draws a checked figure on a kWidth × FigureHeight surface, whatever its kind.
absl::Status Draw(const CurveFigure& f, cairo_surface_t* surface) {
  const CurveStatistics& s = f.statistics;
  std::unique_ptr<cairo_t, CairoDeleter> context(cairo_create(surface));
  cairo_t* cr = context.get();
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  // A long prompt (or two, with a switch) is cut to the figure's width.
  Text(cr, 16, 26, FitLine(cr, f.title, 16, kWidth - 32, /*bold=*/true), 16, kInk, 0, true);
  Text(cr, 16, 48, FitLine(cr, f.subtitle, 11, kWidth - 32), 11, kMuted);
  int top = kHeader;
  if (!s.heads.empty()) {
    std::vector<Series> heads;
    bool agreed = false;  // a row where every trunk agrees: its 95% interval, dashed
    for (size_t h = 0; h < s.heads.size(); ++h) {
      heads.push_back({f.head_names[h], s.heads[h].p_differs, &s.heads[h].half_step, h,
                       &s.heads[h].p_differs_95});
      for (size_t r = 0; r < s.heads[h].p_differs.size() && r < s.heads[h].p_differs_95.size();
           ++r) {
        agreed = agreed || s.heads[h].p_differs[r].standard_error == 0;
      }
    }
    DrawPanel(cr, top,
              agreed ? "P(branch label ≠ trunk's) ± SE; dashed: 95% where all trunks agree"
                     : "P(branch label ≠ trunk's) ± SE",
              1.0, f.branch_steps, heads);
    top += kPanelHeight;
  }
  // One branch per row has no pair to measure: the distance to the trunk alone.
  std::vector<Series> divergence;
  if (f.branches >= 2) divergence.push_back({"pairwise", s.divergence, nullptr, 0});
  divergence.push_back({"to trunk", s.divergence_to_trunk, nullptr, 1});
  double max_divergence = 0;
  for (const Series& series : divergence) {
    for (const Estimate& e : series.points) {
      if (std::isfinite(e.mean)) max_divergence = std::max(max_divergence, e.mean + e.standard_error);
    }
  }
  // A multiple of 0.04, so that the four gridlines fall on round values.
  max_divergence = max_divergence > 0 ? std::ceil(max_divergence / 0.04) * 0.04 : 1;
  DrawPanel(cr, top, "mean RMS divergence ± SE (pixel values in [0, 1])", max_divergence,
            f.branch_steps, divergence);
  if (cairo_status(cr) != CAIRO_STATUS_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("curve figure: cairo: ", cairo_status_to_string(cairo_status(cr))));
  }
  return absl::OkStatus();
}

// cairo's write callback for the SVG surface: appends to a std::string.
cairo_status_t AppendTo(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

// Cairo names each SVG surface by a process-wide counter (id="surface2007",
// referred to as "#surface2007"), so one curve's SVG differed from run to
// run: the names are numbered here by first use, from 1.
std::string NumberSurfacesByUse(const std::string& svg) {
  const std::string kName = "surface";
  std::map<std::string, std::string> renamed;
  std::string out;
  out.reserve(svg.size());
  size_t from = 0;
  while (true) {
    const size_t at = svg.find(kName, from);
    if (at == std::string::npos) break;
    size_t end = at + kName.size();
    while (end < svg.size() && absl::ascii_isdigit(static_cast<unsigned char>(svg[end]))) ++end;
    out.append(svg, from, at - from);
    // Only an attribute's value: id="surfaceN" or href="#surfaceN".
    const bool named =
        end > at + kName.size() && at > 0 && (svg[at - 1] == '"' || svg[at - 1] == '#');
    if (named) {
      auto [it, added] = renamed.emplace(svg.substr(at, end - at), "");
      if (added) it->second = absl::StrCat(kName, renamed.size());
      out += it->second;
    } else {
      out.append(svg, at, end - at);
    }
    from = end;
  }
  out.append(svg, from, std::string::npos);
  return out;
}

}  // namespace

absl::StatusOr<std::string> DrawCurvePng(const CurveFigure& f) {
  if (absl::Status checked = CheckFigure(f); !checked.ok()) return checked;
  std::unique_ptr<cairo_surface_t, CairoDeleter> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, kWidth, FigureHeight(f)));
  if (absl::Status drawn = Draw(f, surface.get()); !drawn.ok()) return drawn;
  cairo_surface_flush(surface.get());
  return SurfacePng(surface.get());
}

absl::StatusOr<std::string> DrawCurveSvg(const CurveFigure& f) {
  if (absl::Status checked = CheckFigure(f); !checked.ok()) return checked;
  std::string svg;
  std::unique_ptr<cairo_surface_t, CairoDeleter> surface(
      cairo_svg_surface_create_for_stream(AppendTo, &svg, kWidth, FigureHeight(f)));
  // Lengths in pixels, as the PNG's, rather than cairo's default points.
  cairo_svg_surface_set_document_unit(surface.get(), CAIRO_SVG_UNIT_PX);
  if (absl::Status drawn = Draw(f, surface.get()); !drawn.ok()) return drawn;
  // Finishing writes the document; the callback has appended it all by then.
  cairo_surface_finish(surface.get());
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS) {
    return absl::InternalError(absl::StrCat(
        "curve figure: cairo SVG: ", cairo_status_to_string(cairo_surface_status(surface.get()))));
  }
  return NumberSurfacesByUse(svg);
}

}  // namespace dgrid
