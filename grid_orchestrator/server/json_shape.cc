#include "grid_orchestrator/server/json_shape.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

// Digits as protobuf's parser takes them: SimpleAtoi would also take " 5"
// and "5\n", which protobuf then refused in its own words.
template <typename T>
bool IsWhole(const std::string& text, T* value) {
  if (text.empty() || absl::ascii_isspace(static_cast<unsigned char>(text.front())) ||
      absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
    return false;
  }
  return absl::SimpleAtoi(text, value);
}
template <typename T>
bool IsWhole(const std::string& text) {
  T value;
  return IsWhole(text, &value);
}

absl::Status CheckNumber(double number, const FieldDescriptor& field, const std::string& path);

// A string where the field is an enum or an integer (64-bit integers are
// strings in JSON): protobuf's message names the type, not what it takes.
absl::Status CheckText(const std::string& text, const FieldDescriptor& field,
                       const std::string& path) {
  if (field.cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
    const google::protobuf::EnumDescriptor& type = *field.enum_type();
    // A name, or a value's number in a string, which protobuf's parser also
    // takes (not a number the enum lacks, as it takes a JSON number).
    int32_t number = 0;
    if (type.FindValueByName(text) || (IsWhole(text, &number) && type.FindValueByNumber(number))) {
      return absl::OkStatus();
    }
    std::vector<std::string> names;
    for (int i = 0; i < type.value_count(); ++i) names.push_back(type.value(i)->name());
    return absl::InvalidArgumentError(absl::StrCat(path, ": unknown value ", ShortQuote(text),
                                                   "; one of ", absl::StrJoin(names, ", ")));
  }
  if (field.cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE ||
      field.cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
    // As protobuf reads one: JSON's three words, or a finite number with no
    // space around it (SimpleAtod would also take " 5", "inf" and "nan").
    if (text == "NaN" || text == "Infinity" || text == "-Infinity") return absl::OkStatus();
    double number = 0;
    if (text.empty() || absl::ascii_isspace(static_cast<unsigned char>(text.front())) ||
        absl::ascii_isspace(static_cast<unsigned char>(text.back())) ||
        !absl::SimpleAtod(text, &number) || !std::isfinite(number)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": expected a number, got ", ShortQuote(text)));
    }
    return CheckNumber(number, field, path);
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

// A number where the field is an integer: protobuf's message names the field
// in its own notation ("(steps.value)") and the type as TYPE_INT32.
absl::Status CheckNumber(double number, const FieldDescriptor& field, const std::string& path) {
  // The type's range; compared as doubles, so at the 64-bit edges the parser
  // has the last word.
  std::string range;
  double lo = 0, hi = 0;
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_ENUM:  // an open enum takes any int32
      range = absl::StrCat("[", INT32_MIN, ", ", INT32_MAX, "]");
      lo = INT32_MIN, hi = INT32_MAX;
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      range = absl::StrCat("[0, ", UINT32_MAX, "]");
      hi = UINT32_MAX;
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      range = absl::StrCat("[", INT64_MIN, ", ", INT64_MAX, "]");
      lo = -0x1p63, hi = 0x1p63;
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      range = absl::StrCat("[0, ", UINT64_MAX, "]");
      hi = 0x1p64;
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      if (std::abs(number) > std::numeric_limits<float>::max()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": ", absl::StrFormat("%.15g", number), " is out of range for a float (",
            absl::StrFormat("%g", std::numeric_limits<float>::max()), " at most)"));
      }
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
  const std::string echo = absl::StrFormat("%.15g", number);
  if (std::floor(number) != number) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a whole number, got ", echo));
  }
  if (number < lo || number > hi) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", echo, " is out of range ", range));
  }
  return absl::OkStatus();
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
  // protobuf's parser takes a string of digits for a number, and "true" for
  // a bool, but not true for a number nor a number for a string; its message
  // names the field in its own notation ("(steps.value)").
  const FieldDescriptor::CppType type = field.cpp_type();
  const Value::KindCase kind = value.kind_case();
  if (kind == Value::kListValue || kind == Value::kStructValue ||
      (kind == Value::kBoolValue && type != FieldDescriptor::CPPTYPE_BOOL) ||
      (kind != Value::kStringValue && type == FieldDescriptor::CPPTYPE_STRING) ||
      (kind == Value::kNumberValue && type == FieldDescriptor::CPPTYPE_BOOL)) {
    return Mismatch(path, ExpectedKind(field), value);
  }
  if (value.kind_case() == Value::kStringValue) return CheckText(value.string_value(), field, path);
  if (value.kind_case() == Value::kNumberValue) {
    return CheckNumber(value.number_value(), field, path);
  }
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

