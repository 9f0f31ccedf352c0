#include "common/request_parsing.h"

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/unknown_field_set.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/short_text.h"

namespace dgrid {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

// Protobuf's own default nesting limit.
constexpr int kMaxDepth = 100;

// protobuf logs an ERROR line for each string field it refuses as invalid
// UTF-8: a line per request, which any client could send in a flood. The
// client hears of it by name (RequestParseError), so the line goes; every
// other line goes on to the handler it replaced.
google::protobuf::LogHandler* g_next_log_handler = nullptr;

void DropInvalidUtf8Lines(google::protobuf::LogLevel level, const char* filename, int line,
                          const std::string& message) {
  if (absl::StrContains(message, "contains invalid UTF-8 data when parsing")) return;
  if (g_next_log_handler != nullptr) g_next_log_handler(level, filename, line, message);
}

absl::Status CannotParse(absl::string_view field, const Descriptor& type) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": cannot be parsed as ", type.full_name()));
}

// Walks `fields`, the wire form of a `type` parsed without its schema, along
// the schema, for what made protobuf refuse it. Fields it does not know, and
// wire types that do not match, protobuf keeps as unknown fields: they are
// not the reason. OK when nothing is found.
absl::Status FindFieldAtFault(const UnknownFieldSet& fields, const Descriptor& type,
                              const std::string& prefix, int depth) {
  std::map<int, int> occurrences;  // per field number, for repeated indices
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& field = fields.field(i);
    const FieldDescriptor* schema = type.FindFieldByNumber(field.number());
    if (schema == nullptr || field.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const bool is_string = schema->type() == FieldDescriptor::TYPE_STRING;
    const bool is_message = schema->type() == FieldDescriptor::TYPE_MESSAGE;
    if (!is_string && !is_message) continue;
    std::string name = absl::StrCat(prefix, schema->name());
    if (schema->is_repeated()) absl::StrAppend(&name, "[", occurrences[field.number()]++, "]");
    const std::string& bytes = field.length_delimited();
    if (is_string) {
      // Only proto3 refuses invalid UTF-8; proto2 parses it.
      if (schema->file()->syntax() == FileDescriptor::SYNTAX_PROTO3 && !IsValidUtf8(bytes)) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": is not valid UTF-8"));
      }
      continue;
    }
    const Descriptor& nested_type = *schema->message_type();
    UnknownFieldSet nested;
    if (depth >= kMaxDepth || !nested.ParseFromString(bytes)) {
      return CannotParse(name, nested_type);
    }
    absl::Status found = FindFieldAtFault(nested, nested_type, name + ".", depth + 1);
    if (!found.ok()) return found;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RequestParseError(absl::string_view wire, const Descriptor& type) {
  UnknownFieldSet fields;
  if (wire.size() <= static_cast<size_t>(std::numeric_limits<int>::max()) &&
      fields.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    absl::Status found = FindFieldAtFault(fields, type, "", 0);
    if (!found.ok()) return found;
  }
  return CannotParse("request", type);
}

grpc::Status RequestParseError(const grpc::ByteBuffer& wire, const Descriptor& type) {
  grpc::Slice bytes;
  if (!wire.DumpToSingleSlice(&bytes).ok()) return ToGrpcStatus(CannotParse("request", type));
  return ToGrpcStatus(RequestParseError(
      absl::string_view(reinterpret_cast<const char*>(bytes.begin()), bytes.size()), type));
}

RequestParsingService::RequestParsingService(absl::string_view service)
    : service_(google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(service))) {
  if (service_ == nullptr) {
    std::fprintf(stderr, "RequestParsingService: no service %s is linked in\n",
                 std::string(service).c_str());
    std::abort();
  }
  // Once, before any request: SetLogHandler is not thread-safe.
  static std::once_flag quiet;
  std::call_once(quiet, [] {
    g_next_log_handler = google::protobuf::SetLogHandler(DropInvalidUtf8Lines);
  });
}

const char* RequestParsingService::MethodPath(const char* method, const Descriptor& request,
                                              const Descriptor& response, bool server_streaming) {
  const google::protobuf::MethodDescriptor* m = service_->FindMethodByName(method);
  if (m == nullptr || m->input_type() != &request || m->output_type() != &response ||
      m->client_streaming() || m->server_streaming() != server_streaming) {
    std::fprintf(stderr, "RequestParsingService: %s declares no %s%s(%s) returns (%s)\n",
                 service_->full_name().c_str(), server_streaming ? "server-streaming " : "", method,
                 request.full_name().c_str(), response.full_name().c_str());
    std::abort();
  }
  paths_.push_back(absl::StrCat("/", service_->full_name(), "/", method));
  return paths_.back().c_str();
}

}  // namespace dgrid
