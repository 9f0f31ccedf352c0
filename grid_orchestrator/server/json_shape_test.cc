#include "grid_orchestrator/server/json_shape.h"

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

absl::Status Check(const std::string& json) {
  return CheckJsonShape(json, *v1::GridRequest::descriptor());
}

TEST(JsonShapeTest, AGridRequestOfEitherNamingPasses) {
  EXPECT_TRUE(Check(R"({"prompt": "bag", "seed": 3, "branch_steps": [0, 5],
                        "branches": 2, "switchPrompt": "dress",
                        "trunk": {"initSeed": "3", "segments": [{"fromStep": 0}]}})")
                  .ok());
  EXPECT_TRUE(Check("{}").ok());
  EXPECT_TRUE(Check(R"({"steps": null})").ok());  // null is unset
  EXPECT_TRUE(Check(R"({"seed": "18446744073709551615", "branch_noise": "BRANCH_NOISE_TRUNK",
                        "sampler": "SAMPLER_EULER_ANCESTRAL", "steps": "20"})")
                  .ok());
  EXPECT_TRUE(Check(R"({"sampler": "1", "branch_noise": 1})").ok());  // numbers, as protobuf takes
}

TEST(JsonShapeTest, WhatProtobufWouldAcceptLeniently) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"branch_steps": [[5]]})", "branch_steps[0]: expected a number, got a list"},
      {R"({"branch_steps": 5})", "branch_steps: expected a list, got a number"},
      {R"({"branch_steps": [0, null]})", "branch_steps[1]: expected a number, got null"},
      {R"({"trunk": {"segments": [3]}})", "trunk.segments[0]: expected an object, got a number"},
      {R"({"steps": {"value": 5}})", "steps: expected a number, got an object"},
      {R"({"promt": "bag"})", "unknown field \"promt\""},
      // protobuf's parser takes these, which are not JSON.
      {R"({"prompt": "bag",})",
       "not valid JSON at byte 18: syntax error while parsing object key - unexpected '}'; "
       "expected string literal"},
      {R"({prompt: "bag"})",
       "not valid JSON at byte 2: syntax error while parsing object key - invalid literal; last "
       "read: '{p'; expected string literal"},
      {R"({"branch_steps": [0, 5,]})",
       "not valid JSON at byte 24: syntax error while parsing value - unexpected ']'; expected "
       "'[', '{', or a literal"},
      // A raw line feed in a string: JSON escapes it.
      {"{\"prompt\": \"a\nb\"}",
       "not valid JSON at byte 14: syntax error while parsing value - invalid string: control "
       "character U+000A (LF) must be escaped to \\u000A or \\n; last read: '\"a<U+000A>'"},
      {R"([1, 2])", "GridRequest: expected an object, got a list"},
      // protobuf named the type ("for type TYPE_UINT64"), not what it takes.
      {R"({"branch_noise": "trunk"})",
       "branch_noise: unknown value \"trunk\"; one of BRANCH_NOISE_NEW, BRANCH_NOISE_TRUNK"},
      {R"({"seed": "abc"})",
       "seed: expected a whole number from 0 (a number or a string of digits), got \"abc\""},
      {R"({"seed": "-1"})",
       "seed: expected a whole number from 0 (a number or a string of digits), got \"-1\""},
      // Digits with space around them, or an enum number it lacks in a
      // string: protobuf's parser refused them in its own words.
      {R"({"steps": " 4"})",
       "steps: expected a whole number (a number or a string of digits), got \" 4\""},
      {R"({"seed": "5\n"})",
       "seed: expected a whole number from 0 (a number or a string of digits), got \"5\\n\""},
      {R"({"spacing": "99"})",
       "spacing: unknown value \"99\"; one of SPACING_UNSPECIFIED, SPACING_LEADING, "
       "SPACING_TRAILING, SPACING_LINSPACE"},
      {R"({"spacing": " 1"})",
       "spacing: unknown value \" 1\"; one of SPACING_UNSPECIFIED, SPACING_LEADING, "
       "SPACING_TRAILING, SPACING_LINSPACE"},
      {R"({"spacing": 1.5})", "spacing: expected a whole number, got 1.5"},
      {R"({"spacing": 2147483648})",
       "spacing: 2147483648 is out of range [-2147483648, 2147483647]"},
  };
  for (const auto& [json, expected] : cases) {
    const absl::Status s = Check(json);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_EQ(std::string(s.message()), expected) << json;
  }
  // What passes the shape, protobuf's parser takes.
  for (const char* json : {R"({"spacing": "1"})", R"({"spacing": 99})", R"({"steps": "4"})",
                           R"({"seed": "18446744073709551615"})"}) {
    v1::GridRequest request;
    const absl::Status parsed = ParseJsonRequest(json, "request body", &request);
    EXPECT_TRUE(parsed.ok()) << json << ": " << parsed;
  }
}