// JSON may name a field as in the .proto or in lowerCamelCase.
const FieldDescriptor* FindJsonField(const Descriptor& type, const std::string& key) {
  const FieldDescriptor* field = type.FindFieldByName(key);
  return field ? field : type.FindFieldByCamelcaseName(key);
}

absl::Status CheckObject(const Struct& object, const Descriptor& type, const std::string& path) {
  std::vector<const FieldDescriptor*> seen;
  std::vector<const google::protobuf::OneofDescriptor*> set_oneofs;
  for (const auto& [key, value] : object.fields()) {
    const FieldDescriptor* field = FindJsonField(type, key);
    if (!field) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field ", ShortQuote(JoinPath(path, key))));
    }
    // The same field under both its names: protobuf's parser would keep one
    // and drop the other without a word.
    if (std::find(seen.begin(), seen.end(), field) != seen.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          JoinPath(path, field->name()), ": given twice (as ", ShortQuote(field->name()), " and ",
          ShortQuote(field->camelcase_name()), ")"));
    }
    // Two members of one oneof: protobuf's parser refuses the second in
    // words of its own, cut short. (null leaves a field unset.)
    const google::protobuf::OneofDescriptor* oneof = field->real_containing_oneof();
    if (oneof && value.kind_case() != Value::kNullValue) {
      if (std::find(set_oneofs.begin(), set_oneofs.end(), oneof) != set_oneofs.end()) {
        std::vector<std::string> members;
        for (int i = 0; i < oneof->field_count(); ++i) members.push_back(oneof->field(i)->name());
        return absl::InvalidArgumentError(absl::StrCat(
            path.empty() ? oneof->name() : path, ": give one of ", absl::StrJoin(members, ", "),
            ", not more"));
      }
      set_oneofs.push_back(oneof);
    }
    seen.push_back(field);
    RETURN_IF_ERROR(CheckField(value, *field, JoinPath(path, field->name())));
  }
  return absl::OkStatus();
}

// Counts nesting and values outside strings, so that deep or wide text never
// reaches protobuf: every list item and object member after a container's
// first is one comma, and every container one bracket.
absl::Status CheckNesting(absl::string_view json) {
  int depth = 0;
  int values = 1;
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
    } else if (c == '\'') {
      // protobuf's parser takes single-quoted strings too; a '"' in one
      // would end this count's string early, or begin one it never ends,
      // and deep or wide JSON after it reached the parser (minutes of CPU).
      return absl::InvalidArgumentError(
          "not valid JSON: a string in single quotes (JSON quotes strings with \")");
    } else if (c == ',' || c == '[' || c == '{') {
      if (++values > kMaxJsonValues) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON of more than ", kMaxJsonValues, " values"));
      }
      if (c != ',' && ++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return absl::OkStatus();
}

// protobuf's parser also takes a comma before a closing bracket and keys
// without quotes ({steps:10,}), which are not JSON: the text is held to
// RFC 8259 by nlohmann's parser, which builds nothing while it checks.
class SyntaxError : public nlohmann::json_sax<nlohmann::json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& error) override {
    // Its message after "[json.exception.parse_error.101] parse error at
    // line 1, column 18: ". It may end with the text last read: bytes past
    // printable ASCII escaped, cut short.
    const std::string what = error.what();
    const size_t column = what.find(", column ");
    const size_t detail = column == std::string::npos ? column : what.find(": ", column);
    std::string said;
    size_t i = detail == std::string::npos ? 0 : detail + 2;
    for (; i < what.size() && said.size() < 160; ++i) {
      const auto byte = static_cast<unsigned char>(what[i]);
      if (byte >= 0x20 && byte < 0x7f) {
        said += what[i];
      } else {
        absl::StrAppend(&said, absl::StrFormat("\\x%02x", byte));
      }
    }
    problem_ = absl::StrCat("not valid JSON at byte ", position, ": ", said,
                            i < what.size() ? "..." : "");
    return false;
  }
  const std::string& problem() const { return problem_; }

 private:
  std::string problem_;
};

