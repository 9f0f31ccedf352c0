// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr.
// Abseil 20220623 ships neither, so the project defines them once here.
//
//   RETURN_IF_ERROR(ValidatePath(path, steps));
//   ASSIGN_OR_RETURN(auto manifest, ReadManifest(dir));
#ifndef DGRID_COMMON_STATUS_MACROS_H_
#define DGRID_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DGRID_CONCAT_INNER_(a, b) a##b
#define DGRID_CONCAT_(a, b) DGRID_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status dgrid_status_ = (expr);         \
    if (!dgrid_status_.ok()) return dgrid_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  DGRID_ASSIGN_OR_RETURN_IMPL_(DGRID_CONCAT_(dgrid_statusor_, __LINE__), lhs, expr)

#define DGRID_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

#endif  // DGRID_COMMON_STATUS_MACROS_H_
