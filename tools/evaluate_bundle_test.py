#!/usr/bin/python3
"""tools/evaluate_bundle.py on the shipped fashion-mnist bundle through the
real pair, small: 4 curve trunks and 40 conditioned samples at 20 steps.
Checks the report's shape and that its figures are sane (a model that drew
noise would score chance). Also the statistics it computes, on known inputs.

    /usr/bin/python3 tools/evaluate_bundle_test.py [BUILD_DIR]
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.abspath(sys.argv.pop(1)) if len(sys.argv) > 1 else os.path.join(ROOT, "build")
sys.path.insert(0, HERE)
import evaluate_bundle as eb  # noqa: E402

BUNDLE = os.path.join(ROOT, "models", "fashion-mnist")
REFERENCE = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
TRUNKS, ROWS, BRANCHES = 4, [0, 5, 10, 15], 3


class Statistics(unittest.TestCase):
    def test_frechet_of_a_shift_is_its_squared_length(self):
        rng = np.random.default_rng(1)
        a = rng.standard_normal((4000, 3))
        a -= a.mean(0)
        self.assertAlmostEqual(eb.frechet(a, a), 0.0, places=6)
        self.assertAlmostEqual(eb.frechet(a, a + [3.0, 4.0, 0.0]), 25.0, places=6)
        # Same mean, covariances C and 4C: tr C + tr 4C - 2 tr 2C = tr C.
        self.assertAlmostEqual(eb.frechet(a, 2 * a), np.trace(np.cov(a.T)), places=6)

    def test_accuracy_error_is_over_groups(self):
        hits = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
        groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
        figures = eb.grouped_accuracy(hits, groups)
        self.assertEqual(figures["accuracy"], 0.5)
        self.assertEqual(figures["groups"], 2)
        self.assertAlmostEqual(figures["standard_error"], 0.5, places=4)

    def test_prompt_names_labels(self):
        heads = [{"name": "subcategory", "labels": ["face-smiling", "flag"]},
                 {"name": "style", "labels": ["noto", "twemoji"]}]
        self.assertEqual(eb.expected_labels("grinning face, noto", heads), {"style": "noto"})
        self.assertEqual(eb.expected_labels("Flag", heads), {"subcategory": "flag"})
        self.assertEqual(eb.expected_labels("a cat", heads, {"subcategory": "flag"}),
                         {"subcategory": "flag"})
        # A head or label the judge lacks scored every sample a miss (or
        # nothing): named instead.
        with self.assertRaisesRegex(ValueError, "expect: style has no label 'Noto'"):
            eb.expected_labels("a cat", heads, {"style": "Noto"})
        with self.assertRaisesRegex(ValueError, "expect: the judge has no head 'Style'"):
            eb.expected_labels("a cat", heads, {"Style": "noto"})

    def test_one_group_has_no_standard_error_and_the_report_stays_json(self):
        figures = eb.grouped_accuracy(np.array([1, 0, 1], bool), np.array([0, 0, 0]))
        self.assertIsNone(figures["standard_error"])
        json.loads(json.dumps(figures, allow_nan=False))

    def test_a_manifest_is_read_as_the_denoiser_reads_it(self):
        # lowerCamelCase keys and no image_shape: a KeyError before, and
        # valueRange silently read as [-1, 1].
        with open(os.path.join(BUNDLE, "manifest.json"), encoding="utf-8") as f:
            shipped = json.load(f)
        camel = {("latentShape" if k == "latent_shape" else k): v for k, v in shipped.items()
                 if k != "image_shape"}
        camel["decoder"] = dict(shipped["decoder"], valueRange=[0, 1])
        camel["decoder"].pop("value_range", None)
        with tempfile.TemporaryDirectory() as bundle:
            with open(os.path.join(bundle, "manifest.json"), "w", encoding="utf-8") as f:
                json.dump(camel, f)
            manifest = eb.served_manifest(bundle)
        c, h, w = shipped["latent_shape"]
        self.assertEqual([int(n) for n in manifest["image_shape"]], [int(h), int(w), int(c)])
        self.assertEqual(manifest["decoder"]["value_range"], [0, 1])
        self.assertEqual([(h["name"], h["labels"]) for h in manifest["judge"]["heads"]],
                         [(h["name"], h["labels"]) for h in shipped["judge"]["heads"]])


class ShippedBundle(unittest.TestCase):
    def test_report(self):
        with tempfile.TemporaryDirectory() as out:
            argv = [sys.executable, os.path.join(HERE, "evaluate_bundle.py"),
                    f"--bundle={BUNDLE}", f"--build={BUILD}", f"--out={out}",
                    f"--trunks={TRUNKS}", "--steps=20",
                    f"--curve_branch_steps={','.join(map(str, ROWS))}",
                    "--grids_per_class=1", f"--branches={BRANCHES}"]
            if os.path.exists(REFERENCE):
                argv += [f"--reference={REFERENCE}", "--reference_images=1000"]
            subprocess.run(argv, check=True, timeout=90, stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "eval.json")) as f:
                report = json.load(f)
            with open(os.path.join(out, "eval.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        self.assertEqual(report["model"], "fashion-mnist")
        curve = report["decision_curve"]
        self.assertEqual(curve["trunks"], TRUNKS)
        self.assertEqual([r["branch_step"] for r in curve["rows"]], ROWS)
        # Every trunk's final and every cell of every grid.
        self.assertEqual(curve["judged_images"], TRUNKS * (1 + len(ROWS) * curve["branches"]))
        p = curve["heads"]["class"]["p_differs"]
        self.assertEqual(len(p), len(ROWS))
        for e in p:
            self.assertTrue(0 <= e["mean"] <= 1 and e["standard_error"] >= 0, e)
        # Branches that share only x_T change class far more often than the
        # ones that leave three quarters of the way down.
        self.assertGreater(p[0]["mean"], p[-1]["mean"])
        for r in curve["rows"]:
            self.assertGreater(r["divergence"]["mean"], 0)

        acc = report["accuracy"]
        self.assertEqual(acc["samples"], 10 * (BRANCHES + 1))
        self.assertEqual(acc["sampler"]["steps"], 20)
        head = acc["heads"]["class"]
        self.assertEqual((head["samples"], head["groups"], head["chance"]), (40, 10, 0.1))
        # Chance is 0.1; the bundle measures 0.94 at 50 steps.
        self.assertGreater(head["accuracy"], 0.5)
        self.assertIn("cpu", report["hardware"])
        if os.path.exists(REFERENCE):
            fd = report["frechet"]
            self.assertEqual((fd["samples"], fd["reference_images"]), (40, 1000))
            self.assertGreater(fd["vs_reference"], 0)
            self.assertGreater(fd["floor_reference_subset_vs_rest"], 0)


if __name__ == "__main__":
    unittest.main()