absl::Status CheckSyntax(absl::string_view json) {
  SyntaxError handler;
  if (nlohmann::json::sax_parse(json.begin(), json.end(), &handler)) return absl::OkStatus();
  return absl::InvalidArgumentError(handler.problem().empty() ? "not valid JSON"
                                                              : handler.problem());
}

// Reads JSON text that protobuf's parser refused, for the value at fault
// that it does not name: a string that is not UTF-8 (raw bytes or an unpaired
// surrogate escape) or a number past a double's range. Knows the path of
// each value as CheckObject names it. OK when it finds neither, or when the
// text stops being JSON first: the parser's own message then stands.
class JsonValueLocator {
 public:
  JsonValueLocator(absl::string_view json, const Descriptor& type) : json_(json), type_(type) {}

  absl::Status Locate() {
    while (true) {
      SkipSpace();
      if (at_ >= json_.size()) return absl::OkStatus();
      const char c = json_[at_];
      if (c == '{' || c == '[') {
        Open(c == '{');
      } else if (c == '}' || c == ']') {
        if (stack_.empty()) return absl::OkStatus();
        stack_.pop_back();
        ++at_;
      } else if (c == ',') {
        if (stack_.empty()) return absl::OkStatus();
        Container& top = stack_.back();
        if (top.object) {
          top.want_key = true;
        } else {
          ++top.index;
        }
        ++at_;
      } else if (c == ':') {
        if (stack_.empty() || !stack_.back().object) return absl::OkStatus();
        stack_.back().want_key = false;
        ++at_;
      } else if (c == '"') {
        std::optional<absl::Status> found = String();
        if (!found) return absl::OkStatus();
        RETURN_IF_ERROR(*found);
      } else if (WantsKey()) {
        return absl::OkStatus();  // a value where a key belongs: not JSON
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        RETURN_IF_ERROR(Number());
      } else if (c >= 'a' && c <= 'z') {  // true, false, null
        while (at_ < json_.size() && json_[at_] >= 'a' && json_[at_] <= 'z') ++at_;
      } else {
        return absl::OkStatus();
      }
    }
  }

 private:
  // An object (with the name of its next value) or a list (with the index
  // of its next element) being read.
  // Its path is its ancestors' keys and indices, joined only for an error:
  // a container does not copy its parent's path (a long key over many
  // containers would cost its length each time).
  struct Container {
    bool object = false;
    const Descriptor* type = nullptr;          // an object's message, if known
    const FieldDescriptor* field = nullptr;    // a list's field, if known
    // The next value's name: the field's, or a short quote of a key the
    // message does not have (echoed at most kMaxKeyEcho bytes).
    std::string key;
    const FieldDescriptor* key_field = nullptr;
    int index = 0;
    bool want_key = false;
    std::set<std::string> keys;  // an object's keys so far, as written
  };
  static constexpr size_t kMaxKeyEcho = 40;

  // The path of the first `depth` containers' next values joined.
  std::string PathTo(size_t depth) const {
    std::string path;
    for (size_t i = 0; i < depth; ++i) {
      const Container& c = stack_[i];
      path = c.object ? JoinPath(path, c.key) : absl::StrCat(path, "[", c.index, "]");
    }
    return path;
  }

  std::string ValuePath() const { return stack_.empty() ? type_.name() : PathTo(stack_.size()); }

  bool WantsKey() const { return !stack_.empty() && stack_.back().object && stack_.back().want_key; }

  // The field the next value is (one element of, for a list), if known.
  const FieldDescriptor* ValueField() const {
    if (stack_.empty()) return nullptr;
    const Container& c = stack_.back();
    return c.object ? c.key_field : c.field;
  }

