#include "grid_orchestrator/assemble/grid_figure.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/png_image.h"
#include "grid_orchestrator/assemble/figure_test_pixels.h"
#include "gtest/gtest.h"

// Fontconfig, under Cairo's text, keeps process-lifetime caches that
// LeakSanitizer reports at exit (DGRID_SANITIZE=address); they are not ours.
extern "C" const char* __lsan_default_suppressions() { return "leak:libfontconfig\n"; }

namespace dgrid {
namespace {

Picture Grey(int width, int height, uint8_t value) {
  return Picture{width, height, 1, std::vector<uint8_t>(width * height, value)};
}

Picture Rgb(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
  Picture p{width, height, 3, {}};
  for (int i = 0; i < width * height; ++i) p.pixels.insert(p.pixels.end(), {r, g, b});
  return p;
}

// A 28x28 grey picture whose pattern depends on `seed`, like a model output.
Picture Pattern(int seed) {
  Picture p = Grey(28, 28, 0);
  for (int y = 0; y < 28; ++y) {
    for (int x = 0; x < 28; ++x)
      p.pixels[y * 28 + x] = static_cast<uint8_t>((x * 9 + y * seed) % 256);
  }
  return p;
}

GridFigure MakeFigure(int rows, int columns, int scale) {
  GridFigure figure;
  figure.title = "fashion-mnist · prompt: sneaker";
  figure.subtitle = "seed 7 · eta 1 · 50 steps · guidance 2";
  figure.scale = scale;
  figure.trunk_final = Pattern(1);
  for (int r = 0; r < rows; ++r) {
    GridFigure::Row& row = figure.rows.emplace_back();
    row.branch_step = r * 10;
    row.timestep = 981 - r * 200;
    row.trunk_xt = Pattern(2 + r);
    row.trunk_x0 = Pattern(3 + r);
    for (int c = 0; c < columns; ++c) row.cells.push_back(Pattern(10 + r * columns + c));
    row.divergence = MeanPairwiseDistance(row.cells);
    row.divergence_to_trunk = MeanDistanceTo(figure.trunk_final, row.cells);
  }
  return figure;
}

DecodedPng Decode(const std::string& png) {
  auto decoded = DecodePng({reinterpret_cast<const uint8_t*>(png.data()), png.size()});
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  return decoded.ok() ? *std::move(decoded) : DecodedPng{};
}

DecodedPng Render(const GridFigure& figure) {
  auto png = DrawGridPng(figure);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? Decode(*png) : DecodedPng{};
}

// The bounding box of the pixels of an exact RGB colour, and how many there are.
struct Found {
  int x0 = 1 << 30, y0 = 1 << 30, x1 = -1, y1 = -1;  // inclusive
  int count = 0;
};
Found FindColour(const DecodedPng& image, uint8_t r, uint8_t g, uint8_t b) {
  Found f;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      const uint8_t* px = &image.pixels[(y * image.width + x) * image.channels];
      if (px[0] != r || px[1] != g || px[2] != b) continue;
      f.x0 = std::min(f.x0, x);
      f.y0 = std::min(f.y0, y);
      f.x1 = std::max(f.x1, x);
      f.y1 = std::max(f.y1, y);
      ++f.count;
    }
  }
  return f;
}

// Cairo refuses noncharacters (U+FFFE, U+FDD0, U+10FFFF): a prompt holding
// one used to fail the finished grid with INTERNAL.
TEST(GridFigureTest, DrawsTitlesWithNoncharacters) {
  GridFigure figure = MakeFigure(2, 2, 1);
  figure.title = "emoji \xC2\xB7 prompt: a\xEF\xBF\xBE\xEF\xB7\x90\xF4\x8F\xBF\xBF b";
  absl::StatusOr<std::string> png = DrawGridPng(figure);
  EXPECT_TRUE(png.ok()) << png.status();
}

