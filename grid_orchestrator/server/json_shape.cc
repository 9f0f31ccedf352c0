#include "grid_orchestrator/server/json_shape.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <string>

#include <cstdint>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/short_text.h"
#include "common/status_macros.h"

namespace dgrid {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Struct;
using google::protobuf::Value;

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string JoinPath(const std::string& path, const std::string& name) {
  return path.empty() ? name : absl::StrCat(path, ".", name);
}

const char* KindOf(const Value& value) {
  switch (value.kind_case()) {
    case Value::kNumberValue:
      return "a number";
    case Value::kStringValue:
      return "a string";
    case Value::kBoolValue:
      return "true or false";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "a list";
    default:
      return "null";
  }
}

// What one value of `field` (not its list) looks like in JSON.
const char* ExpectedKind(const FieldDescriptor& field) {
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      return "a string";
    case FieldDescriptor::CPPTYPE_BOOL:
      return "true or false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return "an enum name";
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return "an object";
    default:
      return "a number";
  }
}

absl::Status Mismatch(const std::string& path, const char* expected, const Value& value) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": expected ", expected, ", got ", KindOf(value)));
}

absl::Status CheckObject(const Struct& object, const Descriptor& type, const std::string& path);

template <typename T>
bool IsWhole(const std::string& text) {
  T value;
  return absl::SimpleAtoi(text, &value);
}

// A string where the field is an enum or an integer (64-bit integers are
// strings in JSON): protobuf's message names the type, not what it takes.
absl::Status CheckText(const std::string& text, const FieldDescriptor& field,
                       const std::string& path) {
  if (field.cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
    const google::protobuf::EnumDescriptor& type = *field.enum_type();
    // A name, or a number in a string, which protobuf's parser also takes.
    if (type.FindValueByName(text) || IsWhole<int32_t>(text)) return absl::OkStatus();
    std::vector<std::string> names;
    for (int i = 0; i < type.value_count(); ++i) names.push_back(type.value(i)->name());
    return absl::InvalidArgumentError(absl::StrCat(path, ": unknown value ", ShortQuote(text),
                                                   "; one of ", absl::StrJoin(names, ", ")));
  }
  bool integer = true;
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      integer = IsWhole<int32_t>(text);
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      integer = IsWhole<int64_t>(text);
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      integer = IsWhole<uint32_t>(text);
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      integer = IsWhole<uint64_t>(text);
      break;
    default:
      break;
  }
  if (integer) return absl::OkStatus();
  const bool is_unsigned = field.cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ||
                           field.cpp_type() == FieldDescriptor::CPPTYPE_UINT64;
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": expected ", is_unsigned ? "a whole number from 0" : "a whole number",
                   " (a number or a string of digits), got ", ShortQuote(text)));
}

// One value of `field`: a list element, or the field's value when singular.
absl::Status CheckOne(const Value& value, const FieldDescriptor& field, const std::string& path) {
  if (field.cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    const Descriptor& type = *field.message_type();
    // Wrappers (Int32Value...) are plain values in JSON, like their `value`.
    if (type.file()->name() == "google/protobuf/wrappers.proto") {
      return CheckOne(value, *type.FindFieldByNumber(1), path);
    }
    // Struct, Timestamp...: protobuf's own mapping, checked by its parser.
    if (type.file()->package() == "google.protobuf") return absl::OkStatus();
    if (value.kind_case() != Value::kStructValue) return Mismatch(path, "an object", value);
    return CheckObject(value.struct_value(), type, path);
  }
  if (value.kind_case() == Value::kListValue || value.kind_case() == Value::kStructValue) {
    return Mismatch(path, ExpectedKind(field), value);
  }
  if (value.kind_case() == Value::kStringValue) return CheckText(value.string_value(), field, path);
  return absl::OkStatus();
}

absl::Status CheckField(const Value& value, const FieldDescriptor& field,
                        const std::string& path) {
  if (value.kind_case() == Value::kNullValue) return absl::OkStatus();  // unset
  // A map is an object in JSON; protobuf's parser checks it.
  if (field.is_map()) return absl::OkStatus();
  if (!field.is_repeated()) return CheckOne(value, field, path);
  if (value.kind_case() != Value::kListValue) return Mismatch(path, "a list", value);
  for (int i = 0; i < value.list_value().values_size(); ++i) {
    const Value& element = value.list_value().values(i);
    const std::string at = absl::StrCat(path, "[", i, "]");
    if (element.kind_case() == Value::kNullValue) {
      return Mismatch(at, ExpectedKind(field), element);
    }
    RETURN_IF_ERROR(CheckOne(element, field, at));
  }
  return absl::OkStatus();
}

absl::Status CheckObject(const Struct& object, const Descriptor& type, const std::string& path) {
  for (const auto& [key, value] : object.fields()) {
    // JSON may name a field as in the .proto or in lowerCamelCase.
    const FieldDescriptor* field = type.FindFieldByName(key);
    if (!field) field = type.FindFieldByCamelcaseName(key);
    if (!field) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field ", ShortQuote(JoinPath(path, key))));
    }
    RETURN_IF_ERROR(CheckField(value, *field, JoinPath(path, field->name())));
  }
  return absl::OkStatus();
}

// Counts nesting outside strings, so that deep text never reaches protobuf.
absl::Status CheckDepth(absl::string_view json) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckJsonShape(absl::string_view json, const Descriptor& type) {
  RETURN_IF_ERROR(CheckDepth(json));
  Value value;
  if (const auto parsed = google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(json.data(), json.size()), &value);
      !parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", ShortQuote(FirstLine(std::string(parsed.message())))));
  }
  if (value.kind_case() != Value::kStructValue) {
    return Mismatch(type.name(), "an object", value);
  }
  return CheckObject(value.struct_value(), type, "");
}

absl::Status ParseJsonRequest(const std::string& json, absl::string_view source,
                              google::protobuf::Message* message) {
  if (json.empty()) return absl::OkStatus();  // all defaults
  if (absl::Status shape = CheckJsonShape(json, *message->GetDescriptor()); !shape.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", shape.message()));
  }
  if (const auto parsed = google::protobuf::util::JsonStringToMessage(json, message);
      !parsed.ok()) {
    // protobuf's messages quote values whole.
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", ShortQuote(FirstLine(std::string(parsed.message())))));
  }
  return absl::OkStatus();
}

}  // namespace dgrid
