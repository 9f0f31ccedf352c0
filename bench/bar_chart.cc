// dgrid-bench chart IN.jsonl OUT.png: a bar chart (Cairo) of the grid
// benchmark: wall seconds per variant, one panel per grid preset.
#include <cairo.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace dgrid {

int RunChart(const std::vector<char*>& args) {
  if (args.size() < 4) {
    std::cerr << "usage: dgrid-bench chart IN.jsonl OUT.png\n";
    return 2;
  }
  std::ifstream in(args[2]);
  if (!in) {
    std::cerr << "dgrid-bench chart: cannot read " << args[2] << "\n";
    return 1;
  }
  // grid -> [(variant, wall_s)] in file order.
  std::vector<std::string> grids;
  std::map<std::string, std::vector<std::pair<std::string, double>>> bars;
  std::string line;
  while (std::getline(in, line)) {
    google::protobuf::Struct s;
    if (line.empty() || !google::protobuf::util::JsonStringToMessage(line, &s).ok()) continue;
    const auto& f = s.fields();
    if (!f.count("variant") || !f.count("grid") || !f.count("wall_s")) continue;
    const std::string grid = f.at("grid").string_value();
    if (!bars.count(grid)) grids.push_back(grid);
    bars[grid].push_back({f.at("variant").string_value(), f.at("wall_s").number_value()});
  }
  if (grids.empty()) {
    std::cerr << "dgrid-bench chart: no grid benchmark lines in " << args[2] << "\n";
    return 1;
  }
  const int bar_h = 22, gap = 6, label_w = 150, plot_w = 520, pad = 20, title_h = 28;
  int height = pad;
  for (const auto& g : grids) height += title_h + bars[g].size() * (bar_h + gap) + pad;
  const int width = pad + label_w + plot_w + 90;
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  double y = pad;
  for (const std::string& grid : grids) {
    const auto& rows = bars[grid];
    double top = 0;
    for (const auto& [_, wall] : rows) top = std::max(top, wall);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_set_font_size(cr, 15);
    cairo_move_to(cr, pad, y + 18);
    cairo_show_text(cr, absl::StrFormat("grid \"%s\": wall seconds (median), lower is better",
                                        grid).c_str());
    y += title_h;
    cairo_set_font_size(cr, 12);
    for (const auto& [variant, wall] : rows) {
      const double w = top > 0 ? plot_w * wall / top : 0;
      const bool ours = absl::StartsWith(variant, "pair_") || variant == "inprocess";
      if (variant == "limit") {
        cairo_set_source_rgb(cr, 0.55, 0.55, 0.55);
      } else if (ours) {
        cairo_set_source_rgb(cr, 0.16, 0.42, 0.75);
      } else {
        cairo_set_source_rgb(cr, 0.90, 0.55, 0.20);
      }
      cairo_rectangle(cr, pad + label_w, y, std::max(w, 1.0), bar_h);
      cairo_fill(cr);
      cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
      cairo_move_to(cr, pad, y + 15);
      cairo_show_text(cr, variant.c_str());
      cairo_move_to(cr, pad + label_w + std::max(w, 1.0) + 6, y + 15);
      cairo_show_text(cr, absl::StrFormat("%.3f s", wall).c_str());
      y += bar_h + gap;
    }
    y += pad;
  }
  cairo_destroy(cr);
  const cairo_status_t status = cairo_surface_write_to_png(surface, args[3]);
  cairo_surface_destroy(surface);
  if (status != CAIRO_STATUS_SUCCESS) {
    std::cerr << "dgrid-bench chart: cannot write " << args[3] << "\n";
    return 1;
  }
  std::cout << "wrote " << args[3] << "\n";
  return 0;
}

}  // namespace dgrid
