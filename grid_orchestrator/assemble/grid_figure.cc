#include "grid_orchestrator/assemble/grid_figure.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/short_text.h"
#include "common/status_macros.h"
#include "grid_orchestrator/assemble/surface_png.h"

namespace dgrid {
namespace {

// Spacing in output pixels. Integers, so that every picture lands on whole
// pixels and nearest-neighbour blocks stay exact.
constexpr int kPad = 24;       // around the whole figure
constexpr int kGap = 8;        // between pictures of one group
constexpr int kGroupGap = 22;  // between groups (labels, strip, cells, ...)
constexpr int kRowGap = 16;    // between rows
constexpr int kPlotWidth = 320;
constexpr int kPlotHeight = 230;
constexpr int kMaxScale = 32;
constexpr int kMaxPictureSide = 4096;
constexpr int kMaxSurfaceSide = 32767;  // Cairo's limit for image surfaces
constexpr int kDefaultSide = 28;        // slot size when no picture is there yet
constexpr double kTwoPi = 6.283185307179586;

struct Rgb {
  double r, g, b;
};
constexpr Rgb kInk{0.13, 0.13, 0.15};
constexpr Rgb kMuted{0.40, 0.40, 0.46};
constexpr Rgb kRule{0.82, 0.82, 0.86};
constexpr Rgb kGrid{0.92, 0.92, 0.94};
constexpr Rgb kPlaceholderFill{0.95, 0.95, 0.97};
constexpr Rgb kPlaceholderEdge{0.72, 0.72, 0.78};
constexpr Rgb kPairwise{0.16, 0.40, 0.75};
constexpr Rgb kToTrunk{0.87, 0.42, 0.06};

struct Font {
  double size;
  bool bold;
  Rgb color;
};
constexpr Font kTitleFont{20, true, kInk};
constexpr Font kSubtitleFont{13, false, kMuted};
constexpr Font kGroupFont{12, true, kInk};
constexpr Font kCaptionFont{11, false, kMuted};
constexpr Font kRowLabelFont{13, true, kInk};
constexpr Font kTimestepFont{12, false, kMuted};
constexpr Font kNumberFont{11, false, kInk};
constexpr Font kTickFont{10, false, kMuted};

enum class Align { kLeft, kCenter, kRight };

struct SurfaceDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
};
using SurfacePtr = std::unique_ptr<cairo_surface_t, SurfaceDeleter>;
struct ContextDeleter {
  void operator()(cairo_t* cr) const { cairo_destroy(cr); }
};
using ContextPtr = std::unique_ptr<cairo_t, ContextDeleter>;

// How much `picture` is enlarged in `figure`: its scale, or the largest
// whole factor that keeps it within max_picture_side, or the fraction that
// shrinks it to that side.
double DrawnFactor(const GridFigure& figure, const Picture& picture) {
  const int side = std::max(1, std::max(picture.width, picture.height));
  const int bound = figure.max_picture_side;
  if (bound <= 0 || side * figure.scale <= bound) return figure.scale;
  if (side <= bound) return bound / side;
  return static_cast<double>(bound) / side;
}

// A length of the picture, `factor` times, in whole output pixels.
int DrawnLength(int length, double factor) {
  return std::max(1, static_cast<int>(std::lround(length * factor)));
}

absl::Status CairoError(absl::string_view what, cairo_status_t status) {
  return absl::InternalError(
      absl::StrCat("grid figure: cairo ", what, ": ", cairo_status_to_string(status)));
}

// Thin wrapper over a Cairo context for the few things the figure draws.
class Painter {
 public:
  explicit Painter(cairo_t* cr) : cr_(cr) {
    cairo_font_options_t* options = cairo_font_options_create();
    cairo_font_options_set_antialias(options, CAIRO_ANTIALIAS_GRAY);
    cairo_font_options_set_hint_style(options, CAIRO_HINT_STYLE_SLIGHT);
    cairo_font_options_set_hint_metrics(options, CAIRO_HINT_METRICS_ON);
    cairo_set_font_options(cr_, options);
    cairo_font_options_destroy(options);
  }

