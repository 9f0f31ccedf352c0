// JSON held to a message's shape before protobuf parses it. protobuf 3.21's
// JSON parser is lenient where a client's mistake should be an error: it
// flattens [[5]] into a repeated field, takes a lone value for a list,
// drops null in a list, and takes a comma before a closing bracket, keys
// without quotes and raw control bytes in strings (the text is held to RFC
// 8259 by nlohmann's parser). So the text is parsed as a
// google.protobuf.Value first and held to the message's descriptor: every
// key a field (by its .proto or lowerCamelCase name), every value the
// field's kind, lists only for repeated fields, no null in a list, no field
// under both its names, and no nesting past kMaxJsonDepth nor values past
// kMaxJsonValues. Errors name the field by its path, e.g.
// "trunk.segments[0]: expected an object, got a number", also where
// protobuf's parser names none: a string that is not UTF-8, a number past a
// double's range. Only then is it parsed as the message, which checks each
// value.
//
//   RETURN_IF_ERROR(CheckJsonShape(body, *v1::GridRequest::descriptor()));
//   google::protobuf::util::JsonStringToMessage(body, &request);
#ifndef DGRID_GRID_ORCHESTRATOR_SERVER_JSON_SHAPE_H_
#define DGRID_GRID_ORCHESTRATOR_SERVER_JSON_SHAPE_H_

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dgrid {

// Deeper JSON is refused before protobuf sees it: protobuf takes lists
// nested 100,000 deep for an empty repeated field, and its parse as a
// google.protobuf.Value slows with the square of the depth and fails past
// about 33 levels. A GridRequest is 4 deep.
inline constexpr int kMaxJsonDepth = 32;
// Wider JSON too: protobuf's google.protobuf.Value tree takes 100 to 300
// bytes a value, so a 1 MiB body of empty objects held 70 to 100 MB, and
// sixteen such bodies at once passed an orchestrator pod's memory limit. A
// GridRequest whose promoted trunk switches at each of 1,000 steps has about
// 6,000 values (list items, members and containers, as counted here).
inline constexpr int kMaxJsonValues = 16384;

// INVALID_ARGUMENT naming the first place where `json` does not have the
// shape of `type`.
absl::Status CheckJsonShape(absl::string_view json, const google::protobuf::Descriptor& type);

// A request as the HTTP API takes it: `json` held to the message's shape,
// then parsed into `message`; empty text leaves every field its default.
// INVALID_ARGUMENT names `source` (the routes and the fuzzer say "request body").
absl::Status ParseJsonRequest(const std::string& json, absl::string_view source,
                              google::protobuf::Message* message);

}  // namespace dgrid

#endif  // DGRID_GRID_ORCHESTRATOR_SERVER_JSON_SHAPE_H_
