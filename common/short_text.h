// Echoing client input in error messages, safely: at most a short piece of
// the value, quoted and escaped, so that a huge or binary field can neither
// blow the status metadata past its limit nor garble a terminal.
//
//   return absl::InvalidArgumentError(
//       absl::StrCat("model: unknown model ", ShortQuote(request.model())));
//   // model: unknown model "aaaaaaaa"… (8000 bytes)
#ifndef DGRID_COMMON_SHORT_TEXT_H_
#define DGRID_COMMON_SHORT_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// Values longer than this are cut when echoed.
inline constexpr size_t kMaxEchoBytes = 100;

// `value` in double quotes, invalid UTF-8 and control bytes escaped, cut to
// `max_bytes` (on a character boundary) with its full size appended.
std::string ShortQuote(absl::string_view value, size_t max_bytes = kMaxEchoBytes);

// Names a server lists in an error ("its prompts are: ..."): joined with
// ", " while they fit in `max_bytes`, then "and N more". A bundle may have
// thousands of class labels; the whole list would pass gRPC's metadata limit
// and the client would see that error instead of this one.
template <typename Names>
std::string ShortList(const Names& names, size_t max_bytes = 400);

// A size in a message: bytes, KiB or MiB, whichever reads best ("640
// bytes", "39 KiB", "130.2 MiB").
std::string ByteCount(int64_t bytes);

// The most bytes a prompt or negative prompt may have. A model reads at most
// a few dozen tokens (CLIP: 77), which no prompt of this size falls short of;
// the bound keeps normalizing and tokenizing cheap and caches small.
inline constexpr size_t kMaxPromptBytes = 4096;
// The most bytes of a short name a client sends (a model, a preset).
inline constexpr size_t kMaxNameBytes = 256;

// Free text from a client, checked before anything else reads it: at most
// `max_bytes`, well-formed UTF-8, and no noncharacter (U+FFFE, U+FDD0, ...).
// INVALID_ARGUMENT names `field`:
//
//   RETURN_IF_ERROR(CheckClientText("prompt", request.prompt(), kMaxPromptBytes));
//   // prompt: 1048576 bytes exceeds the limit of 4096
absl::Status CheckClientText(absl::string_view field, absl::string_view value, size_t max_bytes);

// `value` with each ill-formed byte and each noncharacter replaced by U+FFFD:
// text that a renderer (Cairo) accepts.
std::string DrawableText(absl::string_view value);

// What a prompt switch does to the negative prompt, as dgrid, the figures
// and the explorer (conditioningName) say it after the switch's prompt: ""
// where `negative` (the one in force after the switch) is the grid's, else
// ", negative “red apple”" or ", no negative prompt". The negative shown is
// cut to `max_bytes` (on a character boundary) with "...". A switch of the
// negative prompt alone once read as a switch to the same prompt.
std::string SwitchedNegativeNote(absl::string_view negative, absl::string_view grid_negative,
                                 size_t max_bytes = kMaxPromptBytes);

// " (found in N% of resamples)" for a half step that not every bootstrap
// resample found, "" when all did: the figure's and dgrid's words. Rounded
// down, so 99.6% is not "found in 100%".
std::string FoundInResamples(double found_fraction);

// A decision curve head's half step, as dgrid and the curve figure word it
// (the explorer's plot.js words it the same way):
//   "half its row-0 value at step 32.0 ± 1.5"
//   "half its row-0 value at step 11.2, 68% from 9.4 to past step 16 (found
//    in 79% of resamples)"
//   "not half its row-0 value by the last row, step 12 (found in 34% of
//    resamples)"
//   "never differs at the first row, so has no half step"
struct HalfStepWords {
  bool differs_at_first_row = false;
  bool found = false;
  double step = 0;
  double standard_error = 0;
  double lo = 0;
  bool hi_after_last_row = false;
  double found_fraction = 0;
  int last_step = 0;  // the last row's branch step
};
std::string DescribeHalfStep(const HalfStepWords& half);

// A number as an error message echoes it: the shortest text that reads back
// as the same value ("1.0000001", "1e+300", "inf"). StrCat's six digits
// made "eta must be in [0, 1], got 1" of 1.0000001.
std::string ExactNumber(double value);
std::string ExactNumber(float value);

// True when `value` is well-formed UTF-8.
bool IsValidUtf8(absl::string_view value);

// The longest start of UTF-8 `value` of at most `max_bytes`, cut on a
// character boundary.
absl::string_view Utf8Prefix(absl::string_view value, size_t max_bytes);

// `value` as a figure or label shows it: whole within `max_bytes` (at least
// 4), else its start cut on a character boundary and "...", `max_bytes` in
// all.
std::string CutText(absl::string_view value, size_t max_bytes);

template <typename Names>
std::string ShortList(const Names& names, size_t max_bytes) {
  std::string out;
  size_t left = 0;  // names that did not fit, from the first that did not on
  for (const auto& name : names) {
    if (left == 0 && out.size() + name.size() + 2 <= max_bytes) {
      if (!out.empty()) out += ", ";
      out += name;
    } else {
      ++left;
    }
  }
  if (left > 0) out += (out.empty() ? "and " : ", and ") + std::to_string(left) + " more";
  return out;
}

}  // namespace dgrid

#endif  // DGRID_COMMON_SHORT_TEXT_H_