TEST(GridFigureTest, TheCaptionSaysTheRequestWithPromptsCut) {
  GridFigure figure;
  SetCaption({"emoji", "grinning face, noto", "", 7, 1.0f, 50, 4.0f, "", false}, &figure);
  EXPECT_EQ(figure.title, "emoji \xC2\xB7 prompt: grinning face, noto");
  EXPECT_EQ(figure.subtitle, "seed 7 \xC2\xB7 eta 1 \xC2\xB7 50 steps \xC2\xB7 guidance 4");
  EXPECT_TRUE(figure.switch_to.empty());

  std::string accents;
  for (int i = 0; i < 40; ++i) accents += "\xC3\xA9";  // 80 bytes
  SetCaption({"emoji", "", accents, 7, 1.0f, 50, 4.0f, "red apple, noto", true}, &figure);
  EXPECT_EQ(figure.title.rfind("emoji \xC2\xB7 prompt: (unconditional) \xC2\xB7 negative: ", 0), 0u);
  // Cut to 56 bytes (28 whole characters) and "...".
  EXPECT_NE(figure.title.find(accents.substr(0, 56) + "..."), std::string::npos);
  EXPECT_NE(figure.subtitle.find("branches switch to: red apple, noto (trunk noise)"),
            std::string::npos);
  EXPECT_EQ(figure.switch_to, "red apple, noto");

  // DDIM goes unnamed (the shipped grids read as before); Euler ancestral
  // is named.
  SetCaption({"emoji", "", "", 7, 1.0f, 30, 4.0f, "", false, Sampler::kEulerAncestral}, &figure);
  EXPECT_EQ(figure.subtitle,
            "seed 7 \xC2\xB7 Euler ancestral \xC2\xB7 eta 1 \xC2\xB7 30 steps \xC2\xB7 guidance 4");
  // Leading spacing goes unnamed; the others are named with the steps.
  FigureCaption linspace{"emoji", "", "", 7, 1.0f, 30, 4.0f, "", false, Sampler::kEulerAncestral};
  linspace.spacing = Spacing::kLinspace;
  SetCaption(linspace, &figure);
  EXPECT_EQ(figure.subtitle, "seed 7 \xC2\xB7 Euler ancestral \xC2\xB7 eta 1 \xC2\xB7 30 steps "
                             "(linspace) \xC2\xB7 guidance 4");

  // A promoted switched trunk says where its own prompt changes: its title
  // once gave the first prompt alone.
  SetCaption({"emoji", "grinning face, noto", "", 7, 1.0f, 50, 4.0f, "", false, Sampler::kDdim,
              "red apple, noto after step 5"},
             &figure);
  EXPECT_EQ(figure.title,
            "emoji \xC2\xB7 prompt: grinning face, noto \xC2\xB7 trunk: red apple, noto after step 5");

  // A switch the model reads as the prompt: the rows say no switch, the
  // subtitle says why.
  SetCaption({"fashion-mnist", "sneaker", "", 7, 1.0f, 50, 0.0f, "trouser", false, Sampler::kDdim,
              "", /*switch_unseen=*/true},
             &figure);
  EXPECT_TRUE(figure.switch_to.empty());
  EXPECT_EQ(figure.subtitle,
            "seed 7 \xC2\xB7 eta 1 \xC2\xB7 50 steps \xC2\xB7 guidance 0 \xC2\xB7 switch to: trouser "
            "changes nothing the model reads");

  // A switch of the negative prompt alone is named as one: it read as a
  // switch to the same prompt ("→ rocket"), the negative nowhere.
  FigureCaption negative{"emoji", "rocket", "ghost", 2, 1.0f, 10, 4.0f, "rocket", true};
  negative.switch_negative_prompt = "red apple";
  SetCaption(negative, &figure);
  EXPECT_EQ(figure.switch_to, "rocket, negative \xE2\x80\x9Cred apple\xE2\x80\x9D");
  EXPECT_NE(figure.subtitle.find("branches switch to: rocket, negative \xE2\x80\x9Cred "
                                 "apple\xE2\x80\x9D (trunk noise)"),
            std::string::npos)
      << figure.subtitle;
  // One that keeps the grid's negative prompt says none.
  negative.switch_negative_prompt = "";
  SetCaption(negative, &figure);
  EXPECT_EQ(figure.switch_to, "rocket");
}

TEST(DivergenceTest, IdenticalPicturesAreZeroApart) {
  EXPECT_EQ(PictureDistance(Pattern(3), Pattern(3)), 0.0);
}

TEST(DivergenceTest, BlackAndWhiteAreOneApart) {
  EXPECT_DOUBLE_EQ(PictureDistance(Grey(28, 28, 0), Grey(28, 28, 255)), 1.0);
  EXPECT_DOUBLE_EQ(PictureDistance(Rgb(4, 4, 0, 0, 0), Rgb(4, 4, 255, 255, 255)), 1.0);
}