  cairo_t* cr() const { return cr_; }

  void SetColor(Rgb c) { cairo_set_source_rgb(cr_, c.r, c.g, c.b); }

  void SetFont(const Font& font) {
    cairo_select_font_face(cr_, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
                           font.bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr_, font.size);
    SetColor(font.color);
  }

  int Width(const Font& font, const std::string& text) {
    SetFont(font);
    cairo_text_extents_t extents;
    // Cairo refuses text with noncharacters and fails the whole figure.
    cairo_text_extents(cr_, DrawableText(text).c_str(), &extents);
    return static_cast<int>(std::ceil(extents.x_advance));
  }

  // Draws `text` with its baseline at y, anchored at x as `align` says.
  void Text(const Font& font, double x, double y, const std::string& text,
            Align align = Align::kLeft) {
    const int width = Width(font, text);
    if (align == Align::kCenter) x -= width / 2.0;
    if (align == Align::kRight) x -= width;
    cairo_move_to(cr_, std::round(x), std::round(y));
    cairo_show_text(cr_, DrawableText(text).c_str());
  }

  void Line(double x0, double y0, double x1, double y1, Rgb color, double width = 1) {
    SetColor(color);
    cairo_set_line_width(cr_, width);
    cairo_move_to(cr_, x0, y0);
    cairo_line_to(cr_, x1, y1);
    cairo_stroke(cr_);
  }

  // Draws `picture` with its top-left corner at (x, y), each pixel an exact
  // factor x factor block (a whole factor), or shrunk smoothly (below 1),
  // with a hairline frame so light pictures keep an edge on the white page.
  absl::Status DrawPicture(const Picture& picture, int x, int y, double factor) {
    SurfacePtr image(cairo_image_surface_create(CAIRO_FORMAT_RGB24, picture.width, picture.height));
    if (cairo_surface_status(image.get()) != CAIRO_STATUS_SUCCESS) {
      return CairoError("picture surface", cairo_surface_status(image.get()));
    }
    cairo_surface_flush(image.get());
    unsigned char* data = cairo_image_surface_get_data(image.get());
    const int stride = cairo_image_surface_get_stride(image.get());
    for (int row = 0; row < picture.height; ++row) {
      auto* out = reinterpret_cast<uint32_t*>(data + static_cast<size_t>(row) * stride);
      for (int col = 0; col < picture.width; ++col) {
        const uint8_t* px =
            &picture.pixels[(static_cast<size_t>(row) * picture.width + col) * picture.channels];
        const uint32_t r = px[0];
        const uint32_t g = picture.channels == 3 ? px[1] : px[0];
        const uint32_t b = picture.channels == 3 ? px[2] : px[0];
        out[col] = (r << 16) | (g << 8) | b;
      }
    }
    cairo_surface_mark_dirty(image.get());

    const int w = DrawnLength(picture.width, factor);
    const int h = DrawnLength(picture.height, factor);
    cairo_save(cr_);
    cairo_translate(cr_, x, y);
    cairo_scale(cr_, factor, factor);
    cairo_set_source_surface(cr_, image.get(), 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr_),
                             factor >= 1 ? CAIRO_FILTER_NEAREST : CAIRO_FILTER_GOOD);
    cairo_rectangle(cr_, 0, 0, picture.width, picture.height);
    cairo_fill(cr_);
    cairo_restore(cr_);

    SetColor(kRule);
    cairo_set_line_width(cr_, 1);
    cairo_rectangle(cr_, x - 0.5, y - 0.5, w + 1, h + 1);
    cairo_stroke(cr_);
    return absl::OkStatus();
  }

