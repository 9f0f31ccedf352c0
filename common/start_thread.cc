#include "common/start_thread.h"

#include <system_error>

#include "absl/strings/str_cat.h"

namespace dgrid {

absl::StatusOr<std::thread> StartThread(std::function<void()> body, absl::string_view what) {
  try {
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot start ", what, ": ", e.what()));
  }
}

}  // namespace dgrid