TEST(DivergenceTest, IsRootMeanSquareAndSymmetric) {
  Picture a = Grey(2, 2, 0);
  Picture b = Grey(2, 2, 0);
  b.pixels[0] = 255;  // one pixel in four differs fully: sqrt(1/4)
  EXPECT_DOUBLE_EQ(PictureDistance(a, b), 0.5);
  EXPECT_DOUBLE_EQ(PictureDistance(b, a), 0.5);
  EXPECT_DOUBLE_EQ(PictureDistance(Pattern(4), Pattern(9)),
                   PictureDistance(Pattern(9), Pattern(4)));
}

TEST(DivergenceTest, GreyMatchesTheSameGreyInRgb) {
  EXPECT_EQ(PictureDistance(Grey(3, 3, 100), Rgb(3, 3, 100, 100, 100)), 0.0);
  EXPECT_GT(PictureDistance(Grey(3, 3, 100), Rgb(3, 3, 100, 0, 100)), 0.0);
}

TEST(DivergenceTest, DifferentSizesOrEmptyAreNaN) {
  EXPECT_TRUE(std::isnan(PictureDistance(Grey(28, 28, 0), Grey(27, 28, 0))));
  EXPECT_TRUE(std::isnan(PictureDistance(Picture{}, Grey(28, 28, 0))));
}

TEST(DivergenceTest, MeanPairwiseOfAKnownTrio) {
  // Distances: black-white 1, black-grey 0.2, white-grey 0.8.
  const std::vector<Picture> trio = {Grey(5, 5, 0), Grey(5, 5, 255), Grey(5, 5, 51)};
  EXPECT_NEAR(MeanPairwiseDistance(trio), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(MeanPairwiseDistance({Grey(5, 5, 0)}), 0.0);
  EXPECT_EQ(MeanPairwiseDistance({}), 0.0);
}

TEST(DivergenceTest, CellsNotDoneYetAreLeftOut) {
  const std::vector<Picture> row = {Grey(5, 5, 0), Picture{}, Grey(5, 5, 255)};
  EXPECT_DOUBLE_EQ(MeanPairwiseDistance(row), 1.0);
  EXPECT_DOUBLE_EQ(MeanDistanceTo(Grey(5, 5, 0), row), 0.5);
}

TEST(DivergenceTest, MeanDistanceToReference) {
  EXPECT_NEAR(MeanDistanceTo(Grey(5, 5, 0), {Grey(5, 5, 255), Grey(5, 5, 51)}), 0.6, 1e-12);
  EXPECT_EQ(MeanDistanceTo(Grey(5, 5, 0), {}), 0.0);
}

TEST(PictureFromPngTest, GreyAndRgbRoundTrip) {
  for (const Picture& original : {Pattern(5), Rgb(3, 2, 10, 20, 30)}) {
    auto png = EncodePng(original.pixels, original.width, original.height, original.channels);
    ASSERT_TRUE(png.ok()) << png.status();
    auto back = PictureFromPng(*png);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->width, original.width);
    EXPECT_EQ(back->height, original.height);
    EXPECT_EQ(back->channels, original.channels);
    EXPECT_EQ(back->pixels, original.pixels);
  }
}

TEST(PictureFromPngTest, AlphaIsCompositedOntoWhite) {
  const std::vector<uint8_t> rgba = {0, 0, 0, 255, 0, 0, 0, 0};  // opaque black, clear
  auto png = EncodePng(rgba, 2, 1, 4);
  ASSERT_TRUE(png.ok()) << png.status();
  auto back = PictureFromPng(*png);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->channels, 3);
  EXPECT_EQ(back->pixels, (std::vector<uint8_t>{0, 0, 0, 255, 255, 255}));
}

TEST(PictureFromPngTest, GarbageIsAnError) { EXPECT_FALSE(PictureFromPng("not a png").ok()); }

