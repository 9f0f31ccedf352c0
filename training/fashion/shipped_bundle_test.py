#!/usr/bin/python3
"""The committed bundle, models/fashion-mnist, as a user meets it.

    /usr/bin/python3 training/fashion/shipped_bundle_test.py BUILD_DIR [BUNDLE]

Its manifest is valid and names the files it ships, which stay small enough
to commit; model.pt and classifier.pt take and give the shapes the bundle
format promises; the classifier (the bundle's judge) still classifies real
test images; and 30 samples drawn by the real denoiser at the shipped
defaults mostly show the requested class, as the judge sees it
(tools/evaluate_bundle.py through the real pair). BUNDLE defaults to the
shipped one; pass a retrained bundle to check it before replacing it.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build")
BUNDLE = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "models", "fashion-mnist")
sys.path[:0] = [HERE, os.path.join(ROOT, "tools")]
import bundle_manifest  # noqa: E402
import fashion_model as fm  # noqa: E402

HAVE_DATA = os.path.exists(os.path.join(fm.DEFAULT_DATA_DIR, "t10k-images-idx3-ubyte.gz"))


class ShippedBundleTest(unittest.TestCase):
    def setUp(self):
        self.m = bundle_manifest.read_manifest(os.path.join(BUNDLE, "manifest.json"))

    def test_manifest_names_its_files_and_they_fit_the_repository(self):
        m = self.m
        self.assertEqual(m["name"], "fashion-mnist")
        self.assertEqual(m["conditioning"]["class_labels"], fm.CLASS_LABELS)
        self.assertEqual(m["data"]["license"], "MIT")
        self.assertEqual(m["classifier"], "classifier.pt")
        self.assertEqual(m["judge"], {"weights": "classifier.pt", "heads": [
            {"name": "class", "output": 0, "labels": fm.CLASS_LABELS}]})
        for name in (m["weights"], m["classifier"]):
            self.assertTrue(os.path.isfile(os.path.join(BUNDLE, name)), name)
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, files in os.walk(BUNDLE) for f in files)
        self.assertLess(size, 20 << 20, "the bundle is committed; keep it under 20 MB")

    def test_networks_have_the_bundle_signatures(self):
        unet = torch.jit.load(os.path.join(BUNDLE, self.m["weights"])).eval()
        self.assertEqual(sum(p.numel() for p in unet.parameters()),
                         int(self.m["training"]["parameters"]))
        x = torch.randn(3, 1, 28, 28)
        cond = torch.tensor([0, 9, fm.NUM_CLASSES])  # the last: the null label
        with torch.no_grad():
            for t in (torch.tensor([1, 500, 999]), torch.tensor([1.0, 500.0, 999.0])):
                eps = unet(x, t, cond)
                self.assertEqual(eps.shape, x.shape)
                self.assertTrue(torch.isfinite(eps).all())
            logits, features = torch.jit.load(os.path.join(BUNDLE, "classifier.pt"))(x)
        self.assertEqual((logits.shape, features.shape), ((3, 10), (3, fm.FEATURES)))

    @unittest.skipUnless(HAVE_DATA, "dataset-fashion-mnist is not installed")
    def test_judge_classifies_real_test_images(self):
        images, labels = fm.load_split(fm.DEFAULT_DATA_DIR, "t10k", 1000)
        net = torch.jit.load(os.path.join(BUNDLE, "classifier.pt")).eval()
        with torch.no_grad():
            logits, _ = net(fm.to_unit_range(images))
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        # classifier.json: 0.925 on all 10,000.
        self.assertGreater(accuracy, 0.85)

    def test_samples_at_the_defaults_show_the_requested_class(self):
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate_bundle.py"),
                            f"--bundle={BUNDLE}", f"--build={BUILD}", f"--out={out}",
                            "--trunks=0", "--grids_per_class=1", "--branches=2", "--threads=2"],
                           check=True, timeout=240, stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "eval.json")) as f:
                head = json.load(f)["accuracy"]["heads"]["class"]
        self.assertEqual(head["samples"], 30)
        # Chance is 0.1; the shipped weights: 26 of 30 here, 0.94 of 1,000.
        self.assertGreaterEqual(head["accuracy"], 0.7, head)


if __name__ == "__main__":
    unittest.main()