// protobuf refused these in its own words: "(steps.value): invalid value
// 1e+30 for type TYPE_INT32".
TEST(JsonShapeTest, ANumberForAnIntegerFieldIsWholeAndInItsRange) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"steps": 1e30})", "steps: 1e+30 is out of range [-2147483648, 2147483647]"},
      {R"({"steps": 2147483648})", "steps: 2147483648 is out of range [-2147483648, 2147483647]"},
      {R"({"steps": 5.5})", "steps: expected a whole number, got 5.5"},
      {R"({"seed": -1})", "seed: -1 is out of range [0, 18446744073709551615]"},
      {R"({"seed": 1e20})", "seed: 1e+20 is out of range [0, 18446744073709551615]"},
      {R"({"branch_steps": [0, 0.5]})", "branch_steps[1]: expected a whole number, got 0.5"},
      {R"({"trunk": {"segments": [{"fromStep": -3000000000}]}})",
       "trunk.segments[0].from_step: -3000000000 is out of range [-2147483648, 2147483647]"},
  };
  for (const auto& [json, expected] : cases) {
    const absl::Status s = Check(json);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_EQ(s.message(), expected) << json;
  }
  // The ranges' ends, whole numbers written as decimals, and floats pass.
  EXPECT_TRUE(Check(R"({"steps": 2147483647, "branches": -2147483648, "seed": 0,
                        "branch_steps": [0, 5.0, 1e1], "guidance": 7.5, "eta": 1e-30})")
                  .ok());
  EXPECT_TRUE(Check(R"({"seed": 18446744073709551615})").ok());
}

// protobuf's parser refuses these without naming the value: "Encountered
// non UTF-8 code points.", "Missing low surrogate.", "Number exceeds the
// range of double."
TEST(JsonShapeTest, TextTheParserRefusesIsNamedByItsPath) {
  const std::pair<std::string, const char*> cases[] = {
      {"{\"switch_prompt\": \"ab\xff\xfe cd\"}", "switch_prompt: is not valid UTF-8"},
      {"{\"prompt\": \"ok\", \"switchPrompt\": \"ab\xc3\"}",
       "switch_prompt: is not valid UTF-8"},
      {R"({"switch_prompt": "ab\ud800cd"})",
       "switch_prompt: is not valid UTF-8 (an unpaired surrogate escape)"},
      {R"({"prompt": "\udc00"})", "prompt: is not valid UTF-8 (an unpaired surrogate escape)"},
      {R"({"prompt": "a\ud800\u0041"})",
       "prompt: is not valid UTF-8 (an unpaired surrogate escape)"},
      {"{\"trunk\": {\"segments\": [{\"fromStep\": 0}, {\"conditioning\": "
       "{\"prompt\": \"\xe2\x82\"}}]}}",
       "trunk.segments[1].conditioning.prompt: is not valid UTF-8"},
      {"{\"pro\xffmpt\": \"a\"}", "GridRequest: a key is not valid UTF-8"},
      {R"({"guidance": 1e400})", "guidance: the number \"1e400\" is out of range"},
      {R"({"branch_steps": [0, 5, -2E999]})",
       "branch_steps[2]: the number \"-2E999\" is out of range"},
  };
  for (const auto& [json, expected] : cases) {
    const absl::Status s = Check(json);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_EQ(s.message(), expected) << json;
  }
  // What the parser takes passes: a surrogate pair, escapes, small numbers.
  EXPECT_TRUE(Check(R"({"prompt": "a \ud83d\ude00 \" \\ \u00e9", "guidance": 1e-400})").ok());
  EXPECT_TRUE(Check("{\"prompt\": \"caf\xc3\xa9\"}").ok());
  // Broken JSON keeps the parser's own message.
  EXPECT_EQ(Check("{\"prompt\": \"\xff").message().substr(0, 15), "not valid JSON:");
  EXPECT_EQ(Check("{1e400: 1}").message().substr(0, 15), "not valid JSON:");
}

