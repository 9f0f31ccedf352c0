// Fuzzes grid-request validation and planning: any GridRequest must plan or
// be refused with INVALID_ARGUMENT, and a plan must respect its limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include <google/protobuf/stubs/logging.h>

#include "grid_orchestrator/plan/grid_plan.h"

// protobuf logs every string that is not UTF-8 (an expected refusal here):
// 64 MB of log in two minutes.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dgrid::v1::GridRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  dgrid::v1::ModelInfo model;
  model.set_name("fashion-mnist");
  model.set_train_timesteps(1000);
  model.set_steps_offset(1);
  for (const char* p : {"t-shirt", "sneaker", "bag"}) model.add_prompts(p);
  model.mutable_defaults()->set_guidance(2);
  // Float timesteps or not (Euler ancestral at linspace spacing needs them),
  // from the request's own bytes.
  model.set_float_timesteps(request.seed() % 2 == 1);
  const dgrid::PlanLimits limits;
  auto plan = dgrid::PlanGrid(request, model, limits);
  if (!plan.ok()) {
    if (plan.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (plan->rows.empty() || static_cast<int>(plan->rows.size()) > limits.max_rows ||
      plan->branches > limits.max_branches ||
      plan->model_evals > plan->from_scratch_evals) {
    std::abort();
  }
  for (const auto& row : plan->rows) {
    for (const auto& cell : row.cells) {
      if (!dgrid::ValidatePath(cell, plan->steps, "cell").ok()) std::abort();
    }
  }
  return 0;
}