  // A picture that is not there: a pale box with a dashed edge, saying why.
  void DrawPlaceholder(int x, int y, int w, int h, const std::string& text) {
    SetColor(kPlaceholderFill);
    cairo_rectangle(cr_, x, y, w, h);
    cairo_fill(cr_);
    const double dashes[] = {4, 3};
    cairo_set_dash(cr_, dashes, 2, 0);
    SetColor(kPlaceholderEdge);
    cairo_set_line_width(cr_, 1);
    cairo_rectangle(cr_, x + 0.5, y + 0.5, w - 1, h - 1);
    cairo_stroke(cr_);
    cairo_set_dash(cr_, nullptr, 0, 0);
    if (Width(kCaptionFont, text) + 8 <= w && h >= 16) {
      Text(kCaptionFont, x + w / 2.0, y + h / 2.0 + 4, text, Align::kCenter);
    }
  }

 private:
  cairo_t* cr_;
};

absl::Status CheckPicture(const Picture& p, absl::string_view what) {
  if (p.empty()) return absl::OkStatus();
  if (p.channels != 1 && p.channels != 3) {
    return absl::InvalidArgumentError(absl::StrCat("grid figure: ", what, ": channels is ",
                                                   p.channels, ", expected 1 (grey) or 3 (RGB)"));
  }
  if (p.width <= 0 || p.height <= 0 || p.width > kMaxPictureSide || p.height > kMaxPictureSide) {
    return absl::InvalidArgumentError(absl::StrCat("grid figure: ", what, ": size ", p.width, "x",
                                                   p.height, " is out of range 1..",
                                                   kMaxPictureSide));
  }
  const size_t expected = static_cast<size_t>(p.width) * p.height * p.channels;
  if (p.pixels.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grid figure: ", what, ": pixel buffer holds ", p.pixels.size(), " bytes, expected ",
        expected, " for ", p.width, "x", p.height, "x", p.channels));
  }
  return absl::OkStatus();
}

absl::Status CheckFigure(const GridFigure& figure) {
  if (figure.scale < 1 || figure.scale > kMaxScale) {
    return absl::InvalidArgumentError(
        absl::StrCat("grid figure: scale ", figure.scale, " is out of range 1..", kMaxScale));
  }
  if (figure.max_picture_side < 0 || figure.max_picture_side > kMaxSurfaceSide) {
    return absl::InvalidArgumentError(absl::StrCat("grid figure: max_picture_side ",
                                                   figure.max_picture_side,
                                                   " is out of range 0..", kMaxSurfaceSide));
  }
  RETURN_IF_ERROR(CheckPicture(figure.trunk_final, "trunk_final"));
  for (size_t r = 0; r < figure.rows.size(); ++r) {
    const GridFigure::Row& row = figure.rows[r];
    RETURN_IF_ERROR(CheckPicture(row.trunk_xt, absl::StrCat("row ", r, " trunk_xt")));
    RETURN_IF_ERROR(CheckPicture(row.trunk_x0, absl::StrCat("row ", r, " trunk_x0")));
    for (size_t c = 0; c < row.cells.size(); ++c) {
      RETURN_IF_ERROR(CheckPicture(row.cells[c], absl::StrCat("row ", r, " cell ", c)));
    }
  }
  return absl::OkStatus();
}

std::string FormatDistance(double d) {
  return std::isfinite(d) ? absl::StrFormat("%.3f", d) : std::string("–");
}

// Rounds a positive span up to a "nice" axis step (1, 2, 2.5 or 5 x 10^k) so
// that about `ticks` gridlines cover it, and says how many decimals its
// labels need.
std::pair<double, int> NiceStep(double span, int ticks) {
  const double raw = span / ticks;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double normalized = raw / magnitude;
  double nice = 10;
  for (double candidate : {1.0, 2.0, 2.5, 5.0}) {
    if (normalized <= candidate) {
      nice = candidate;
      break;
    }
  }
  const double step = nice * magnitude;
  int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  if (nice == 2.5) ++decimals;
  return {step, decimals};
}