// The locator reads refused text of any size once over: a long key over
// many containers is not copied into each container's path (a 1 MiB body
// cost about 90 GB of copying over 60,000 containers), and a key echoes short.
TEST(JsonShapeTest, TheLocatorReadsALongKeyOnce) {
  std::string json = "{\"" + std::string(512 << 10, 'k') + "\": [";
  for (int i = 0; i < 8000; ++i) json += "{},";  // 16,000 values: under kMaxJsonValues
  json += "{\"p\": \"\xff\"}]}";
  const absl::Time start = absl::Now();
  const absl::Status s = Check(json);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 120u) << s.message().substr(0, 300);
  // An unknown key is quoted short, as "unknown field" quotes it.
  EXPECT_NE(s.message().find(R"([8000]."p": is not valid UTF-8)"), std::string::npos)
      << s.message();
}

TEST(JsonShapeTest, AFieldUnderBothItsNamesIsRefused) {
  EXPECT_EQ(Check(R"({"switch_prompt": "sneaker", "switchPrompt": "coat"})").message(),
            "switch_prompt: given twice (as \"switch_prompt\" and \"switchPrompt\")");
  EXPECT_EQ(Check(R"({"trunk": {"init_seed": 1, "initSeed": 2}})").message(),
            "trunk.init_seed: given twice (as \"init_seed\" and \"initSeed\")");
  EXPECT_TRUE(Check(R"({"prompt": "a", "switchPrompt": "b"})").ok());
}

// protobuf named these in its own notation: "(struct_value.fields[4]) model:
// Repeated map key", "(steps.value): invalid value true for type TYPE_INT32".
TEST(JsonShapeTest, AKeyTwiceAndAValueOfTheWrongKindAreNamedByTheirPath) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"model": "a", "prompt": "b", "model": "c"})", "model: given twice"},
      {R"({"trunk": {"segments": [{"noise_seed": 1}, {"noise_seed": 1, "noise_seed": 2}]}})",
       "trunk.segments[1].noise_seed: given twice"},
      {R"({"steps": true})", "steps: expected a number, got true or false"},
      {R"({"trunk": {"init_seed": false}})", "trunk.init_seed: expected a number, got true or false"},
      {R"({"branch_steps": [0, true]})", "branch_steps[1]: expected a number, got true or false"},
      {R"({"branch_noise": true})", "branch_noise: expected an enum name, got true or false"},
      {R"({"prompt": 5})", "prompt: expected a string, got a number"},
      {R"({"guidance": "abc"})", "guidance: expected a number, got \"abc\""},
  };
  for (const auto& [json, expected] : cases) {
    const absl::Status s = Check(json);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_EQ(s.message(), expected) << json;
  }
  // A float's text as protobuf reads it, or its range: protobuf said
  // '(guidance.value): invalid value " 5" for type TYPE_FLOAT'.
  for (const char* json : {R"({"guidance": " 5"})", R"({"guidance": "5 "})",
                           R"({"guidance": "inf"})", R"({"guidance": "nan"})",
                           R"({"guidance": "1e999"})"}) {
    EXPECT_EQ(Check(json).message().substr(0, 30), "guidance: expected a number, g") << json;
  }
  EXPECT_EQ(Check(R"({"guidance": 1e39})").message(),
            "guidance: 1e+39 is out of range for a float (3.40282e+38 at most)");
  EXPECT_EQ(Check(R"({"eta": "-1e39"})").message(),
            "eta: -1e+39 is out of range for a float (3.40282e+38 at most)");
  // What protobuf takes for a number or a float still passes.
  EXPECT_TRUE(Check(R"({"guidance": "7.5", "eta": "NaN", "steps": "20"})").ok());
  EXPECT_TRUE(Check(R"({"guidance": "1e3", "eta": "Infinity"})").ok());
  EXPECT_TRUE(Check(R"({"guidance": 3e38})").ok());
  // The same key in two objects is no repeat.
  EXPECT_TRUE(Check(R"({"trunk": {"segments": [{"noise_seed": 1}, {"noise_seed": 2}]}})").ok());
}

