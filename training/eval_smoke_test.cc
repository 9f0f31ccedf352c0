// Runs dgrid-eval end to end on the shipped bundle with a tiny budget and
// checks what a user reads: stdout is one well-formed JSON object, the same
// one is in eval.json, every number is in its range, and the plot is a PNG.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace {

namespace fs = std::filesystem;
using google::protobuf::Struct;
using google::protobuf::Value;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const Value& Field(const Struct& s, const std::string& key) {
  static const Value kMissing;
  auto it = s.fields().find(key);
  EXPECT_NE(it, s.fields().end()) << "missing field " << key;
  return it == s.fields().end() ? kMissing : it->second;
}

double Number(const Struct& s, const std::string& key) {
  const Value& v = Field(s, key);
  EXPECT_EQ(v.kind_case(), Value::kNumberValue) << key;
  EXPECT_TRUE(std::isfinite(v.number_value())) << key;
  return v.number_value();
}

const Struct& Object(const Struct& s, const std::string& key) {
  const Value& v = Field(s, key);
  EXPECT_EQ(v.kind_case(), Value::kStructValue) << key;
  return v.struct_value();
}

TEST(EvalSmokeTest, TinyRunPrintsOneWellFormedReportWithNumbersInRange) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  const fs::path out = fs::temp_directory_path() / "dgrid_eval_smoke";
  fs::remove_all(out);
  fs::create_directories(out);
  const std::string command =
      std::string(DGRID_EVAL_BINARY) + " --bundle " + DGRID_BUNDLE +
      " --json --per_class 2 --guidance 0,4 --trunks 4 --branches 2 --steps 10"
      " --branch_every 3 --real_images 500 --threads 2 --out_dir " +
      out.string() + " > " + (out / "stdout.json").string() + " 2> " +
      (out / "stderr.txt").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << ReadFile(out / "stderr.txt");

  const std::string printed = ReadFile(out / "stdout.json");
  EXPECT_EQ(printed, ReadFile(out / "eval.json"));
  Struct report;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(printed, &report).ok()) << printed;

  const Struct& sampler = Object(report, "sampler");
  EXPECT_EQ(Number(sampler, "steps"), 10);
  const double default_guidance = Number(sampler, "default_guidance");

  const Struct& conditional = Object(report, "conditional");
  EXPECT_EQ(Number(conditional, "samples"), 20);
  EXPECT_EQ(Number(conditional, "guidance"), default_guidance);
  const double accuracy = Number(conditional, "accuracy");
  EXPECT_GE(accuracy, 0);
  EXPECT_LE(accuracy, 1);

  const Struct& classifier = Object(report, "classifier");
  EXPECT_EQ(Number(classifier, "feature_dim"), 128);
  // The shipped classifier scores 92.5% on the whole test split.
  EXPECT_GT(Number(classifier, "test_accuracy"), 0.85);

  const Struct& frechet = Object(report, "frechet");
  EXPECT_GT(Number(frechet, "samples_vs_test"), 0);
  EXPECT_GE(Number(frechet, "floor_train_vs_test"), 0);
  // Real train images are closer to the test set than a 10-step sampler's.
  EXPECT_LT(Number(frechet, "floor_train_vs_test"), Number(frechet, "samples_vs_test"));

  // 0 and 4 from the flag, plus the bundle's default.
  const Value& by_guidance = Field(report, "by_guidance");
  ASSERT_EQ(by_guidance.kind_case(), Value::kListValue);
  const int scales = by_guidance.list_value().values_size();
  EXPECT_EQ(scales, default_guidance == 0 || default_guidance == 4 ? 2 : 3);
  double previous = -1;
  for (const Value& v : by_guidance.list_value().values()) {
    const Struct& g = v.struct_value();
    const double scale = Number(g, "guidance");
    EXPECT_GT(scale, previous);
    previous = scale;
    EXPECT_EQ(Field(g, "label_used").bool_value(), scale != 0);
    EXPECT_GE(Number(g, "accuracy"), 0);
    EXPECT_LE(Number(g, "accuracy"), 1);
    EXPECT_GE(Number(g, "frechet_distance"), 0);
    EXPECT_GE(Number(g, "predicted_entropy_bits"), 0);
    EXPECT_LE(Number(g, "predicted_entropy_bits"), std::log2(10) + 1e-9);
  }

  const Struct& speciation = Object(report, "speciation");
  EXPECT_EQ(Number(speciation, "trunks"), 4);
  const Value& points = Field(speciation, "points");
  ASSERT_EQ(points.kind_case(), Value::kListValue);
  ASSERT_EQ(points.list_value().values_size(), 4);  // steps 0, 3, 6, 9
  int expected_step = 0;
  for (const Value& v : points.list_value().values()) {
    const Struct& p = v.struct_value();
    EXPECT_EQ(Number(p, "step"), expected_step);
    expected_step += 3;
    EXPECT_EQ(Number(p, "pairs"), 8);
    const double pc = Number(p, "p_change");
    EXPECT_GE(pc, 0);
    EXPECT_LE(pc, 1);
    EXPECT_GE(Number(p, "standard_error"), 0);
    const Value& ci = Field(p, "ci95");
    ASSERT_EQ(ci.list_value().values_size(), 2);
    EXPECT_LE(ci.list_value().values(0).number_value(), pc + 1e-12);
    EXPECT_GE(ci.list_value().values(1).number_value(), pc - 1e-12);
  }

  const Struct& machine = Object(report, "machine");
  EXPECT_GE(Number(machine, "logical_cores"), 1);
  EXPECT_GT(Number(Object(report, "seconds"), "total"), 0);
  EXPECT_GT(Number(report, "image_forwards"), 0);

  const std::string png = ReadFile(out / "speciation.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
}

}  // namespace