  void Open(bool object) {
    Container next;
    next.object = object;
    next.want_key = object;
    const FieldDescriptor* field = ValueField();
    if (stack_.empty()) {
      next.type = &type_;
    } else if (field && !object && field->is_repeated()) {
      next.field = field;
    } else if (field && object && field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      next.type = field->message_type();
    }
    stack_.push_back(std::move(next));
    ++at_;
  }

  // A string literal from its opening quote: a key or a value. nullopt when
  // it does not end.
  std::optional<absl::Status> String() {
    const size_t start = ++at_;
    bool unpaired = false;
    while (at_ < json_.size() && json_[at_] != '"') {
      if (json_[at_] != '\\') {
        ++at_;
        continue;
      }
      if (at_ + 1 < json_.size() && json_[at_ + 1] == 'u') {
        const int unit = HexUnit(at_ + 2);
        if (unit >= 0xD800 && unit <= 0xDBFF) {
          const int low = at_ + 8 < json_.size() && json_[at_ + 6] == '\\' && json_[at_ + 7] == 'u'
                              ? HexUnit(at_ + 8)
                              : -1;
          if (low < 0xDC00 || low > 0xDFFF) unpaired = true;
          if (!unpaired) at_ += 6;
        } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
          unpaired = true;
        }
      }
      at_ += 2;
    }
    if (at_ >= json_.size()) return std::nullopt;
    const absl::string_view text = json_.substr(start, at_ - start);
    ++at_;
    const bool bad = unpaired || !IsValidUtf8(text);
    if (WantsKey()) {
      if (bad) {
        const std::string path = PathTo(stack_.size() - 1);
        return absl::InvalidArgumentError(
            absl::StrCat(path.empty() ? type_.name() : path, ": a key is not valid UTF-8"));
      }
      Container& c = stack_.back();
      c.key_field = c.type ? FindJsonField(*c.type, std::string(text)) : nullptr;
      c.key = c.key_field ? c.key_field->name() : ShortQuote(text, kMaxKeyEcho);
      // protobuf's parser says "Repeated map key", naming the place in its
      // own notation, cut short in a nested object.
      if (!c.keys.insert(std::string(text)).second) {
        return absl::InvalidArgumentError(absl::StrCat(PathTo(stack_.size()), ": given twice"));
      }
      return absl::OkStatus();
    }
    if (!bad) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(ValuePath(), ": is not valid UTF-8",
                     unpaired ? " (an unpaired surrogate escape)" : ""));
  }

  // The four hex digits at `at` as a number, or -1.
  int HexUnit(size_t at) const {
    if (at + 4 > json_.size()) return -1;
    int unit = 0;
    for (size_t i = at; i < at + 4; ++i) {
      const char h = json_[i];
      const int digit = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
      if (digit < 0) return -1;
      unit = unit * 16 + digit;
    }
    return unit;
  }

  absl::Status Number() {
    const size_t start = at_;
    while (at_ < json_.size() &&
           absl::string_view("+-.0123456789eE").find(json_[at_]) != absl::string_view::npos) {
      ++at_;
    }
    const std::string text(json_.substr(start, at_ - start));
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size() && std::isinf(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(ValuePath(), ": the number ", ShortQuote(text, 40), " is out of range"));
    }
    return absl::OkStatus();
  }

  void SkipSpace() {
    while (at_ < json_.size() &&
           absl::string_view(" \t\r\n").find(json_[at_]) != absl::string_view::npos) {
      ++at_;
    }
  }

  absl::string_view json_;
  const Descriptor& type_;
  size_t at_ = 0;
  std::vector<Container> stack_;
};

}  // namespace

absl::Status CheckJsonShape(absl::string_view json, const Descriptor& type) {
  RETURN_IF_ERROR(CheckNesting(json));
  Value value;
  if (const auto parsed = google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(json.data(), json.size()), &value);
      !parsed.ok()) {
    RETURN_IF_ERROR(JsonValueLocator(json, type).Locate());
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", ShortQuote(FirstLine(std::string(parsed.message())))));
  }
  RETURN_IF_ERROR(CheckSyntax(json));
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
