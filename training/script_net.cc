#include "script_net.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dgrid::training {
namespace {
// TorchScript compiled from C++ cannot name torch.bfloat16 or
// torch.channels_last; dtypes are plain ints there (c10::ScalarType).
constexpr int kBFloat16 = static_cast<int>(c10::ScalarType::BFloat16);
}  // namespace

ScriptNetBuilder::ScriptNetBuilder(uint64_t seed, ComputeType compute)
    : compute_(compute), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

torch::Tensor ScriptNetBuilder::Uniform(std::vector<int64_t> shape, double bound) {
  torch::Tensor t = torch::empty(shape, torch::kFloat32);
  t.uniform_(-bound, bound, gen_);
  return t;
}

void ScriptNetBuilder::AddConv(const std::string& name, int64_t cin, int64_t cout, int64_t k,
                               bool zero) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(cin * k * k));
  torch::Tensor w = Uniform({cout, cin, k, k}, bound);
  torch::Tensor b = Uniform({cout}, bound);
  if (zero) {
    w.zero_();
    b.zero_();
  }
  AddTensor(name + "_w", w);
  AddTensor(name + "_b", b);
}

void ScriptNetBuilder::AddLinear(const std::string& name, int64_t in, int64_t out, bool zero) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  torch::Tensor w = Uniform({out, in}, bound);
  torch::Tensor b = Uniform({out}, bound);
  if (zero) {
    w.zero_();
    b.zero_();
  }
  AddTensor(name + "_w", w);
  AddTensor(name + "_b", b);
}

void ScriptNetBuilder::AddGroupNorm(const std::string& name, int64_t channels) {
  AddTensor(name + "_w", torch::ones({channels}));
  AddTensor(name + "_b", torch::zeros({channels}));
}

void ScriptNetBuilder::AddEmbedding(const std::string& name, int64_t rows, int64_t dim) {
  torch::Tensor t = torch::empty({rows, dim}, torch::kFloat32);
  t.normal_(0.0, 0.02, gen_);
  AddTensor(name, t);
}

void ScriptNetBuilder::AddTensor(const std::string& name, torch::Tensor value) {
  params_.push_back({name, std::move(value)});
}

std::string ScriptNetBuilder::Param(const std::string& name) const {
  if (compute_ == ComputeType::kBFloat16) return absl::StrCat("self.", name, ".to(", kBFloat16, ")");
  return absl::StrCat("self.", name);
}

std::string ScriptNetBuilder::Conv(const std::string& x, const std::string& name, int stride,
                                   int padding) const {
  return absl::StrCat("torch.conv2d(", x, ", ", Param(name + "_w"), ", ", Param(name + "_b"),
                      ", [", stride, ", ", stride, "], [", padding, ", ", padding, "])");
}

std::string ScriptNetBuilder::Linear(const std::string& x, const std::string& name) const {
  return absl::StrCat("torch.linear(", x, ", ", Param(name + "_w"), ", ", Param(name + "_b"),
                      ")");
}

std::string ScriptNetBuilder::NormSilu(const std::string& x, const std::string& name,
                                       int groups) const {
  // bfloat16 mean/variance lose too much precision, and the CPU kernels for
  // bfloat16 group_norm/silu are slower than fp32 ones: normalise in fp32.
  std::string norm = absl::StrCat("torch.group_norm(", ToFloat(x), ", ", groups, ", self.", name,
                                  "_w, self.", name, "_b, 1e-05, False)");
  return ToCompute(absl::StrCat("torch.silu(", norm, ")"));
}

std::string ScriptNetBuilder::ToCompute(const std::string& x) const {
  if (compute_ == ComputeType::kBFloat16) return absl::StrCat(x, ".to(", kBFloat16, ")");
  return x;
}

std::string ScriptNetBuilder::ToFloat(const std::string& x) const {
  if (compute_ == ComputeType::kBFloat16) return absl::StrCat(x, ".float()");
  return x;
}

void ScriptNetBuilder::Line(const std::string& code) { lines_.push_back(code); }

int64_t ScriptNetBuilder::parameter_count() const {
  int64_t n = 0;
  for (const NamedTensor& p : params_) n += p.value.numel();
  return n;
}

std::string ScriptNetBuilder::Source(const std::string& header) const {
  std::string src = header;
  for (const std::string& line : lines_) absl::StrAppend(&src, "    ", line, "\n");
  return src;
}

absl::StatusOr<torch::jit::Module> MakeScriptModule(const std::string& type_name,
                                                    const std::vector<NamedTensor>& params,
                                                    const std::string& source,
                                                    bool requires_grad) {
  try {
    torch::jit::Module module(type_name);
    for (const NamedTensor& p : params) {
      module.register_parameter(p.name, p.value.detach().clone().set_requires_grad(requires_grad),
                                /*is_buffer=*/false);
    }
    module.define(source);
    return module;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building TorchScript module ", type_name, ": ",
                                            e.what()));
  }
}

std::vector<torch::Tensor> ModuleParameters(const torch::jit::Module& module,
                                            const std::vector<NamedTensor>& spec) {
  std::vector<torch::Tensor> out;
  out.reserve(spec.size());
  for (const NamedTensor& p : spec) out.push_back(module.attr(p.name).toTensor());
  return out;
}

}  // namespace dgrid::training
