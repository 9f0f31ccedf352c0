// A cairo RGB24 image surface (the grid and curve figures) as PNG bytes,
// through common/png_image.h's EncodePng and its fast filter and deflate
// level rather than cairo's own PNG writer (libpng's defaults): a grid's
// figure is encoded on its critical path.
//
//   cairo_surface_flush(surface);
//   ASSIGN_OR_RETURN(std::string png, SurfacePng(surface));
#ifndef DGRID_GRID_ORCHESTRATOR_ASSEMBLE_SURFACE_PNG_H_
#define DGRID_GRID_ORCHESTRATOR_ASSEMBLE_SURFACE_PNG_H_

#include <cairo.h>

#include <string>

#include "absl/status/statusor.h"

namespace dgrid {

// INVALID_ARGUMENT for a surface that is not an RGB24 image surface.
absl::StatusOr<std::string> SurfacePng(cairo_surface_t* surface);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_ASSEMBLE_SURFACE_PNG_H_