TEST(DrawGridPngTest, ReturnsAPngThatGrowsWithRowsColumnsAndScale) {
  auto png = DrawGridPng(MakeFigure(3, 4, 4));
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->substr(0, 8), "\x89PNG\r\n\x1a\n");
  const DecodedPng base = Decode(*png);
  // At least the pictures themselves: 3 rows of 112 px; x_t, x0, 4 cells and
  // the trunk, each 112 px wide.
  EXPECT_GE(base.height, 3 * 112);
  EXPECT_GE(base.width, 7 * 112);

  const DecodedPng more_rows = Render(MakeFigure(6, 4, 4));
  EXPECT_EQ(more_rows.width, base.width);
  EXPECT_GE(more_rows.height, base.height + 3 * 112);

  const DecodedPng more_columns = Render(MakeFigure(3, 6, 4));
  EXPECT_GE(more_columns.width, base.width + 2 * 112);
  EXPECT_EQ(more_columns.height, base.height);

  // Each of the six picture columns (x_t, x0, 4 branches) and each row
  // doubles in size.
  const DecodedPng larger = Render(MakeFigure(3, 4, 8));
  EXPECT_GE(larger.width, base.width + 6 * 112);
  EXPECT_GT(larger.height, base.height);
  EXPECT_GE(larger.height, 3 * 224);
}

// One branch per row has no pair: the figure leaves the pairwise series out
// (its numbers, plot line and legend) and keeps the distance to the trunk.
TEST(DrawGridPngTest, OneBranchPerRowDrawsTheDistanceToTheTrunkAlone) {
  const DecodedPng four = Render(MakeFigure(3, 4, 2));
  const DecodedPng one = Render(MakeFigure(3, 1, 2));
  // grid_figure.cc's kPairwise and kToTrunk.
  constexpr CairoRgb kPairwise{0.16, 0.40, 0.75}, kToTrunk{0.87, 0.42, 0.06};
  EXPECT_GT(CountNear(four, kPairwise), 100);
  EXPECT_EQ(CountNear(one, kPairwise), 0);
  EXPECT_GT(CountNear(four, kToTrunk), 100);
  EXPECT_GT(CountNear(one, kToTrunk), 100);
}

TEST(DrawGridPngTest, PicturesAreScaledWithNearestNeighbour) {
  // A one-pixel checkerboard in two colours used nowhere else: smoothing
  // would blend them at every pixel edge.
  constexpr uint8_t kA[3] = {13, 200, 77};
  constexpr uint8_t kB[3] = {250, 5, 160};
  Picture board{28, 28, 3, {}};
  for (int y = 0; y < 28; ++y) {
    for (int x = 0; x < 28; ++x) {
      const uint8_t* c = (x + y) % 2 == 0 ? kA : kB;
      board.pixels.insert(board.pixels.end(), c, c + 3);
    }
  }
  for (int scale : {1, 3, 5}) {
    SCOPED_TRACE(absl::StrCat("scale ", scale));
    GridFigure figure = MakeFigure(3, 4, scale);
    figure.rows[1].cells[2] = board;
    const DecodedPng image = Render(figure);
    ASSERT_EQ(image.channels, 3);

    const Found a = FindColour(image, kA[0], kA[1], kA[2]);
    const int side = 28 * scale;
    ASSERT_EQ(a.x1 - a.x0 + 1, side);
    ASSERT_EQ(a.y1 - a.y0 + 1, side);
    EXPECT_EQ(a.count, 28 * 28 / 2 * scale * scale);
    // Every source pixel is an exact scale x scale block of its colour.
    for (int y = 0; y < side; ++y) {
      for (int x = 0; x < side; ++x) {
        const uint8_t* want = ((x / scale) + (y / scale)) % 2 == 0 ? kA : kB;
        const uint8_t* got = &image.pixels[((a.y0 + y) * image.width + a.x0 + x) * 3];
        ASSERT_TRUE(std::equal(want, want + 3, got)) << "at " << x << "," << y;
      }
    }
  }
}