// The "divergence by branch step" plot in the box (x, y, kPlotWidth,
// kPlotHeight). `rows` are in increasing branch_step. Without `pairwise`
// (one branch per row: no pair to measure) only the distance to the trunk
// is drawn.
void DrawDivergencePlot(Painter& p, const std::vector<const GridFigure::Row*>& rows, int x, int y,
                        bool pairwise) {
  cairo_t* cr = p.cr();
  p.Text(kGroupFont, x, y + 12, "divergence by branch step");

  // Legend: a line sample per series, in the series' colour and dash.
  const double dashes[] = {5, 3};
  int lx = x;
  const int ly = y + 30;
  const int first_series = pairwise ? 0 : 1;
  for (int series = first_series; series < 2; ++series) {
    const Rgb color = series == 0 ? kPairwise : kToTrunk;
    if (series == 1) cairo_set_dash(cr, dashes, 2, 0);
    p.Line(lx, ly - 4, lx + 20, ly - 4, color, 2);
    cairo_set_dash(cr, nullptr, 0, 0);
    const std::string label = series == 0 ? "pairwise" : "to trunk";
    p.Text(kCaptionFont, lx + 25, ly, label);
    lx += 25 + p.Width(kCaptionFont, label) + 16;
  }

  double max_value = 0;
  int min_step = rows.empty() ? 0 : rows.front()->branch_step;
  int max_step = rows.empty() ? 1 : rows.back()->branch_step;
  for (const GridFigure::Row* row : rows) {
    for (double v : {pairwise ? row->divergence : 0.0, row->divergence_to_trunk}) {
      if (std::isfinite(v)) max_value = std::max(max_value, v);
    }
  }
  if (max_value <= 0) max_value = 1;
  if (max_step == min_step) {
    --min_step;
    ++max_step;
  }
  const auto [y_step, decimals] = NiceStep(max_value, 4);
  const int y_ticks = static_cast<int>(std::ceil(max_value / y_step - 1e-9));
  const double y_max = y_ticks * y_step;

  int label_width = 0;
  for (int i = 0; i <= y_ticks; ++i) {
    label_width =
        std::max(label_width, p.Width(kTickFont, absl::StrFormat("%.*f", decimals, i * y_step)));
  }
  const int ax0 = x + label_width + 8;
  const int ax1 = x + kPlotWidth - 8;
  const int ay0 = y + 46;
  const int ay1 = y + kPlotHeight - 34;
  // Keep the end points off the frame so their dots are whole.
  const double inset = 10;
  auto px = [&](double step) {
    return ax0 + inset + (step - min_step) / (max_step - min_step) * (ax1 - ax0 - 2 * inset);
  };
  auto py = [&](double v) { return ay1 - v / y_max * (ay1 - ay0); };

  for (int i = 0; i <= y_ticks; ++i) {
    const double gy = std::round(py(i * y_step)) + 0.5;
    p.Line(ax0, gy, ax1, gy, i == 0 ? kRule : kGrid);
    p.Text(kTickFont, ax0 - 6, gy + 3.5, absl::StrFormat("%.*f", decimals, i * y_step),
           Align::kRight);
  }
  p.Line(ax0 + 0.5, ay0, ax0 + 0.5, ay1 + 0.5, kRule);

  // X ticks at the rows' branch steps; a label that would run into the
  // previous one is left out (its tick stays).
  double last_label_end = -1e9;
  for (const GridFigure::Row* row : rows) {
    const double tx = std::round(px(row->branch_step)) + 0.5;
    p.Line(tx, ay1, tx, ay1 + 4, kRule);
    const std::string label = absl::StrCat(row->branch_step);
    const int w = p.Width(kTickFont, label);
    if (tx - w / 2.0 > last_label_end + 4) {
      p.Text(kTickFont, tx, ay1 + 15, label, Align::kCenter);
      last_label_end = tx + w / 2.0;
    }
  }
  p.Text(kCaptionFont, (ax0 + ax1) / 2.0, ay1 + 29, "branch step", Align::kCenter);

  for (int series = first_series; series < 2; ++series) {
    const Rgb color = series == 0 ? kPairwise : kToTrunk;
    auto value = [series](const GridFigure::Row* row) {
      return series == 0 ? row->divergence : row->divergence_to_trunk;
    };
    if (series == 1) cairo_set_dash(cr, dashes, 2, 0);
    p.SetColor(color);
    cairo_set_line_width(cr, 2);
    bool drawing = false;
    for (const GridFigure::Row* row : rows) {
      if (!std::isfinite(value(row))) {
        drawing = false;
        continue;
      }
      if (drawing) {
        cairo_line_to(cr, px(row->branch_step), py(value(row)));
      } else {
        cairo_move_to(cr, px(row->branch_step), py(value(row)));
        drawing = true;
      }
    }
    cairo_stroke(cr);
    cairo_set_dash(cr, nullptr, 0, 0);
    for (const GridFigure::Row* row : rows) {
      if (!std::isfinite(value(row))) continue;
      cairo_new_sub_path(cr);
      cairo_arc(cr, px(row->branch_step), py(value(row)), 3, 0, kTwoPi);
    }
    cairo_fill(cr);
  }
}

