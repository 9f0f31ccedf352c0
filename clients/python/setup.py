"""Generates the gRPC stubs into the package as it is built, so that
`pip install ./clients/python` gives a client that needs no build tree:
grpc_tools.protoc (Debian's python3-grpc-tools) over ../../proto, with the
generated imports pointed inside the package. Metadata: pyproject.toml."""

import os
import re
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")
PROTOS = ["tensor", "denoiser", "orchestrator", "manifest"]


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        # Into the build, never the source tree, where a second copy of the
        # modules would meet build/python's in one process.
        out = os.path.join(self.build_lib, "dgrid_client", "_proto")
        v1 = os.path.join(out, "dgrid", "v1")
        os.makedirs(v1, exist_ok=True)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO,
                        f"--python_out={out}", f"--grpc_python_out={out}"]
                       + [os.path.join(PROTO, "dgrid", "v1", f"{p}.proto") for p in PROTOS],
                       check=True)
        for package in (out, os.path.join(out, "dgrid"), v1):
            open(os.path.join(package, "__init__.py"), "a").close()
        # The generated modules import each other as dgrid.v1.*: inside this
        # package they are dgrid_client._proto.dgrid.v1.*.
        for name in os.listdir(v1):
            if not name.endswith(".py"):
                continue
            path = os.path.join(v1, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            text = re.sub(r"^from dgrid\.v1 import", "from dgrid_client._proto.dgrid.v1 import",
                          text, flags=re.M)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)


setup(cmdclass={"build_py": BuildWithStubs})
