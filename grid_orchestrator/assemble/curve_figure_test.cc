#include "grid_orchestrator/assemble/curve_figure.h"

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/png_image.h"
#include "grid_orchestrator/assemble/figure_test_pixels.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

CurveFigure Figure(int heads) {
  CurveFigure f;
  f.title = "fashion-mnist · unprompted · 8 trunks";
  f.subtitle = "50 steps · eta 1 · guidance 1.5 · 4 branches per row";
  f.branch_steps = {0, 5, 10, 20, 30, 40};
  const double p[] = {0.8, 0.7, 0.45, 0.2, 0.05, 0.0};
  for (int h = 0; h < heads; ++h) {
    f.head_names.push_back(h == 0 ? "subcategory" : "style");
    HeadCurveStatistics& head = f.statistics.heads.emplace_back();
    for (double v : p) head.p_differs.push_back({v / (h + 1), 0.05});
    head.half_step = {true, 9.0 + h, 1.5, 8.0, 11.0, 0.98};
  }
  for (int r = 0; r < 6; ++r) {
    f.statistics.divergence.push_back({0.3 - 0.05 * r, 0.01});
    f.statistics.divergence_to_trunk.push_back({0.32 - 0.05 * r, 0.01});
  }
  return f;
}

TEST(CurveFigureTest, DrawsOnePanelPerKindOfCurve) {
  absl::StatusOr<std::string> two = DrawCurvePng(Figure(2));
  ASSERT_TRUE(two.ok()) << two.status();
  absl::StatusOr<DecodedPng> decoded =
      DecodePng({reinterpret_cast<const uint8_t*>(two->data()), two->size()});
  ASSERT_TRUE(decoded.ok());
  absl::StatusOr<std::string> none = DrawCurvePng(Figure(0));
  ASSERT_TRUE(none.ok()) << none.status();
  absl::StatusOr<DecodedPng> divergence_only =
      DecodePng({reinterpret_cast<const uint8_t*>(none->data()), none->size()});
  ASSERT_TRUE(divergence_only.ok());
  EXPECT_EQ(decoded->width, divergence_only->width);
  // Without a judge only the divergence panel is drawn.
  EXPECT_EQ(decoded->height - divergence_only->height, 300);
  if (const char* dir = std::getenv("DGRID_TEST_OUTPUT_DIR")) {
    std::ofstream(std::string(dir) + "/curve_figure_sample.png", std::ios::binary) << *two;
  }
}

// A long legend entry (a found fraction below 1, a long head name) wraps
// inside the figure: it ran off the right edge, in the PNG and the SVG.
TEST(CurveFigureTest, TheLegendAndTheTitleStayInsideTheFigure) {
  CurveFigure f = Figure(2);
  f.head_names[0] = "subcategory-and-then-some";
  f.head_names[1] = std::string(60, 'x');  // one word wider than the space
  // Two long prompts, as a switch curve's title has them (it ran off the
  // right edge).
  f.title = absl::StrCat("emoji · \"", std::string(150, 'p'), "\" → \"", std::string(150, 's'),
                         "\" · 100 trunks");
  f.subtitle = std::string(300, 'w');
  f.statistics.heads[0].half_step.found_fraction = 0.95;
  absl::StatusOr<std::string> png = DrawCurvePng(f);
  ASSERT_TRUE(png.ok()) << png.status();
  absl::StatusOr<DecodedPng> image =
      DecodePng({reinterpret_cast<const uint8_t*>(png->data()), png->size()});
  ASSERT_TRUE(image.ok());
  int inked = 0;  // non-white pixels in the last 4 columns
  for (int y = 0; y < image->height; ++y) {
    for (int x = image->width - 4; x < image->width; ++x) {
      const uint8_t* px = &image->pixels[(y * image->width + x) * image->channels];
      inked += px[0] < 250 || px[1] < 250 || px[2] < 250;
    }
  }
  EXPECT_EQ(inked, 0);
}

// One branch per row has no pair: the divergence panel keeps the distance to
// the trunk, in its own colour, and leaves the pairwise series out.
TEST(CurveFigureTest, OneBranchPerRowDrawsTheDistanceToTheTrunkAlone) {
  CurveFigure two = Figure(0), one = Figure(0);
  one.branches = 1;
  absl::StatusOr<std::string> two_png = DrawCurvePng(two), one_png = DrawCurvePng(one);
  ASSERT_TRUE(two_png.ok() && one_png.ok());
  absl::StatusOr<DecodedPng> with_pairs =
      DecodePng({reinterpret_cast<const uint8_t*>(two_png->data()), two_png->size()});
  absl::StatusOr<DecodedPng> alone =
      DecodePng({reinterpret_cast<const uint8_t*>(one_png->data()), one_png->size()});
  ASSERT_TRUE(with_pairs.ok() && alone.ok());
  // curve_figure.cc's kSeries[0] (pairwise) and kSeries[1] (to trunk).
  constexpr CairoRgb kPairwise{0.00, 0.45, 0.70}, kToTrunk{0.84, 0.37, 0.00};
  EXPECT_GT(CountNear(*with_pairs, kPairwise), 100);
  EXPECT_EQ(CountNear(*alone, kPairwise), 0);
  EXPECT_GT(CountNear(*alone, kToTrunk), 100);
}