// Where everything goes, in output pixels. Computed before the surface
// exists, because the surface's size depends on text widths.
struct Layout {
  int width = 0, height = 0;
  int slot_w = 0, slot_h = 0;  // the largest scaled picture
  int col_w = 0;               // a picture column: slot or caption, whichever is wider
  int columns = 0;             // branch columns
  int header_rule_y = 0;
  int group_y = 0, caption_y = 0;  // baselines of group headings and column captions
  int rows_y = 0;                  // top of the first row
  int label_x = 0, strip_x = 0, strip_rule_x = 0, cells_x = 0, numbers_x = 0, right_rule_x = 0,
      right_x = 0;
  int plot_x = 0, plot_y = 0;

  int ColumnX(int first_x, int column) const { return first_x + column * (col_w + kGap); }
  int RowY(int row) const { return rows_y + row * (slot_h + kRowGap); }
};

// "after step k", or "→ B after step k" when the branches switch prompt.
std::string RowLabel(const GridFigure& figure, const GridFigure::Row& row) {
  if (figure.switch_to.empty() || !row.switches) {
    return absl::StrCat("after step ", row.branch_step);
  }
  return absl::StrCat("\xE2\x86\x92 ", CutText(figure.switch_to, 24), " after step ",
                      row.branch_step);
}

