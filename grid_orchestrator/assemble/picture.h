// An 8-bit picture as the grid assembler handles it: a branch's final image,
// the trunk's x_t or x0 preview at a branch step. Decoded once from the PNG
// bytes the denoiser returns, then drawn and compared.
//
//   ASSIGN_OR_RETURN(Picture cell, PictureFromPng(cell_png));
//   row.cells.push_back(std::move(cell));
//
// Protobuf-free and torch-free.
#ifndef DGRID_GRID_ORCHESTRATOR_ASSEMBLE_PICTURE_H_
#define DGRID_GRID_ORCHESTRATOR_ASSEMBLE_PICTURE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dgrid {

// 8-bit image, row-major HWC, channels 1 (grey) or 3 (RGB). An empty picture
// (no pixels) stands for an image that is not there yet, e.g. a cell still
// being computed.
struct Picture {
  int width = 0, height = 0, channels = 1;
  std::vector<uint8_t> pixels;
  bool empty() const { return pixels.empty(); }
};

// Decodes a PNG into a Picture (grey or RGB), via DecodePng from
// common/png_image.h. An alpha channel is composited onto white.
absl::StatusOr<Picture> PictureFromPng(const std::string& png);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_ASSEMBLE_PICTURE_H_
