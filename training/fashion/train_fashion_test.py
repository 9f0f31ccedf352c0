#!/usr/bin/python3
"""CI's smoke test of the Fashion-MNIST trainer (about 25 s on 2 idle cores).

    /usr/bin/python3 training/fashion/train_fashion_test.py BUILD_DIR

Trains the classifier and the denoiser 16 steps on 256 images into a
temporary folder and exports the bundle, then checks what a user would:
the loss falls; the manifest has the shipped bundle's fields and the
weights' hash as its version; a run stopped and resumed ends with the
weights of an unbroken one, denoiser and classifier; and the real
dgrid-denoiser (BUILD_DIR/bin) loads the bundle, judge included, and draws a
grid from it through the orchestrator. Skips without Debian's
dataset-fashion-mnist.
"""
import csv
import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build")
sys.path[:0] = [HERE, os.path.join(ROOT, "tools"), os.path.join(BUILD, "python"),
                os.path.join(ROOT, "clients", "python"),
                os.path.join(ROOT, "clients", "python", "tests")]
import bundle_manifest  # noqa: E402
import fashion_model as fm  # noqa: E402

SHIPPED = os.path.join(ROOT, "models", "fashion-mnist")
# 256 images at batch 16: 16 steps an epoch, stopped after the first.
FLAGS = ["--limit_images", "256", "--batch", "16", "--epochs", "2", "--classifier_epochs", "1",
         "--max_steps", "16", "--log_every", "2"]


def train(*args):
    subprocess.run([sys.executable, os.path.join(HERE, "train_fashion.py"), *FLAGS, *args],
                   check=True, timeout=240, stdout=subprocess.DEVNULL)


HAVE_DATA = os.path.exists(os.path.join(fm.DEFAULT_DATA_DIR, "train-images-idx3-ubyte.gz"))


@unittest.skipUnless(HAVE_DATA, "dataset-fashion-mnist is not installed")
class TrainFashionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dgrid-train-fashion-")
        cls.run_dir = os.path.join(cls.tmp.name, "run")
        cls.bundle = os.path.join(cls.tmp.name, "bundle")
        train("all", "--run", cls.run_dir, "--out", cls.bundle)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_loss_falls(self):
        with open(os.path.join(self.bundle, "loss.csv")) as f:
            losses = [float(row["loss"]) for row in csv.DictReader(f)]
        self.assertEqual(len(losses), 8)
        self.assertLess(losses[-1], 0.6 * losses[0], losses)
        if importlib.util.find_spec("matplotlib"):  # without it, export skips the plot
            with open(os.path.join(self.bundle, "loss.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_manifest_has_the_shipped_contract(self):
        m = bundle_manifest.read_manifest(os.path.join(self.bundle, "manifest.json"))
        shipped = bundle_manifest.read_manifest(os.path.join(SHIPPED, "manifest.json"))
        self.assertEqual(set(m), set(shipped))
        self.assertEqual(set(m["training"]), set(shipped["training"]))
        for key in ("name", "latent_shape", "image_shape", "weights", "timestep_dtype",
                    "schedule", "conditioning", "decoder", "data", "classifier", "judge"):
            self.assertEqual(getattr(bundle_manifest.check_manifest(m), key),
                             getattr(bundle_manifest.check_manifest(shipped), key), key)
        self.assertEqual(m["training"]["parameters"], 667201)
        self.assertEqual(m["training"]["epochs"], 1)  # max_steps ends it after one

    def test_resumed_run_ends_where_an_unbroken_one_does(self):
        resumed = os.path.join(self.tmp.name, "resumed")
        train("diffusion", "--run", resumed, "--stop_after", "6")
        self.assertEqual(torch.load(os.path.join(resumed, "diffusion.ckpt"))["step"], 6)
        train("diffusion", "--run", resumed)
        a = torch.load(os.path.join(self.run_dir, "diffusion.ckpt"))
        b = torch.load(os.path.join(resumed, "diffusion.ckpt"))
        self.assertEqual(b["step"], 16)
        for name, value in a["ema"].items():
            torch.testing.assert_close(b["ema"][name], value, msg=name)

    def test_resumed_classifier_ends_where_an_unbroken_one_does(self):
        # Two epochs of 16 steps; the stopped run checkpoints after the first.
        two = ["--classifier_epochs", "2", "--max_steps", "32"]
        whole = os.path.join(self.tmp.name, "classifier_whole")
        train("classifier", "--run", whole, *two)
        resumed = os.path.join(self.tmp.name, "classifier_resumed")
        train("classifier", "--run", resumed, *two, "--stop_after", "16")
        self.assertEqual(torch.load(os.path.join(resumed, "classifier.ckpt"))["step"], 16)
        train("classifier", "--run", resumed, *two)
        a = torch.load(os.path.join(whole, "classifier.ckpt"))
        b = torch.load(os.path.join(resumed, "classifier.ckpt"))
        self.assertEqual((a["step"], b["step"]), (32, 32))
        for name, value in a["model"].items():
            torch.testing.assert_close(b["model"][name], value, rtol=0, atol=0, msg=name)

    def test_export_names_the_version_by_the_weights(self):
        m = bundle_manifest.read_manifest(os.path.join(self.bundle, "manifest.json"))
        ema = fm.UNet()
        ema.load_state_dict(torch.load(os.path.join(self.run_dir, "diffusion.ckpt"))["ema"])
        self.assertEqual(m["version"], bundle_manifest.weights_version([ema]))
        # The same weights exported elsewhere: the same version.
        again = os.path.join(self.tmp.name, "exported_again")
        train("export", "--run", self.run_dir, "--out", again)
        self.assertEqual(bundle_manifest.read_manifest(os.path.join(again, "manifest.json"))["version"],
                         m["version"])

    def test_denoiser_serves_the_bundle(self):
        import dgrid_client
        from live_stack import LiveStack
        with LiveStack(self.bundle, bins=os.path.join(BUILD, "bin")) as stack:
            with dgrid_client.Client(stack.orchestrator) as client:
                client.wait_ready(60)
                model = [m for m in client.list_models() if m.name == "fashion-mnist"][0]
                self.assertEqual(list(model.prompts), fm.CLASS_LABELS)
                self.assertEqual(model.judge_heads, ("class",))
                grid = client.create_grid(prompt="trouser", seed=1, steps=4, branches=1,
                                          branch_steps=[0], model="fashion-mnist")
        self.assertEqual(len(grid.cells), 1)
        for cell in (grid.trunk,) + grid.cells:
            self.assertTrue(cell.png.startswith(b"\x89PNG\r\n\x1a\n"))


if __name__ == "__main__":
    unittest.main()