// Where every trunk agrees the ± is 0: the row's 95% interval is drawn
// (dashed) instead of nothing.
TEST(CurveFigureTest, ARowWhereEveryTrunkAgreesDrawsIts95PercentInterval) {
  CurveFigure plain = Figure(1), wide = Figure(1);
  for (CurveFigure* f : {&plain, &wide}) {
    f->statistics.heads[0].p_differs[0] = {1.0, 0.0};
    f->statistics.heads[0].half_step = {};
  }
  wide.statistics.heads[0].p_differs_95.assign(6, Interval{0.0, 1.0});
  wide.statistics.heads[0].p_differs_95[0] = {0.6, 1.0};
  absl::StatusOr<std::string> plain_png = DrawCurvePng(plain), wide_png = DrawCurvePng(wide);
  ASSERT_TRUE(plain_png.ok() && wide_png.ok());
  absl::StatusOr<DecodedPng> a =
      DecodePng({reinterpret_cast<const uint8_t*>(plain_png->data()), plain_png->size()});
  absl::StatusOr<DecodedPng> b =
      DecodePng({reinterpret_cast<const uint8_t*>(wide_png->data()), wide_png->size()});
  ASSERT_TRUE(a.ok() && b.ok());
  constexpr CairoRgb kFirstHead{0.00, 0.45, 0.70};  // kSeries[0]
  // A dashed line 0.4 of the panel tall (about 90 px, over half of it ink),
  // its 1.5 px width blended with the white around it: counted loosely.
  EXPECT_GT(CountNear(*b, kFirstHead, 80) - CountNear(*a, kFirstHead, 80), 40);
}

// The size attribute of the SVG's root element, e.g. "664" for height.
std::string SvgAttribute(const std::string& svg, const std::string& name) {
  const size_t root = svg.find("<svg");
  if (root == std::string::npos) return "";
  const size_t at = svg.find(" " + name + "=\"", root);
  if (at == std::string::npos || at > svg.find('>', root)) return "";
  const size_t start = at + name.size() + 3;
  return svg.substr(start, svg.find('"', start) - start);
}

TEST(CurveFigureTest, TheSvgIsTheFigureAtThePngsSize) {
  absl::StatusOr<std::string> png = DrawCurvePng(Figure(2));
  absl::StatusOr<std::string> svg = DrawCurveSvg(Figure(2));
  absl::StatusOr<std::string> divergence_only = DrawCurveSvg(Figure(0));
  ASSERT_TRUE(png.ok() && svg.ok() && divergence_only.ok());
  absl::StatusOr<DecodedPng> decoded =
      DecodePng({reinterpret_cast<const uint8_t*>(png->data()), png->size()});
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(svg->rfind("<?xml", 0), 0u) << svg->substr(0, 80);
  EXPECT_EQ(SvgAttribute(*svg, "width"), absl::StrCat(decoded->width, "px"));
  EXPECT_EQ(SvgAttribute(*svg, "height"), absl::StrCat(decoded->height, "px"));
  EXPECT_EQ(SvgAttribute(*divergence_only, "height"), absl::StrCat(decoded->height - 300, "px"));
  // Vector, not a picture wrapped in SVG: paths for the curves, glyphs for text.
  EXPECT_EQ(svg->find("<image"), std::string::npos);
  EXPECT_NE(svg->find("<path"), std::string::npos);
  EXPECT_NE(svg->find("glyph"), std::string::npos);
  EXPECT_EQ(svg->substr(svg->find_last_not_of("\n") - 5, 6), "</svg>");
  // The same figure, the same bytes: cairo numbers its surfaces across the
  // process, and a second drawing's differed.
  EXPECT_EQ(DrawCurveSvg(Figure(2)).value_or(""), *svg);
  EXPECT_NE(svg->find("id=\"surface1\""), std::string::npos);
  if (const char* dir = std::getenv("DGRID_TEST_OUTPUT_DIR")) {
    std::ofstream(std::string(dir) + "/curve_figure_sample.svg", std::ios::binary) << *svg;
  }
}

TEST(CurveFigureTest, StatisticsThatDoNotMatchTheRowsAreRefused) {
  CurveFigure f = Figure(1);
  f.branch_steps.pop_back();
  EXPECT_EQ(DrawCurvePng(f).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DrawCurveSvg(f).status().code(), absl::StatusCode::kInvalidArgument);
  f = Figure(1);
  f.head_names.clear();
  EXPECT_EQ(DrawCurvePng(f).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DrawCurveSvg(f).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dgrid
