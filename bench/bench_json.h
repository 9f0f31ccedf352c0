// One JSON line per benchmark configuration, written through protobuf's
// JSON mapping of google.protobuf.Struct (no hand-written serializer).
//
//   BenchLine line;
//   line.Set("config", "engine_b32").Set("images_per_s", 1234.5);
//   line.Print();
//   line.Set("cpu", CpuModel());
#ifndef DGRID_BENCH_BENCH_JSON_H_
#define DGRID_BENCH_BENCH_JSON_H_

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <iostream>
#include <string>

namespace dgrid {

class BenchLine {
 public:
  BenchLine& Set(const std::string& key, double value) {
    (*s_.mutable_fields())[key].set_number_value(value);
    return *this;
  }
  BenchLine& Set(const std::string& key, const std::string& value) {
    (*s_.mutable_fields())[key].set_string_value(value);
    return *this;
  }
  BenchLine& Set(const std::string& key, const char* value) { return Set(key, std::string(value)); }
  std::string Json() const {
    std::string out;
    google::protobuf::util::MessageToJsonString(s_, &out);
    return out;
  }
  void Print() const { std::cout << Json() << std::endl; }

 private:
  google::protobuf::Struct s_;
};

// /proc/cpuinfo's first "model name", for every result line.
inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    const size_t first = line.find_first_not_of(" \t", colon + 1);
    return first == std::string::npos ? "unknown" : line.substr(first);
  }
  return "unknown";
}

}  // namespace dgrid

#endif  // DGRID_BENCH_BENCH_JSON_H_