Layout ComputeLayout(Painter& p, const GridFigure& figure,
                     const std::vector<const GridFigure::Row*>& rows) {
  Layout l;
  int max_w = 0, max_h = 0;
  auto consider = [&](const Picture& picture) {
    if (picture.empty()) return;
    const double factor = DrawnFactor(figure, picture);
    max_w = std::max(max_w, DrawnLength(picture.width, factor));
    max_h = std::max(max_h, DrawnLength(picture.height, factor));
  };
  consider(figure.trunk_final);
  for (const GridFigure::Row* row : rows) {
    consider(row->trunk_xt);
    consider(row->trunk_x0);
    for (const Picture& cell : row->cells) consider(cell);
    l.columns = std::max(l.columns, static_cast<int>(row->cells.size()));
  }
  if (max_w == 0) {
    const Picture none{kDefaultSide, kDefaultSide, 1, {}};
    max_w = max_h = DrawnLength(kDefaultSide, DrawnFactor(figure, none));
  }
  l.slot_w = max_w;
  l.slot_h = max_h;

  l.col_w = l.slot_w;
  for (const char* caption : {"x_t", "x0", "final"}) {
    l.col_w = std::max(l.col_w, p.Width(kCaptionFont, caption));
  }
  l.col_w = std::max(l.col_w, p.Width(kCaptionFont, absl::StrCat("branch ", l.columns)));
  l.col_w = std::max(l.col_w, (p.Width(kGroupFont, "trajectory") - kGap + 1) / 2);
  l.col_w = std::max(l.col_w, p.Width(kGroupFont, "branches"));

  int label_w = 0, numbers_w = p.Width(kGroupFont, "divergence");
  for (const GridFigure::Row* row : rows) {
    label_w = std::max(label_w, p.Width(kRowLabelFont, RowLabel(figure, *row)));
    label_w = std::max(label_w, p.Width(kTimestepFont, absl::StrCat("t = ", row->timestep)));
    numbers_w =
        std::max(numbers_w, p.Width(kNumberFont, "pairwise " + FormatDistance(row->divergence)));
    numbers_w = std::max(
        numbers_w, p.Width(kNumberFont, "to trunk " + FormatDistance(row->divergence_to_trunk)));
  }

  l.label_x = kPad;
  l.strip_x = l.label_x + label_w + kGroupGap;
  l.strip_rule_x = l.ColumnX(l.strip_x, 2) - kGap + kGroupGap / 2;
  l.cells_x = l.ColumnX(l.strip_x, 2) - kGap + kGroupGap;
  l.numbers_x = l.ColumnX(l.cells_x, std::max(l.columns, 1)) - kGap + kGroupGap;
  l.right_rule_x = l.numbers_x + numbers_w + kGroupGap / 2;
  l.right_x = l.numbers_x + numbers_w + kGroupGap;

  int y = kPad + 19;  // title baseline: the font's ascent below the padding
  y += figure.subtitle.empty() ? 0 : 21;
  l.header_rule_y = y + 16;
  l.group_y = l.header_rule_y + 26;
  l.caption_y = l.group_y + 17;
  l.rows_y = l.caption_y + 10;
  const int rows_bottom = rows.empty() ? l.rows_y : l.RowY(static_cast<int>(rows.size())) - kRowGap;
  const int trunk_bottom = l.rows_y + l.slot_h;

  // The plot goes under the trunk, unless the rows are too few or too small
  // to reach down that far: then beside it, rather than leaving a tall empty
  // band under the rows.
  int right_w = l.col_w;
  int bottom = std::max(rows_bottom, trunk_bottom);
  if (!rows.empty()) {
    const int under_y = trunk_bottom + 2 * kRowGap;
    if (under_y + kPlotHeight <= rows_bottom + kPlotHeight / 2) {
      l.plot_x = l.right_x;
      l.plot_y = under_y;
      right_w = std::max(l.col_w, kPlotWidth);
    } else {
      l.plot_x = l.right_x + l.col_w + kGroupGap;
      l.plot_y = l.group_y - 12;  // its title lines up with the group headings
      right_w = l.col_w + kGroupGap + kPlotWidth;
    }
    bottom = std::max(bottom, l.plot_y + kPlotHeight);
  }
  l.height = bottom + kPad;
  l.width = l.right_x + right_w + kPad;
  l.width = std::max(l.width, kPad + p.Width(kTitleFont, figure.title) + kPad);
  l.width = std::max(l.width, kPad + p.Width(kSubtitleFont, figure.subtitle) + kPad);
  return l;
}

// An empty picture is still to come ("pending"), unless `missing` says why
// there is none.
absl::Status DrawPictureOrPlaceholder(Painter& p, const Layout& l, const GridFigure& figure,
                                      const Picture& picture, int slot_x, int slot_y,
                                      const std::string& missing = "pending") {
  if (picture.empty()) {
    p.DrawPlaceholder(slot_x + (l.col_w - l.slot_w) / 2, slot_y, l.slot_w, l.slot_h, missing);
    return absl::OkStatus();
  }
  const double factor = DrawnFactor(figure, picture);
  const int x = slot_x + (l.col_w - DrawnLength(picture.width, factor)) / 2;
  const int y = slot_y + (l.slot_h - DrawnLength(picture.height, factor)) / 2;
  return p.DrawPicture(picture, x, y, factor);
}

}  // namespace

namespace {

// A prompt as the figure shows it: at most 60 bytes.
std::string FigureText(const std::string& text) { return CutText(text, 60); }

}  // namespace

