#include "unet.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace dgrid::training {
namespace {

// Emits one residual block: norm, conv, add the (time + class) embedding,
// norm, conv. The last conv starts at zero so the block starts as identity,
// which keeps the untrained network's output small and training stable.
void ResBlock(ScriptNetBuilder& b, const UNetConfig& c, const std::string& name,
              const std::string& x, int64_t cin, int64_t cout, int64_t emb_dim) {
  b.AddGroupNorm(name + "_n1", cin);
  b.AddConv(name + "_c1", cin, cout, 3);
  b.AddLinear(name + "_emb", emb_dim, cout);
  b.AddGroupNorm(name + "_n2", cout);
  b.AddConv(name + "_c2", cout, cout, 3, /*zero=*/true);
  b.Line("h = " + b.Conv(b.NormSilu(x, name + "_n1", c.groups), name + "_c1", 1, 1));
  b.Line("h = h + " + b.Linear("emb", name + "_emb") + "[:, :, None, None]");
  b.Line("h = " + b.Conv(b.NormSilu("h", name + "_n2", c.groups), name + "_c2", 1, 1));
  if (cin != cout) {
    b.AddConv(name + "_skip", cin, cout, 1);
    b.Line(absl::StrCat(x, " = ", b.Conv(x, name + "_skip", 1, 0), " + h"));
  } else {
    b.Line(absl::StrCat(x, " = ", x, " + h"));
  }
}

}  // namespace

ScriptNetBuilder BuildUNet(const UNetConfig& c, uint64_t seed, ComputeType compute) {
  ScriptNetBuilder b(seed, compute);
  const int64_t c0 = c.channels.front();
  const int64_t emb_dim = 4 * c0;
  const int64_t half = c.time_features / 2;

  // Timestep and class embedding, in fp32 whatever the compute type: it is a
  // few hundred numbers per image, and sin/cos of t up to 1000 needs the bits.
  b.AddLinear("time1", c.time_features, emb_dim);
  b.AddLinear("time2", emb_dim, emb_dim);
  b.AddEmbedding("class_emb", c.num_classes + 1, emb_dim);
  b.Line(absl::StrCat("freqs = torch.exp(torch.arange(", half, ", dtype=6, device=x.device) * ",
                      -std::log(10000.0) / static_cast<double>(half), ")"));
  b.Line("a = t.to(x.device).float()[:, None] * freqs[None, :]");
  b.Line("emb = torch.cat([torch.sin(a), torch.cos(a)], 1)");
  b.Line("emb = torch.linear(torch.silu(torch.linear(emb, self.time1_w, self.time1_b)), "
         "self.time2_w, self.time2_b)");
  b.Line("emb = torch.silu(emb + torch.index_select(self.class_emb, 0, cond.to(x.device)))");
  b.Line("emb = " + b.ToCompute("emb"));

  b.AddConv("in", 1, c0, 3);
  b.Line("x = " + b.Conv(b.ToCompute("x"), "in", 1, 1));
  int64_t cin = c0;
  const size_t levels = c.channels.size();
  for (size_t i = 0; i < levels; ++i) {
    const int64_t ch = c.channels[i];
    ResBlock(b, c, absl::StrCat("down", i), "x", cin, ch, emb_dim);
    cin = ch;
    b.Line(absl::StrCat("skip", i, " = x"));
    if (i + 1 < levels) {
      b.AddConv(absl::StrCat("downsample", i), ch, ch, 3);
      b.Line("x = " + b.Conv("x", absl::StrCat("downsample", i), 2, 1));
    }
  }
  ResBlock(b, c, "mid", "x", cin, cin, emb_dim);
  for (size_t k = levels; k-- > 0;) {
    const int64_t ch = c.channels[k];
    b.Line(absl::StrCat("x = torch.cat([x, skip", k, "], 1)"));
    ResBlock(b, c, absl::StrCat("up", k), "x", cin + ch, ch, emb_dim);
    cin = ch;
    if (k > 0) {
      // Conv down to the next level's channels at the low resolution, then
      // nearest upsampling to the skip's exact size (7 -> 14 -> 28 needs no
      // padding). Convolving before upsampling costs a quarter of the usual
      // upsample-then-conv, the largest single cost at 28x28; the next
      // block's convs smooth the 2x2 blocks.
      const std::string up = absl::StrCat("upsample", k);
      const int64_t next = c.channels[k - 1];
      b.AddConv(up, ch, next, 3);
      b.Line("x = " + b.Conv("x", up, 1, 1));
      b.Line(absl::StrCat("x = torch.upsample_nearest2d(x, [skip", k - 1, ".shape[2], skip", k - 1,
                          ".shape[3]])"));
      cin = next;
    }
  }
  b.AddGroupNorm("out_norm", cin);
  b.AddConv("out", cin, 1, 3, /*zero=*/true);
  b.Line("x = " + b.Conv(b.NormSilu("x", "out_norm", c.groups), "out", 1, 1));
  b.Line("return " + b.ToFloat("x"));
  return b;
}

absl::StatusOr<torch::jit::Module> MakeUNetModule(const ScriptNetBuilder& net,
                                                  const std::vector<NamedTensor>& params,
                                                  bool requires_grad) {
  return MakeScriptModule("DGridUNet", params,
                          net.Source("def forward(self, x, t, cond):\n"), requires_grad);
}

}  // namespace dgrid::training
