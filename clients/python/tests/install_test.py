#!/usr/bin/python3
"""The client installs the way Python packages install: `pip install` of
clients/python into a fresh virtual environment, offline (Debian's grpcio
and protobuf come from the system site packages), with its generated stubs
inside the package; the installed client, run from outside the source tree
with no PYTHONPATH, makes a grid on a live stack."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
from live_stack import LiveStack  # noqa: E402

GRID = """
import sys
import dgrid_client
from dgrid_client import Client
with Client(sys.argv[1]) as client:
    grid = client.create_grid(seed=3, steps=6, branches=2, branch_steps=[0, 3])
    print(dgrid_client.__file__)
    print(len(grid.rows), len(grid.rows[0].cells), len(grid.trunk.png) > 0)
"""


class InstallTest(unittest.TestCase):
    def test_pip_install_into_a_fresh_venv_makes_a_grid(self):
        with tempfile.TemporaryDirectory() as tmp:
            # A copy of what pip needs (the package and the protos), so the
            # build leaves nothing in the source tree.
            source = os.path.join(tmp, "src")
            shutil.copytree(os.path.join(REPO, "clients", "python"),
                            os.path.join(source, "clients", "python"),
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__",
                                                          "tests"))
            shutil.copytree(os.path.join(REPO, "proto"), os.path.join(source, "proto"))
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                           check=True)
            python = os.path.join(venv, "bin", "python")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            installed = subprocess.run(
                [python, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                 "--disable-pip-version-check", os.path.join(source, "clients", "python")],
                env=env, capture_output=True, text=True)
            self.assertEqual(installed.returncode, 0, installed.stdout + installed.stderr)
            with LiveStack() as stack:
                ran = subprocess.run([python, "-c", GRID, stack.orchestrator], cwd=tmp, env=env,
                                     capture_output=True, text=True, timeout=300)
            self.assertEqual(ran.returncode, 0, ran.stderr)
            where, shape = ran.stdout.strip().splitlines()
            self.assertTrue(where.startswith(venv), where)  # the installed copy
            self.assertEqual(shape, "2 2 True")


if __name__ == "__main__":
    unittest.main()