void SetCaption(const FigureCaption& c, GridFigure* figure) {
  figure->title = absl::StrCat(c.model, " \xC2\xB7 prompt: ",
                               c.prompt.empty() ? "(unconditional)" : FigureText(c.prompt));
  if (!c.negative_prompt.empty()) {
    absl::StrAppend(&figure->title, " \xC2\xB7 negative: ", FigureText(c.negative_prompt));
  }
  if (!c.trunk_switches.empty()) {
    absl::StrAppend(&figure->title, " \xC2\xB7 trunk: ", FigureText(c.trunk_switches));
  }
  figure->subtitle = absl::StrCat(
      "seed ", c.seed, c.sampler == Sampler::kEulerAncestral ? " \xC2\xB7 Euler ancestral" : "",
      " \xC2\xB7 eta ", c.eta, " \xC2\xB7 ", c.steps, " steps",
      c.spacing == Spacing::kLeading ? "" : absl::StrCat(" (", SpacingName(c.spacing), ")"),
      " \xC2\xB7 guidance ", c.guidance);
  if (c.switch_prompt.empty()) {
    figure->switch_to.clear();
    return;
  }
  // The switch's negative prompt is named where it differs from the grid's.
  const std::string to = absl::StrCat(
      FigureText(c.switch_prompt),
      SwitchedNegativeNote(
          c.switch_negative_prompt.empty() ? c.negative_prompt : c.switch_negative_prompt,
          c.negative_prompt, 60));
  // Rows say "→ B" only where the branches do switch.
  figure->switch_to = c.switch_unseen ? "" : to;
  if (c.switch_unseen) {
    absl::StrAppend(&figure->subtitle, " \xC2\xB7 switch to: ", to,
                    " changes nothing the model reads");
  } else {
    absl::StrAppend(&figure->subtitle, " \xC2\xB7 branches switch to: ", to,
                    c.trunk_noise ? " (trunk noise)" : " (new noise)");
  }
}

