"""The generated protobuf/gRPC modules, with a readable error when missing.

An installed client (`pip install ./clients/python`) carries its own, built
into dgrid_client._proto; in the source tree they come from the build
(clients/python/CMakeLists.txt generates them into ``<build>/python``; put it
on PYTHONPATH).
"""

from __future__ import annotations

try:
    from ._proto.dgrid.v1 import denoiser_pb2, orchestrator_pb2, orchestrator_pb2_grpc
except ImportError:
    try:
        from dgrid.v1 import denoiser_pb2, orchestrator_pb2, orchestrator_pb2_grpc
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "dgrid_client needs the generated stubs: install it (pip install ./clients/python), "
            "or build the 'dgrid_python_stubs' target (cmake --build build --target "
            "dgrid_python_stubs) and put build/python on PYTHONPATH "
            f"(original error: {e})"
        ) from e

__all__ = ["denoiser_pb2", "orchestrator_pb2", "orchestrator_pb2_grpc"]
