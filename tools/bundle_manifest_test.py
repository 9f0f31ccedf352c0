#!/usr/bin/python3
"""The Python manifest reader and writer against the contract, and the one
Python schedule formula against diffusers' definitions. The C++ reader reads
what this writer writes in every fixture bundle (tests/fixtures), which the
engine and process tests load."""

import math
import os
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bundle_manifest as bm  # noqa: E402

MANIFEST = {
    "name": "tiny",
    "version": "3",
    "latent_shape": [1, 4, 4],
    "image_shape": [4, 4, 1],
    "weights": "model.pt",
    "schedule": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                 "train_timesteps": 1000, "set_alpha_to_one": False},
    "conditioning": {"kind": "class", "null_label": 2, "class_labels": ["low", "high"]},
    "decoder": {"kind": "identity", "value_range": [-1, 1]},
    "defaults": {"steps": 20, "eta": 1.0, "guidance": 2.0, "spacing": "leading"},
}


class ManifestTest(unittest.TestCase):
    def test_round_trip(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "manifest.json")
            bm.write_manifest(path, MANIFEST)
            self.assertEqual(bm.read_manifest(path), MANIFEST)
            message = bm.check_manifest(bm.read_manifest(path))
            self.assertEqual(list(message.latent_shape), [1, 4, 4])
            self.assertFalse(message.schedule.set_alpha_to_one.value)

    def test_a_field_the_contract_lacks_is_refused_by_name(self):
        bad = dict(MANIFEST, latent_shap=[1, 4, 4])
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(ValueError, "latent_shap"):
                bm.write_manifest(os.path.join(d, "manifest.json"), bad)
            self.assertFalse(os.path.exists(os.path.join(d, "manifest.json")))
        with self.assertRaisesRegex(ValueError, "manifest"):
            bm.check_manifest(dict(MANIFEST, latent_shape="wide"))

    def test_text_the_denoiser_would_refuse_is_refused_here(self):
        # A licence given on the importer's command line went out unchecked,
        # and the denoiser then refused the bundle at startup.
        for bad, says in (
                (dict(MANIFEST, data={"license": "x" * 200}),
                 "data.license: is 200 bytes, more than 128"),
                (dict(MANIFEST, data={"license": "MIT\x1b[2J"}), "data.license: holds a control"),
                (dict(MANIFEST, description="a\x07b"), "description: holds a control"),
                (dict(MANIFEST, conditioning={"example_prompts": ["a cat", "a \ufdd0 cat"]}),
                 "example_prompts\\[1\\]: holds the noncharacter U\\+FDD0"),
                (dict(MANIFEST, conditioning={"example_prompts": ["a" + "\u0301" * 31]}),
                 "example_prompts\\[0\\]: more than 30 combining marks in a row")):
            with self.assertRaisesRegex(ValueError, says):
                bm.check_manifest(bad)
        bm.check_manifest(dict(MANIFEST, description="one\r\ntwo\tthree"))

    def test_schedules_are_diffusers(self):
        linear = bm.alphas_cumprod({"beta_schedule": "linear", "beta_start": 1e-4,
                                    "beta_end": 0.02, "train_timesteps": 1000})
        self.assertEqual(linear.dtype, torch.float64)
        self.assertAlmostEqual(float(linear[0]), 1 - 1e-4, places=12)
        self.assertAlmostEqual(float(linear[1]), (1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)),
                               places=12)
        scaled = bm.alphas_cumprod({"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                    "beta_end": 0.012, "train_timesteps": 1000})
        self.assertAlmostEqual(float(scaled[0]), 1 - 0.00085, places=12)
        self.assertAlmostEqual(float(scaled[-1]), 0.00466, places=5)  # SD 1.x: 0.0047
        cosine = bm.alphas_cumprod({"beta_schedule": "squaredcos_cap_v2",
                                    "train_timesteps": 1000})
        f0 = math.cos(0.008 / 1.008 * math.pi / 2) ** 2
        f1 = math.cos((1 / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
        self.assertAlmostEqual(float(cosine[0]), f1 / f0, places=12)
        with self.assertRaisesRegex(ValueError, "beta_schedule"):
            bm.alphas_cumprod({"beta_schedule": "quadratic"})


if __name__ == "__main__":
    unittest.main()