absl::StatusOr<std::string> DrawGridPng(const GridFigure& figure) {
  RETURN_IF_ERROR(CheckFigure(figure));

  std::vector<const GridFigure::Row*> rows;
  for (const GridFigure::Row& row : figure.rows) rows.push_back(&row);
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto* a, const auto* b) { return a->branch_step < b->branch_step; });

  // Text widths need a context; measure on a scratch surface first.
  SurfacePtr scratch(cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1));
  ContextPtr scratch_cr(cairo_create(scratch.get()));
  Painter measure(scratch_cr.get());
  const Layout l = ComputeLayout(measure, figure, rows);
  if (cairo_status(scratch_cr.get()) != CAIRO_STATUS_SUCCESS) {
    return CairoError("measuring text", cairo_status(scratch_cr.get()));
  }
  if (l.width > kMaxSurfaceSide || l.height > kMaxSurfaceSide) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grid figure: ", l.width, "x", l.height, " pixels is larger than ", kMaxSurfaceSide,
        " on a side; lower the scale or the number of rows or columns"));
  }

  SurfacePtr surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, l.width, l.height));
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS) {
    return CairoError("creating the figure surface", cairo_surface_status(surface.get()));
  }
  ContextPtr cr(cairo_create(surface.get()));
  Painter p(cr.get());
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());

  // Header.
  p.Text(kTitleFont, kPad, kPad + 19, figure.title);
  if (!figure.subtitle.empty()) p.Text(kSubtitleFont, kPad, kPad + 40, figure.subtitle);
  p.Line(kPad, l.header_rule_y + 0.5, l.width - kPad, l.header_rule_y + 0.5, kRule);

  // Group headings and column captions.
  const int strip_w = 2 * l.col_w + kGap;
  p.Text(kGroupFont, l.strip_x + strip_w / 2.0, l.group_y, "trajectory", Align::kCenter);
  p.Text(kCaptionFont, l.strip_x + l.col_w / 2.0, l.caption_y, "x_t", Align::kCenter);
  p.Text(kCaptionFont, l.ColumnX(l.strip_x, 1) + l.col_w / 2.0, l.caption_y, "x0", Align::kCenter);
  if (l.columns > 0) {
    const int cells_w = l.columns * (l.col_w + kGap) - kGap;
    p.Text(kGroupFont, l.cells_x + cells_w / 2.0, l.group_y, "branches", Align::kCenter);
    for (int c = 0; c < l.columns; ++c) {
      p.Text(kCaptionFont, l.ColumnX(l.cells_x, c) + l.col_w / 2.0, l.caption_y,
             absl::StrCat("branch ", c + 1), Align::kCenter);
    }
  }
  p.Text(kGroupFont, l.numbers_x, l.group_y, "divergence");
  p.Text(kGroupFont, l.right_x + l.col_w / 2.0, l.group_y, "trunk", Align::kCenter);
  p.Text(kCaptionFont, l.right_x + l.col_w / 2.0, l.caption_y, "final", Align::kCenter);

  // Rules between the strip and the branches, and before the trunk column.
  const int rows_bottom = rows.empty() ? l.rows_y : l.RowY(static_cast<int>(rows.size())) - kRowGap;
  const int rule_top = l.group_y - 14;
  p.Line(l.strip_rule_x + 0.5, rule_top, l.strip_rule_x + 0.5, rows_bottom, kRule);
  p.Line(l.right_rule_x + 0.5, rule_top, l.right_rule_x + 0.5,
         std::max(rows_bottom, l.height - kPad), kRule);

  // Rows. One branch per row has no pair: its distance to the trunk alone.
  const bool pairwise_rows = l.columns >= 2;
  for (size_t r = 0; r < rows.size(); ++r) {
    const GridFigure::Row& row = *rows[r];
    const int y = l.RowY(static_cast<int>(r));
    const double mid = y + l.slot_h / 2.0;
    p.Text(kRowLabelFont, l.label_x, mid - 2, RowLabel(figure, row));
    p.Text(kTimestepFont, l.label_x, mid + 14, absl::StrCat("t = ", row.timestep));

    RETURN_IF_ERROR(DrawPictureOrPlaceholder(p, l, figure, row.trunk_xt, l.strip_x, y));
    // Before the first step the model has predicted no x0: a finished grid
    // is not still waiting for it.
    RETURN_IF_ERROR(DrawPictureOrPlaceholder(p, l, figure, row.trunk_x0, l.ColumnX(l.strip_x, 1),
                                             y, row.branch_step == 0 ? "none yet" : "pending"));
    for (size_t c = 0; c < row.cells.size(); ++c) {
      RETURN_IF_ERROR(DrawPictureOrPlaceholder(p, l, figure, row.cells[c],
                                               l.ColumnX(l.cells_x, static_cast<int>(c)), y));
    }

    Font pairwise = kNumberFont, to_trunk = kNumberFont;
    pairwise.color = kPairwise;
    to_trunk.color = kToTrunk;
    if (pairwise_rows) {
      p.Text(pairwise, l.numbers_x, mid - 2, "pairwise " + FormatDistance(row.divergence));
      p.Text(to_trunk, l.numbers_x, mid + 13, "to trunk " + FormatDistance(row.divergence_to_trunk));
    } else {
      p.Text(to_trunk, l.numbers_x, mid + 5, "to trunk " + FormatDistance(row.divergence_to_trunk));
    }
  }

  // Trunk column: the final image once, then the plot beneath it.
  RETURN_IF_ERROR(
      DrawPictureOrPlaceholder(p, l, figure, figure.trunk_final, l.right_x, l.rows_y));
  if (!rows.empty()) DrawDivergencePlot(p, rows, l.plot_x, l.plot_y, pairwise_rows);

  if (cairo_status(cr.get()) != CAIRO_STATUS_SUCCESS) {
    return CairoError("drawing", cairo_status(cr.get()));
  }
  cairo_surface_flush(surface.get());
  return SurfacePng(surface.get());
}

}  // namespace dgrid