// Pictures that the scale would make larger than max_picture_side are drawn
// at a smaller whole factor, or shrunk: a 16 x 16 grid of 512-px images at
// 4x was 37,000 px a side, refused after all the work.
TEST(DrawGridPngTest, LargePicturesAreDrawnWithinTheirBound) {
  const uint8_t kOdd[3] = {13, 200, 77};
  for (const auto& [side, drawn] : {std::pair{28, 112}, {64, 256}, {96, 192}, {512, 256}}) {
    SCOPED_TRACE(absl::StrCat(side, " px"));
    GridFigure figure = MakeFigure(1, 1, 4);
    figure.max_picture_side = 256;
    figure.trunk_final = Grey(side, side, 90);
    figure.rows[0].trunk_xt = figure.rows[0].trunk_x0 = Grey(side, side, 90);
    figure.rows[0].cells[0] = Rgb(side, side, kOdd[0], kOdd[1], kOdd[2]);
    const DecodedPng image = Render(figure);
    const Found cell = FindColour(image, kOdd[0], kOdd[1], kOdd[2]);
    EXPECT_EQ(cell.x1 - cell.x0 + 1, drawn);
    EXPECT_EQ(cell.y1 - cell.y0 + 1, drawn);
  }
  // 16 x 16 of 512 px: within Cairo's bound.
  GridFigure big = MakeFigure(16, 16, 4);
  big.max_picture_side = 256;
  big.trunk_final = Grey(512, 512, 90);
  for (GridFigure::Row& row : big.rows) {
    row.trunk_xt = row.trunk_x0 = Grey(512, 512, 90);
    for (Picture& cell : row.cells) cell = Grey(512, 512, 40);
  }
  const DecodedPng image = Render(big);
  EXPECT_LT(image.width, 6000);
  EXPECT_LT(image.height, 6000);
}

TEST(DrawGridPngTest, RowsRunTopToBottomInIncreasingBranchStep) {
  GridFigure figure = MakeFigure(2, 2, 2);
  figure.rows[0].branch_step = 30;
  figure.rows[0].cells[0] = Rgb(28, 28, 13, 200, 77);
  figure.rows[1].branch_step = 5;
  figure.rows[1].cells[0] = Rgb(28, 28, 250, 5, 160);
  const DecodedPng image = Render(figure);
  const Found late = FindColour(image, 13, 200, 77);
  const Found early = FindColour(image, 250, 5, 160);
  ASSERT_GT(late.count, 0);
  ASSERT_GT(early.count, 0);
  EXPECT_LT(early.y1, late.y0);
  EXPECT_EQ(early.x0, late.x0);
}

TEST(DrawGridPngTest, EmptyCellsAreDrawnAsPlaceholders) {
  GridFigure figure = MakeFigure(3, 4, 4);
  const DecodedPng full = Render(figure);
  figure.rows[0].cells[1] = Picture{};
  figure.rows[2].cells = {Picture{}, Picture{}, Picture{}, Picture{}};
  figure.rows[2].trunk_x0 = Picture{};
  figure.trunk_final = Picture{};
  const DecodedPng partial = Render(figure);
  EXPECT_EQ(partial.width, full.width);
  EXPECT_EQ(partial.height, full.height);
  EXPECT_NE(partial.pixels, full.pixels);

  // Nothing there at all yet still draws, at a default cell size.
  GridFigure bare;
  bare.rows.resize(2);
  bare.rows[0].cells.resize(3);
  EXPECT_TRUE(DrawGridPng(bare).ok());
  EXPECT_TRUE(DrawGridPng(GridFigure{}).ok());
}

// A finished grid has no x0 at branch step 0 (no step has run): its box
// says so rather than "pending", which read as an unfinished grid.
TEST(DrawGridPngTest, NoX0AtStepZeroIsNotPending) {
  GridFigure at_zero = MakeFigure(2, 2, 4);
  at_zero.rows[0].trunk_x0 = Picture{};
  GridFigure later = at_zero;
  later.rows[0].branch_step = 1;  // the same figure but for the row's step
  const DecodedPng zero = Render(at_zero), one = Render(later);
  ASSERT_EQ(zero.width, one.width);
  ASSERT_EQ(zero.height, one.height);
  // The row labels differ ("after step 0" and "after step 1") and so do the
  // x0 boxes' words: more than the one digit's pixels.
  int differ = 0;
  for (size_t i = 0; i < zero.pixels.size(); ++i) differ += zero.pixels[i] != one.pixels[i];
  GridFigure both_pending = later;
  both_pending.rows[0].trunk_x0 = Pattern(3);
  GridFigure zero_drawn = at_zero;
  zero_drawn.rows[0].trunk_x0 = Pattern(3);
  const DecodedPng a = Render(zero_drawn), b = Render(both_pending);
  int label_only = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) label_only += a.pixels[i] != b.pixels[i];
  EXPECT_GT(differ, label_only + 20) << "the x0 box at step 0 says what a pending one says";
}

