// Trains the real denoiser for a few steps on a 512-image subset and checks
// what a user of the bundle would: the loss went down, and the exported
// model.pt loads with torch::jit::load and maps (x, t, cond) to eps of x's
// shape, for class labels and for the null label.
#include <torch/script.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "dataset.h"
#include "gtest/gtest.h"
#include "trainer.h"

namespace dgrid::training {
namespace {

namespace fs = std::filesystem;

TEST(TrainerSmokeTest, FewStepsLowerLossAndWriteLoadableBundle) {
  if (!fs::exists(std::string(kDefaultDataDir) + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  const fs::path dir = fs::temp_directory_path() / "dgrid_training_smoke";
  fs::remove_all(dir);

  DiffusionTrainOptions o;
  o.out_dir = dir.string();
  o.limit_images = 512;
  o.batch = 32;
  o.epochs = 3;  // 16 steps per epoch: exports at steps 16 and 30
  o.max_steps = 30;
  o.log_every = 2;
  o.lr = 2e-3;
  o.threads = 2;
  o.measure_iters = 3;
  o.checkpoint_every = 20;
  absl::StatusOr<DiffusionTrainResult> r = TrainDiffusion(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 30);
  // The untrained net predicts eps = 0 (zero-initialised output), loss ~1.
  EXPECT_GT(r->first_loss, 0.5);
  EXPECT_LT(r->final_loss, 0.6 * r->first_loss)
      << "first " << r->first_loss << " final " << r->final_loss;
  EXPECT_GT(r->ms_per_image_b32, 0);

  for (const char* f : {"model.pt", "manifest.json", "loss.csv", "loss.png", "checkpoint.pt"}) {
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  }
  {
    torch::jit::Module m = torch::jit::load((dir / "model.pt").string());
    m.eval();
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({3, 1, 28, 28});
    torch::Tensor eps = m.forward({x, torch::tensor({1, 500, 999}), torch::tensor({0, 9, 10})})
                            .toTensor();
    EXPECT_EQ(eps.sizes(), x.sizes());
    EXPECT_EQ(eps.dtype(), torch::kFloat32);
    EXPECT_TRUE(torch::isfinite(eps).all().item<bool>());
    // Timesteps as float work too (the manifest allows either dtype).
    torch::Tensor eps_f =
        m.forward({x, torch::tensor({1.0f, 500.0f, 999.0f}), torch::tensor({0, 9, 10})}).toTensor();
    EXPECT_TRUE(torch::allclose(eps, eps_f));
  }

  // Resuming from the step-30 checkpoint with a larger budget continues.
  o.resume = true;
  o.max_steps = 34;
  r = TrainDiffusion(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 34);

  // Resuming a finished run trains nothing and writes the bundle again,
  // naming the one machine that trained it.
  fs::remove(dir / "model.pt");
  r = TrainDiffusion(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 34);
  EXPECT_TRUE(fs::exists(dir / "model.pt"));
  std::ifstream in(dir / "manifest.json");
  const std::string manifest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(manifest.find("\"hardware\""), std::string::npos) << manifest;
  EXPECT_EQ(manifest.find("; then"), std::string::npos) << manifest;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dgrid::training
