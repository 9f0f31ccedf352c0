"""Python client for Diffusion Grid's orchestrator (dgrid.v1.Orchestrator).

See clients/python/README.md. The generated stubs (dgrid.v1.*_pb2) come from
the build: put ``<build>/python`` and ``clients/python`` on PYTHONPATH.
"""

from .client import MAX_MESSAGE_BYTES, Client, DgridError, EventStream
from .types import (
    PNG_MAGIC,
    Cell,
    Curve,
    CurveDone,
    CurveEvent,
    CurveProgress,
    CurveRow,
    Estimate,
    Grid,
    GridDone,
    GridEvent,
    HeadCurve,
    Model,
    Path,
    Plan,
    Row,
    SamplerDefaults,
    Segment,
    TrunkProgress,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PNG_MAGIC",
    "Cell",
    "Client",
    "Curve",
    "CurveDone",
    "CurveEvent",
    "CurveProgress",
    "CurveRow",
    "Estimate",
    "EventStream",
    "DgridError",
    "Grid",
    "GridDone",
    "GridEvent",
    "Model",
    "Path",
    "Plan",
    "Row",
    "HeadCurve",
    "SamplerDefaults",
    "Segment",
    "TrunkProgress",
]
