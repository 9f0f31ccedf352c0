// The engine names RunRequest's fields; a client sees the names of the
// request it sent, message and code otherwise as the engine wrote them.
#include "denoiser_service/server/wire_fields.h"

#include "denoiser_service/engine/field_error.h"
#include "gtest/gtest.h"

namespace dgrid {
namespace {

TEST(WireFieldsTest, RunRequestFieldsGetTheWiresNames) {
  const struct {
    const char* run_field;
    DenoiserRpc rpc;
    const char* wire_field;
  } cases[] = {
      {"class_index", DenoiserRpc::kBranch, "conditioning.class_index"},
      {"prompt", DenoiserRpc::kBranch, "conditioning.prompt"},
      {"negative_prompt", DenoiserRpc::kStep, "conditioning.negative_prompt"},
      {"trajectories[12].latent", DenoiserRpc::kBranch, "trajectories[12].start_latent"},
      {"start_step", DenoiserRpc::kStep, "step"},
      {"end_step", DenoiserRpc::kStep, "step"},
      // The same on both sides.
      {"start_step", DenoiserRpc::kBranch, "start_step"},
      {"end_step", DenoiserRpc::kBranch, "end_step"},
      {"sampler.steps", DenoiserRpc::kBranch, "sampler.steps"},
      {"capture_steps[3]", DenoiserRpc::kBranch, "capture_steps[3]"},
      {"trajectories", DenoiserRpc::kBranch, "trajectories"},
      {"trajectories[1].path.segments[2].conditioning.class_index", DenoiserRpc::kBranch,
       "trajectories[1].path.segments[2].conditioning.class_index"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(WireFieldName(c.run_field, c.rpc), c.wire_field) << c.run_field;
  }
}

TEST(WireFieldsTest, AnEngineErrorReachesTheClientUnderTheWiresName) {
  const absl::Status engine =
      InvalidFieldError("trajectories[1].latent", " holds a non-finite value (NaN or Inf)");
  EXPECT_EQ(engine.message(), "trajectories[1].latent holds a non-finite value (NaN or Inf)");
  const absl::Status wire = ToWireFields(engine, DenoiserRpc::kBranch);
  EXPECT_EQ(wire.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(wire.message(), "trajectories[1].start_latent holds a non-finite value (NaN or Inf)");

  const absl::Status step = ToWireFields(
      InvalidFieldError("start_step", " must be in [0, 50), got 50"), DenoiserRpc::kStep);
  EXPECT_EQ(step.message(), "step must be in [0, 50), got 50");
}

TEST(WireFieldsTest, ErrorsThatNameNoFieldPassUnchanged) {
  // The engine's own words for "trajectories" and "class_index" inside a
  // message are not touched: only the field it reported is renamed.
  const absl::Status plain =
      absl::InternalError("model produced non-finite output at step 3 for trajectories[0]");
  EXPECT_EQ(ToWireFields(plain, DenoiserRpc::kBranch), plain);
  const absl::Status full = absl::ResourceExhaustedError("denoiser queue is full");
  EXPECT_EQ(ToWireFields(full, DenoiserRpc::kStep), full);
  EXPECT_TRUE(ToWireFields(absl::OkStatus(), DenoiserRpc::kBranch).ok());
}

TEST(WireFieldsTest, ARenamedErrorStillNamesItsField) {
  const absl::Status renamed = RenameErrorField(
      InvalidFieldError("class_index", " must be in [0, 10) for model fashion, got 12"),
      "conditioning.class_index");
  EXPECT_EQ(ErrorField(renamed), "conditioning.class_index");
  EXPECT_EQ(renamed.message(),
            "conditioning.class_index must be in [0, 10) for model fashion, got 12");
  EXPECT_EQ(ErrorField(absl::InvalidArgumentError("class_index bad")), std::nullopt);
}

}  // namespace
}  // namespace dgrid
