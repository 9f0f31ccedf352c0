#include "common/request_parsing.h"

#include <string>

#include "dgrid/v1/denoiser.pb.h"
#include "dgrid/v1/orchestrator.pb.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

constexpr char kPlaceholder[] = "UTF8-PLACEHOLDER";

// `message`'s wire form with the placeholder's first byte made 0xFF: the
// same length, no longer UTF-8 (what a client's own protobuf refuses to
// build).
std::string WithInvalidUtf8(const google::protobuf::Message& message) {
  std::string wire = message.SerializeAsString();
  const size_t at = wire.find(kPlaceholder);
  EXPECT_NE(at, std::string::npos);
  if (at != std::string::npos) wire[at] = '\xFF';
  return wire;
}

// What protobuf says, then what the client is told.
absl::Status Parse(const std::string& wire, google::protobuf::Message* message) {
  EXPECT_FALSE(message->ParseFromString(wire)) << "protobuf took it: the case tests nothing";
  return RequestParseError(wire, *message->GetDescriptor());
}

TEST(RequestParseErrorTest, NamesAStringFieldThatIsNotUtf8) {
  v1::GridRequest grid;
  grid.set_prompt(kPlaceholder);
  EXPECT_EQ(Parse(WithInvalidUtf8(grid), &grid),
            absl::InvalidArgumentError("prompt: is not valid UTF-8"));

  v1::BranchRequest branch;
  branch.set_model("fashion-mnist");
  branch.mutable_sampler()->set_steps(10);
  branch.add_trajectories()->mutable_path()->set_init_seed(1);
  branch.mutable_conditioning()->set_prompt(kPlaceholder);
  EXPECT_EQ(Parse(WithInvalidUtf8(branch), &branch),
            absl::InvalidArgumentError("conditioning.prompt: is not valid UTF-8"));
}

TEST(RequestParseErrorTest, IndexesRepeatedFields) {
  v1::GetModelInfoResponse models;
  models.add_models()->add_prompts("a");
  v1::ModelInfo* second = models.add_models();
  second->add_prompts("b");
  second->add_prompts("c");
  second->add_prompts(kPlaceholder);
  EXPECT_EQ(Parse(WithInvalidUtf8(models), &models),
            absl::InvalidArgumentError("models[1].prompts[2]: is not valid UTF-8"));
}

TEST(RequestParseErrorTest, NamesANestedMessageThatIsNotAMessage) {
  v1::GridRequest grid;
  grid.set_seed(1);
  // Field 11 (trunk), length 2, then a truncated varint.
  const std::string wire = grid.SerializeAsString() + std::string("\x5A\x02\x08\xFF", 4);
  EXPECT_EQ(Parse(wire, &grid),
            absl::InvalidArgumentError("trunk: cannot be parsed as dgrid.v1.Path"));
}

TEST(RequestParseErrorTest, AnythingElseIsTheRequest) {
  v1::ListModelsRequest list;
  EXPECT_EQ(Parse("\xFF\xFF\xFF", &list),
            absl::InvalidArgumentError("request: cannot be parsed as dgrid.v1.ListModelsRequest"));
}

// gRPC's deserializer keeps the bytes; ParseRequest parses them as gRPC
// would, and names the field when that fails.
TEST(RequestParseErrorTest, ParseRequestAnswersWithIt) {
  using Traits = grpc::SerializationTraits<ParsedRequest<v1::GridRequest>>;
  v1::GridRequest good;
  good.set_prompt("Sneaker");
  good.set_seed(7);
  grpc::Slice slice(good.SerializeAsString());
  grpc::ByteBuffer buffer(&slice, 1);
  ParsedRequest<v1::GridRequest> parsed;
  ASSERT_TRUE(Traits::Deserialize(&buffer, &parsed).ok());
  v1::GridRequest message;
  ASSERT_TRUE(ParseRequest(parsed, &message).ok());
  EXPECT_EQ(message.prompt(), "Sneaker");
  EXPECT_EQ(message.seed(), 7u);

  v1::GridRequest bad;
  bad.set_model(kPlaceholder);
  grpc::Slice bad_slice(WithInvalidUtf8(bad));
  grpc::ByteBuffer bad_buffer(&bad_slice, 1);
  ParsedRequest<v1::GridRequest> kept;
  ASSERT_TRUE(Traits::Deserialize(&bad_buffer, &kept).ok());  // not parsed yet
  const grpc::Status status = ParseRequest(kept, &message);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "model: is not valid UTF-8");
}

}  // namespace
}  // namespace dgrid