TEST(DrawGridPngTest, InconsistentInputsNameWhatIsAtFault) {
  GridFigure figure = MakeFigure(3, 4, 4);
  figure.rows[1].cells[2].pixels.pop_back();
  auto png = DrawGridPng(figure);
  ASSERT_EQ(png.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(png.status().message().find("row 1 cell 2"), std::string::npos) << png.status();

  figure = MakeFigure(3, 4, 4);
  figure.rows[2].trunk_x0.channels = 2;
  png = DrawGridPng(figure);
  ASSERT_EQ(png.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(png.status().message().find("row 2 trunk_x0"), std::string::npos) << png.status();

  figure = MakeFigure(3, 4, 4);
  figure.trunk_final.width = 27;
  png = DrawGridPng(figure);
  ASSERT_EQ(png.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(png.status().message().find("trunk_final"), std::string::npos) << png.status();

  figure = MakeFigure(3, 4, 0);
  EXPECT_EQ(DrawGridPng(figure).status().code(), absl::StatusCode::kInvalidArgument);
}

// A figure that looks like a real grid: a shape whose parameters drift less
// the later the branch leaves the trunk. Written for people to look at.
TEST(DrawGridPngTest, WritesASampleRender) {
  struct Shape {
    double cx, cy, rx, ry, brightness;
  };
  auto draw = [](const Shape& s) {
    Picture p = Grey(28, 28, 0);
    for (int y = 0; y < 28; ++y) {
      for (int x = 0; x < 28; ++x) {
        const double dx = (x - s.cx) / s.rx, dy = (y - s.cy) / s.ry;
        const double v = s.brightness * std::clamp(1.6 - std::sqrt(dx * dx + dy * dy), 0.0, 1.0);
        p.pixels[y * 28 + x] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      }
    }
    return p;
  };
  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0, 1);
  const Shape trunk{14, 16, 9, 5, 230};
  GridFigure figure;
  figure.title = "fashion-mnist · prompt: sneaker";
  figure.subtitle = "seed 7 · eta 1 · 50 steps · guidance 2 · trailing spacing";
  figure.trunk_final = draw(trunk);
  const int steps[] = {0, 5, 10, 20, 30, 40};
  for (int step : steps) {
    GridFigure::Row& row = figure.rows.emplace_back();
    row.branch_step = step;
    row.timestep = 981 - step * 20;
    const double spread = 1.0 - step / 50.0;
    const double signal = step / 50.0;
    row.trunk_x0 = draw(Shape{trunk.cx + 3 * spread, trunk.cy, trunk.rx * (0.6 + 0.4 * signal),
                              trunk.ry, 120 + 110 * signal});
    row.trunk_xt = figure.trunk_final;
    for (uint8_t& v : row.trunk_xt.pixels) {
      v = static_cast<uint8_t>(
          std::clamp(signal * v + (1 - signal) * (128 + 60 * noise(rng)), 0.0, 255.0));
    }
    for (int c = 0; c < 4; ++c) {
      row.cells.push_back(draw(Shape{
          trunk.cx + 5 * spread * noise(rng), trunk.cy + 4 * spread * noise(rng),
          trunk.rx * (1 + 0.4 * spread * noise(rng)), trunk.ry * (1 + 0.5 * spread * noise(rng)),
          trunk.brightness - 60 * spread * std::abs(noise(rng))}));
    }
    if (step == 40) row.cells[3] = Picture{};  // still running
    row.divergence = MeanPairwiseDistance(row.cells);
    row.divergence_to_trunk = MeanDistanceTo(figure.trunk_final, row.cells);
  }
  auto png = DrawGridPng(figure);
  ASSERT_TRUE(png.ok()) << png.status();
  // Earlier rows diverge more: the synthetic data is built that way, and the
  // measures must see it.
  EXPECT_GT(figure.rows.front().divergence, figure.rows.back().divergence);

  const char* dir = std::getenv("DGRID_TEST_OUTPUT_DIR");
  if (dir == nullptr || *dir == '\0') GTEST_SKIP() << "DGRID_TEST_OUTPUT_DIR not set";
  const std::string path = absl::StrCat(dir, "/grid_figure_sample.png");
  std::ofstream(path, std::ios::binary) << *png;
  std::printf("sample grid figure: %s\n", path.c_str());
}

}  // namespace
}  // namespace dgrid
