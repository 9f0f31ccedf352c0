// Builds a network as a TorchScript module from C++: flat parameter tensors
// plus generated TorchScript source that uses functional ops. LibTorch C++
// cannot script a torch::nn::Module, but a torch::jit::Module built this way
// trains with autograd like any other, and `save()` writes an archive that
// torch::jit::load and Python's torch.jit.load both read.
//
//   ScriptNetBuilder b(/*seed=*/1, ComputeType::kFloat32);
//   b.AddConv("conv", 1, 8, 3);
//   b.Line("return " + b.Conv("x", "conv", 1, 1));
//   absl::StatusOr<torch::jit::Module> m = MakeScriptModule(
//       "Net", b.params(), b.Source("def forward(self, x):\n"), /*requires_grad=*/true);
//
// The same emitter run with ComputeType::kBFloat16 gives a training graph
// that casts each parameter to bfloat16 on use (fp32 master weights, as in
// mixed-precision training) while normalisation statistics stay in fp32.
#ifndef DGRID_TRAINING_SCRIPT_NET_H_
#define DGRID_TRAINING_SCRIPT_NET_H_

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dgrid::training {

enum class ComputeType { kFloat32, kBFloat16 };

struct NamedTensor {
  std::string name;
  torch::Tensor value;
};

class ScriptNetBuilder {
 public:
  ScriptNetBuilder(uint64_t seed, ComputeType compute);

  // Parameters. Initialisation follows PyTorch's defaults (uniform in
  // ±1/sqrt(fan_in)); `zero` starts a layer at zero, as DDPM does for the last
  // conv of each residual branch so that every block starts as the identity.
  void AddConv(const std::string& name, int64_t cin, int64_t cout, int64_t k, bool zero = false);
  void AddLinear(const std::string& name, int64_t in, int64_t out, bool zero = false);
  void AddGroupNorm(const std::string& name, int64_t channels);
  // An embedding table [rows, dim], normal with std 0.02.
  void AddEmbedding(const std::string& name, int64_t rows, int64_t dim);
  void AddTensor(const std::string& name, torch::Tensor value);

  // Expressions over parameters registered above. Under kBFloat16 their
  // inputs are bfloat16 tensors and so are their results.
  std::string Param(const std::string& name) const;
  std::string Conv(const std::string& x, const std::string& name, int stride, int padding) const;
  std::string Linear(const std::string& x, const std::string& name) const;
  // GroupNorm then SiLU; statistics in fp32 whatever the compute type.
  std::string NormSilu(const std::string& x, const std::string& name, int groups) const;
  // Casts a float32 tensor to the compute type, and back.
  std::string ToCompute(const std::string& x) const;
  std::string ToFloat(const std::string& x) const;

  // Appends one line to the method body (indented for you).
  void Line(const std::string& code);

  const std::vector<NamedTensor>& params() const { return params_; }
  int64_t parameter_count() const;

  // The method: `header` (its `def ...:` line) and the lines so far.
  std::string Source(const std::string& header) const;

 private:
  torch::Tensor Uniform(std::vector<int64_t> shape, double bound);

  ComputeType compute_;
  torch::Generator gen_;
  std::vector<NamedTensor> params_;
  std::vector<std::string> lines_;
};

// Registers `params` (requires_grad as given) on a new module named
// `type_name` and compiles `source` into it. Compile errors come back as a
// Status, not an exception.
absl::StatusOr<torch::jit::Module> MakeScriptModule(const std::string& type_name,
                                                    const std::vector<NamedTensor>& params,
                                                    const std::string& source,
                                                    bool requires_grad);

// The module's parameter tensors in registration order (the same tensors
// the module computes with: updating them in place updates the module).
std::vector<torch::Tensor> ModuleParameters(const torch::jit::Module& module,
                                            const std::vector<NamedTensor>& spec);

}  // namespace dgrid::training

#endif  // DGRID_TRAINING_SCRIPT_NET_H_
