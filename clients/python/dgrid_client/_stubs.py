"""The generated protobuf/gRPC modules, with a readable error when missing.

The stubs are generated at build time (clients/python/CMakeLists.txt) into
``<build>/python/dgrid/v1``; put ``<build>/python`` on PYTHONPATH.
"""

from __future__ import annotations

try:
    from dgrid.v1 import denoiser_pb2, orchestrator_pb2, orchestrator_pb2_grpc
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dgrid_client needs the generated stubs dgrid.v1.*_pb2: build the "
        "'dgrid_python_stubs' target (cmake --build build --target dgrid_python_stubs) "
        "and put build/python on PYTHONPATH "
        f"(original error: {e})"
    ) from e

__all__ = ["denoiser_pb2", "orchestrator_pb2", "orchestrator_pb2_grpc"]