TEST(JsonShapeTest, NestingPastTheLimitIsRefusedBeforeParsing) {
  std::string deep = "{\"branch_steps\": ";
  for (int i = 0; i < kMaxJsonDepth; ++i) deep += "[";
  const absl::Status s = Check(deep);
  EXPECT_EQ(s.message(), "JSON nested deeper than 32 levels");
  // Brackets inside strings do not count.
  EXPECT_TRUE(Check("{\"prompt\": \"" + std::string(100, '[') + "\"}").ok());
  EXPECT_EQ(Check("{\"prompt\": ").message().substr(0, 15), "not valid JSON:");
}

// protobuf's parser takes single-quoted strings: a '"' in one hid the rest
// of the body from the count, and 40 KB nested 20,000 deep kept a gateway
// thread parsing for 14 s (200 KB: minutes, past the shutdown's grace).
TEST(JsonShapeTest, SingleQuotedStringsAreRefusedBeforeParsing) {
  std::string deep = "{\"prompt\": '\"', \"branch_steps\": ";
  for (int i = 0; i < 20000; ++i) deep += "[";
  for (int i = 0; i < 20000; ++i) deep += "]";
  deep += "}";
  const absl::Time start = absl::Now();
  const absl::Status s = Check(deep);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(s.message(), "not valid JSON: a string in single quotes (JSON quotes strings with \")");
  EXPECT_EQ(Check("{'prompt': 'bag'}").code(), absl::StatusCode::kInvalidArgument);
  // An apostrophe in a string is text.
  EXPECT_TRUE(Check(R"({"prompt": "it's a bag"})").ok());
}

// Two members of one oneof: protobuf's own words, cut short, said neither
// which fields nor what to do.
TEST(JsonShapeTest, TwoMembersOfAOneofAreRefusedByName) {
  EXPECT_EQ(Check(R"({"trunk": {"segments": [{"conditioning": {"classIndex": 1, "prompt": "bag"}}]}})")
                .message(),
            "trunk.segments[0].conditioning: give one of class_index, prompt, not more");
  EXPECT_TRUE(Check(R"({"trunk": {"segments": [{"conditioning": {"classIndex": 1, "prompt": null}}]}})")
                  .ok());
}

// A 1 MiB body of empty objects held 70 to 100 MB in protobuf's value tree.
TEST(JsonShapeTest, WideJsonIsRefusedBeforeParsing) {
  auto segments = [](int n, const std::string& each) {
    std::string json = R"({"trunk": {"segments": [)";
    for (int i = 0; i < n; ++i) json += (i ? "," : "") + each;
    return json + "]}}";
  };
  EXPECT_EQ(Check(segments(20000, "{}")).message(), "JSON of more than 16384 values");
  // One long number is one value (refused for its range, not its width).
  const std::string long_number = R"({"branch_steps": [)" + std::string(20000, '1') + "]}";
  EXPECT_EQ(Check(long_number).message().find("JSON of"), std::string::npos);
  // A trunk that switches at each of 1,000 steps, its widest real use.
  const std::string segment = R"({"from_step": 7, "noise_seed": "12345678901234567",
      "conditioning": {"prompt": "a, b", "negative_prompt": "c"}})";
  EXPECT_TRUE(Check(segments(1000, segment)).ok());
}

}  // namespace
}  // namespace dgrid
