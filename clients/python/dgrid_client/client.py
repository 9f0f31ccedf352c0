"""A small typed client for the Diffusion Grid orchestrator (dgrid.v1.Orchestrator).

    from dgrid_client import Client

    with Client("127.0.0.1:50050") as client:
        grid = client.create_grid(prompt="sneaker", seed=7)
        grid = client.create_grid(prompt="sneaker", seed=7, sampler="euler_ancestral")
        # A text model: free text, and optionally a negative prompt.
        grid = client.create_grid(prompt="a photo of a cat", negative_prompt="blurry", seed=7)
        grid.save_png("grid.png")
        for event in client.stream_grid(prompt="sneaker", seed=7):
            ...  # Plan, TrunkProgress, Cell (as they finish), then GridDone
        promoted = client.promote(grid, row=2, col=3)  # 0-based
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
import os
import re
import struct
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc
from google.protobuf import json_format

from ._stubs import orchestrator_pb2, orchestrator_pb2_grpc
from .types import (
    Cell,
    Curve,
    CurveDone,
    CurveEvent,
    CurveProgress,
    Grid,
    GridDone,
    GridEvent,
    Model,
    Path,
    Plan,
    TrunkProgress,
    branch_noise_name,
    branch_noise_value,
    int_argument,
    sampler_name,
    sampler_value,
    short_repr,
    size_pairs,
    spacing_name,
    spacing_value,
)

# Grids carry several PNGs; allow answers well beyond gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 << 20


class DgridError(Exception):
    """A failed call: ``code`` is the grpc.StatusCode, ``details`` the server's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"{method} failed: {code.name}: {details}")

    def __reduce__(self) -> Any:
        # Pickled as its three arguments: a process pool's worker raises it
        # whole in its parent (the default would call __init__ with one).
        return (type(self), (self.method, self.code, self.details))


def _error(method: str, e: grpc.RpcError, target: str,
           timeout_setting: str = ("the call's timeout=, else Client(default_timeout=...), "
                                   "600 s unless set")) -> DgridError:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    if code == grpc.StatusCode.UNIMPLEMENTED and not details:
        # A server without the method says no more: a denoiser, most likely.
        details = (f"the server at {target} does not serve it (this client talks to an "
                   "orchestrator, not to a denoiser)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
        # gRPC's own words for this client's deadline: say which setting it is.
        details = f"not done within this client's timeout ({timeout_setting})"
    if code == grpc.StatusCode.CANCELLED and details == "Locally cancelled by application!":
        details = "cancelled by this client (the stream's cancel())"
    return DgridError(method, code or grpc.StatusCode.UNKNOWN, details or "")


# The longest finite timeout taken: about 31 years. gRPC turns a deadline
# that overflows its clock (from about 1e10 s) into one already past, and
# threading's waits refuse more than about 9.2e9 s.
_MAX_SECONDS = 1e9


def _seconds(name: str, value: Optional[float]) -> Optional[float]:
    """A timeout: None or infinity (no deadline), or seconds in (0, 1e9]. gRPC
    would take 0 or less as a deadline already past, and fail every call."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected seconds > 0 or None, got {type(value).__name__} "
                        f"{_short(value)}")
    if value == math.inf:
        return None
    if not value > 0:
        raise ValueError(f"{name}: expected seconds > 0 or None, got {value!r}")
    if value > _MAX_SECONDS:
        raise ValueError(f"{name}: expected at most {_MAX_SECONDS:.0e} seconds (None or "
                         f"math.inf: no limit), got {value!r}")
    return float(value)


_short = short_repr


# The ranges of the request's integer fields (proto int32 and uint64).
_INT32 = (-(1 << 31), (1 << 31) - 1)
_UINT64 = (0, (1 << 64) - 1)


def _whole(name: str, value: Any, bounds: Tuple[int, int]) -> int:
    """An argument bound for an integer field: an int (or int-like, as numpy's
    integers are, but not a bool) within the field's range; None is 0, the
    field unset. Protobuf's own refusal would not say which argument it was."""
    if value is None:
        return 0
    number = int_argument(name, value)
    if not bounds[0] <= number <= bounds[1]:
        raise ValueError(f"{name}: {_short(number)} is out of range [{bounds[0]}, {bounds[1]}]")
    return number


def _real(name: str, value: Any) -> float:
    """An argument bound for a float field (eta and guidance are float32 on
    the wire): a real number a float32 holds. NaN and infinities are left to
    the server, which names them; a finite value past float32's range would
    go as infinity, a value the caller never gave."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} "
                        f"{_short(value)}")
    try:
        number = float(value)
        # Python 3.11's struct packs such a value as infinity; an
        # OverflowError (another version's answer) is taken alike.
        if math.isfinite(number) and math.isinf(struct.unpack("f", struct.pack("f", number))[0]):
            raise OverflowError
    except OverflowError:
        raise ValueError(f"{name}: {_short(value)} is out of range for a float") from None
    return number


def _text(name: str, value: Any) -> str:
    """An argument bound for a string field: a str that UTF-8 can carry; None
    is "", the field unset."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {type(value).__name__} {_short(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name}: not valid text: {e.reason} at character {e.start}") from None
    return value


def _pem(name: str, data: Optional[bytes], label: bytes) -> Optional[bytes]:
    """PEM bytes holding a block whose label ends in ``label`` (an EC key's
    "EC PRIVATE KEY" is a private key), as gRPC reads them; None passes.
    gRPC's own refusal is "empty address list" at the first call, after a
    screen of its log."""
    if data is None:
        return None
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"{name}: expected PEM bytes, got {type(data).__name__} {_short(data)}")
    labels = re.findall(rb"-----BEGIN ([^\r\n-]*)-----", data)
    if not any(found.endswith(label) for found in labels):
        raise ValueError(f"{name}: holds no PEM {label.decode().lower()}")
    return bytes(data)


# host:port, [v6]:port, or dns:[//authority/]host:port: a port gRPC would
# take modulo 2^16 (":99999" dialled 34463). Other schemes' names (unix:0,
# a socket path) are not ports.
_HOST_PORT = re.compile(r"(?!(?:unix|unix-abstract|vsock|ipv4|ipv6):)"
                        r"(?:dns:(?://[^/]*/)?)?(?:\[[^\]]*\]|[^:/\[\]]*):(\d+)")


def _target(target: Any) -> str:
    if not isinstance(target, str) or not target:
        raise ValueError(f"target: expected host:port, got {_short(target)}")
    if re.match(r"(?i)https?://", target):
        # gRPC would take it as a DNS name, and fail only at the first call.
        raise ValueError(f"target: expected host:port (a gRPC address, not a URL), got "
                         f"{_short(target)}")
    port = _HOST_PORT.fullmatch(target)
    if port and not 1 <= int(port.group(1)) <= 65535:
        raise ValueError(f"target: port {_short(int(port.group(1)))} is out of range [1, 65535]")
    return target


class _SilenceWatch:
    """Cancels a call when no event has come for ``limit`` seconds, counting
    only the time spent waiting for the server (not while paused: the caller
    holds an event)."""

    def __init__(self, call: Any, limit: float) -> None:
        self._call, self._limit = call, limit
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._paused = False
        self._done = threading.Event()
        self.fired = False
        threading.Thread(target=self._watch, name="dgrid-silence", daemon=True).start()

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def heard(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            self._paused = False

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while True:
            with self._lock:
                due = None if self._paused else self._last + self._limit
            wait = self._limit if due is None else max(0.0, due - time.monotonic())
            if self._done.wait(wait):
                return
            with self._lock:
                if self._paused or time.monotonic() < self._last + self._limit:
                    continue
                self.fired = True
            self._call.cancel()
            return


E = TypeVar("E")


class EventStream(Iterator[E]):
    """A streaming call's events, as an iterator to read in one thread.

    ``cancel()`` ends the call from any thread: a GUI's Cancel button, or a
    worker told to stop, while the reading thread waits for the next event;
    that thread's next() then raises DgridError CANCELLED. ``close()`` (or
    leaving a for loop early) ends it from the reading thread, as a
    generator's does. The call starts at the first next()."""

    def __init__(self, start: Callable[[], Any], read: Callable[[Any], Iterator[E]],
                 method: str) -> None:
        self._slot = _CallSlot()
        # The generator holds the slot, not this stream: a stream dropped
        # (a for loop left early) is freed at once, and its generator's
        # finally cancels the call, as a plain generator's did; a cycle
        # through it would wait for the garbage collector.
        self._events = _events_of(self._slot, start, read, method)

    def __iter__(self) -> "EventStream[E]":
        return self

    def __next__(self) -> E:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def cancel(self) -> None:
        """Ends the call; safe from any thread, and a no-op once it has ended."""
        self._slot.cancel()


class _CallSlot:
    """A stream's call once started, and whether it was cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._call: Any = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        with self._lock:
            return self._cancelled

    def started(self, call: Any) -> None:
        with self._lock:
            self._call = call
            cancelled = self._cancelled
        if cancelled:
            call.cancel()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            call = self._call
        if call is not None:
            call.cancel()


def _events_of(slot: _CallSlot, start: Callable[[], Any],
               read: Callable[[Any], Iterator[E]], method: str) -> Iterator[E]:
    # Cancelled before its first next(): no call is made at all.
    if slot.cancelled:
        raise DgridError(method, grpc.StatusCode.CANCELLED,
                         "cancelled by this client (the stream's cancel()) before it started")
    call = start()
    slot.started(call)
    yield from read(call)


GridLike = Union[Grid, Any, str, "os.PathLike[str]"]


class Client:
    """A connection to an orchestrator at ``target`` ("host:port"; plaintext
    unless given ``root_certificates``).

    Every call takes an optional ``timeout`` in seconds (None: ``default_timeout``;
    a decision curve, which reports its progress, has none unless given).
    Failed calls raise DgridError.
    """

    def __init__(
        self,
        target: str,
        *,
        default_timeout: Optional[float] = 600.0,
        token: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        tls_name: Optional[str] = None,
        channel: Optional[grpc.Channel] = None,
    ) -> None:
        """``token``: the orchestrator's bearer token (its --auth_token_file),
        sent as "authorization: Bearer <token>". ``root_certificates`` (PEM)
        turns TLS on; add ``private_key`` and ``certificate_chain`` for mutual
        TLS, ``tls_name`` to verify another name than the target's host.

        ``channel``: a grpc.Channel of the caller's, used as it is, in place
        of one made from the arguments above (which it therefore refuses);
        the caller closes it, not close(). It must not carry call credentials
        of its own when ``token`` is given: the orchestrator refuses an
        authorization sent twice."""
        # With a channel of the caller's, the target is only its name.
        self.target = target if channel is not None else _target(target)
        self.default_timeout = _seconds("default_timeout", default_timeout)
        if token is not None:
            if not isinstance(token, str):
                raise TypeError(f"token: expected a str, got {type(token).__name__}")
            # As read from the orchestrator's token file: its newline goes
            # (ASCII whitespace, as every client strips it; not str.strip's
            # Unicode spaces).
            token = token.strip(" \t\n\r\f\v")
            if not token:
                # A token file of a newline alone must not turn authentication off.
                raise ValueError("token: empty (give None for no authentication)")
            if not token.isascii() or any(ord(c) < 0x21 or ord(c) == 0x7F for c in token):
                # Not echoed: gRPC's own refusal would print it.
                raise ValueError("token: holds a space, a control character or non-ASCII")
        self._metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ())
        options: List[Tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        tls = (root_certificates, private_key, certificate_chain, tls_name)
        if channel is not None:
            if any(argument is not None for argument in tls):
                # Dropping them would talk as the channel does, perhaps plaintext.
                raise ValueError("root_certificates, private_key, certificate_chain and tls_name "
                                 "make the client's own channel; a channel given is used as it is")
            self._channel = channel
        elif root_certificates is None and (private_key or certificate_chain or tls_name):
            # Dropping them would talk plaintext, token included.
            raise ValueError("private_key, certificate_chain and tls_name need root_certificates "
                             "(TLS)")
        elif (private_key is None) != (certificate_chain is None):
            # gRPC's C core would abort the process on one without the other.
            raise ValueError("private_key and certificate_chain go together (mutual TLS)")
        elif root_certificates is not None:
            if tls_name:
                options.append(("grpc.ssl_target_name_override", tls_name))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem("root_certificates", root_certificates, b"CERTIFICATE"),
                private_key=_pem("private_key", private_key, b"PRIVATE KEY"),
                certificate_chain=_pem("certificate_chain", certificate_chain, b"CERTIFICATE"))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._owns_channel = channel is None
        self._stub = orchestrator_pb2_grpc.OrchestratorStub(self._channel)
        self._closed = False

    def close(self) -> None:
        """Refuses new calls, and closes the client's channel, which ends the
        calls on it; a channel given to the client stays open, with its calls."""
        self._closed = True
        if self._owns_channel:
            self._channel.close()

    def _open(self, method: str) -> None:
        # gRPC's own refusal is a ValueError ("Cannot invoke RPC on closed
        # channel!"), not the DgridError every failed call raises.
        if self._closed:
            raise DgridError(method, grpc.StatusCode.FAILED_PRECONDITION,
                             f"this Client of {self.target} is closed")

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.default_timeout if timeout is None else _seconds("timeout", timeout)

    # ---- requests ----

    @staticmethod
    def build_request(
        prompt: str = "",
        seed: int = 0,
        preset: str = "",
        steps: Optional[int] = None,
        eta: Optional[float] = None,
        guidance: Optional[float] = None,
        branches: Optional[int] = None,
        branch_steps: Optional[Sequence[int]] = None,
        model: str = "",
        spacing: Optional[str] = None,
        trunk: Optional[Path] = None,
        negative_prompt: str = "",
        switch_prompt: str = "",
        switch_negative_prompt: str = "",
        branch_noise: str = "new",
        sampler: Optional[str] = None,
        original_size: Optional[Tuple[int, int]] = None,
        crop: Optional[Tuple[int, int]] = None,
        target_size: Optional[Tuple[int, int]] = None,
    ) -> Any:
        """A dgrid.v1.GridRequest. None leaves a field to the preset / model.

        ``prompt`` is a class name for a class model and free text for a text
        model (Model.conditioning); ``negative_prompt`` is for text models only.
        ``switch_prompt``: each row's branches switch to it at the row's branch
        step; ``branch_noise`` "trunk" keeps the trunk's noise (one column).
        ``sampler``: "ddim" or "euler_ancestral" ("euler_a"); None or "" the
        preset's. A bad name raises ValueError before anything is sent, a
        value that is not a string TypeError.
        ``original_size``, ``crop`` and ``target_size``: SDXL-style size
        conditioning as (height, width) and (top, left) in pixels, as
        diffusers takes them; None (or 0) the model's default (its
        manifest's default_size, else its image size)."""
        r = orchestrator_pb2.GridRequest(
            model=_text("model", model), prompt=_text("prompt", prompt),
            seed=_whole("seed", seed, _UINT64), preset=_text("preset", preset),
            negative_prompt=_text("negative_prompt", negative_prompt),
            switch_prompt=_text("switch_prompt", switch_prompt),
            switch_negative_prompt=_text("switch_negative_prompt", switch_negative_prompt),
            branch_noise=branch_noise_value(branch_noise))
        if steps is not None:
            r.steps.value = _whole("steps", steps, _INT32)
        if eta is not None:
            r.eta.value = _real("eta", eta)
        if guidance is not None:
            r.guidance.value = _real("guidance", guidance)
        if branches is not None:
            r.branches.value = _whole("branches", branches, _INT32)
        if branch_steps is not None:
            if isinstance(branch_steps, (str, bytes)) or not hasattr(branch_steps, "__iter__"):
                raise TypeError(f"branch_steps: expected a sequence of ints, got "
                                f"{type(branch_steps).__name__} {_short(branch_steps)}")
            r.branch_steps.extend(_whole(f"branch_steps[{i}]", step, _INT32)
                                  for i, step in enumerate(branch_steps))
        if spacing is not None:
            r.spacing = spacing_value(spacing)
        if sampler is not None:
            r.sampler = sampler_value(sampler)
        if trunk is not None:
            if isinstance(trunk, Path):
                r.trunk.CopyFrom(trunk.to_proto())
            elif getattr(getattr(trunk, "DESCRIPTOR", None), "full_name", "") == "dgrid.v1.Path":
                r.trunk.CopyFrom(trunk)
            else:
                raise TypeError(f"trunk: expected a dgrid_client.Path (a cell's .path), got "
                                f"{type(trunk).__name__} {_short(trunk)}")
        sizes = {"original": original_size, "crop": crop, "target": target_size}
        for name, pair in sizes.items():
            if pair is None:
                continue
            field = "crop" if name == "crop" else f"{name}_size"
            try:
                pair = tuple(operator.index(v) for v in pair)  # numpy ints too
            except TypeError:
                pair = ()
            if len(pair) != 2:
                raise ValueError(f"{field}: give two ints, got {_short(sizes[name])}")
            first, second = ("crop_top", "crop_left") if name == "crop" else (
                f"{name}_height", f"{name}_width")
            setattr(r.size, first, _whole(field, pair[0], _INT32))
            setattr(r.size, second, _whole(field, pair[1], _INT32))
        return r

    # ---- calls ----

    def create_grid(
        self,
        prompt: str = "",
        seed: int = 0,
        preset: str = "",
        steps: Optional[int] = None,
        eta: Optional[float] = None,
        guidance: Optional[float] = None,
        branches: Optional[int] = None,
        branch_steps: Optional[Sequence[int]] = None,
        model: str = "",
        *,
        spacing: Optional[str] = None,
        trunk: Optional[Path] = None,
        negative_prompt: str = "",
        switch_prompt: str = "",
        switch_negative_prompt: str = "",
        branch_noise: str = "new",
        sampler: Optional[str] = None,
        original_size: Optional[Tuple[int, int]] = None,
        crop: Optional[Tuple[int, int]] = None,
        target_size: Optional[Tuple[int, int]] = None,
        timeout: Optional[float] = None,
    ) -> Grid:
        """Runs a whole grid and returns it (one unary call)."""
        request = self.build_request(
            prompt, seed, preset, steps, eta, guidance, branches, branch_steps, model,
            spacing, trunk, negative_prompt, switch_prompt, switch_negative_prompt, branch_noise,
            sampler, original_size, crop, target_size)
        return self.create_grid_from_request(request, timeout=timeout)

    def create_grid_from_request(self, request: Any, *, timeout: Optional[float] = None) -> Grid:
        timeout = self._timeout(timeout)
        self._open("CreateGrid")
        try:
            grid = self._stub.CreateGrid(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _error("CreateGrid", e, self.target) from None
        return Grid.from_proto(grid, request)

    def stream_grid(
        self,
        prompt: str = "",
        seed: int = 0,
        preset: str = "",
        steps: Optional[int] = None,
        eta: Optional[float] = None,
        guidance: Optional[float] = None,
        branches: Optional[int] = None,
        branch_steps: Optional[Sequence[int]] = None,
        model: str = "",
        *,
        spacing: Optional[str] = None,
        trunk: Optional[Path] = None,
        negative_prompt: str = "",
        switch_prompt: str = "",
        switch_negative_prompt: str = "",
        branch_noise: str = "new",
        sampler: Optional[str] = None,
        original_size: Optional[Tuple[int, int]] = None,
        crop: Optional[Tuple[int, int]] = None,
        target_size: Optional[Tuple[int, int]] = None,
        timeout: Optional[float] = None,
    ) -> EventStream[GridEvent]:
        """Streams a grid: a Plan, then TrunkProgress and Cell events as they
        happen, then GridDone with the finished Grid. Closing the iterator early
        cancels the call, as does its cancel() from any thread."""
        request = self.build_request(
            prompt, seed, preset, steps, eta, guidance, branches, branch_steps, model,
            spacing, trunk, negative_prompt, switch_prompt, switch_negative_prompt, branch_noise,
            sampler, original_size, crop, target_size)
        return self.stream_grid_from_request(request, timeout=timeout)

    def stream_grid_from_request(
        self, request: Any, *, timeout: Optional[float] = None
    ) -> EventStream[GridEvent]:
        # Checked here, not at the first next() (and again there).
        timeout = self._timeout(timeout)
        self._open("StreamGrid")

        def start() -> Any:
            self._open("StreamGrid")
            return self._stub.StreamGrid(request, timeout=timeout, metadata=self._metadata)

        return EventStream(start, lambda call: self._grid_events(request, call), "StreamGrid")

    def _grid_events(self, request: Any, call: Any) -> Iterator[GridEvent]:
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "plan":
                    yield Plan.from_proto(event.plan)
                elif kind == "trunk":
                    yield TrunkProgress.from_proto(event.trunk)
                elif kind == "cell":
                    yield Cell.from_proto(event.cell)
                elif kind == "grid":
                    yield GridDone(Grid.from_proto(event.grid, request))
        except grpc.RpcError as e:
            raise _error("StreamGrid", e, self.target) from None
        finally:
            call.cancel()  # no-op when the stream already ended

    def decision_curve(
        self,
        trunks: int,
        *,
        on_progress: Optional[Callable[[CurveProgress], None]] = None,
        timeout: Optional[float] = None,
        silence: Optional[float] = 60.0,
        **grid: Any,
    ) -> Curve:
        """When is what decided: runs ``trunks`` grids of one request (the
        keyword arguments of build_request; trunk t has seed ``seed`` + t),
        judges every image with the model's judge and returns the Curve: per
        row and judge head, P(a branch's label differs from its trunk's) with
        its standard error over trunks, and the step where it halves.
        ``on_progress`` is called as trunks finish, and with the same counts
        after 15 s without one (the server's keepalive); after ``silence``
        seconds without any (None: no limit) the connection counts as lost."""
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress: expected a callable, got {type(on_progress).__name__} "
                            f"{_short(on_progress)}")
        curve = None
        for event in self.stream_decision_curve(trunks, timeout=timeout, silence=silence,
                                                **grid):
            if isinstance(event, CurveProgress) and on_progress:
                on_progress(event)
            elif isinstance(event, CurveDone):
                curve = event.curve
        if curve is None:
            raise DgridError("DecisionCurve", grpc.StatusCode.INTERNAL, "the stream ended early")
        return curve

    def stream_decision_curve(
        self, trunks: int, *, timeout: Optional[float] = None, silence: Optional[float] = 60.0,
        **grid: Any
    ) -> EventStream[CurveEvent]:
        """The curve as it runs: a Plan, a CurveProgress per finished trunk
        (and the same counts again after 15 s without one, a keepalive), then
        CurveDone. Closing the iterator early cancels the curve, as does its
        cancel() from any thread; it has
        no deadline unless ``timeout`` is given (a curve of many trunks runs
        for minutes). A connection lost without a word would leave it
        waiting for ever: after ``silence`` seconds with no event (None: no
        limit) the curve is cancelled and DgridError UNAVAILABLE raised. Under
        the 15 s keepalive it cancels healthy curves whose first trunks take
        longer (dgrid curve warns of a --silence_s under 20)."""
        # Checked here, not at the first next().
        silence = _seconds("silence", silence)
        timeout = _seconds("timeout", timeout)
        unknown = sorted(set(grid) - set(_BUILD_REQUEST_FIELDS))
        if unknown:
            raise TypeError(f"unknown request fields: {unknown} (the keyword arguments of "
                            "build_request)")
        request = orchestrator_pb2.CurveRequest(trunks=_whole("trunks", trunks, _INT32))
        request.grid.CopyFrom(self.build_request(**grid))
        self._open("DecisionCurve")

        def start() -> Any:
            self._open("DecisionCurve")
            return self._stub.DecisionCurve(request, timeout=timeout, metadata=self._metadata)

        return EventStream(start, lambda call: self._curve_events(call, silence), "DecisionCurve")

    def _curve_events(self, call: Any, silence: Optional[float]) -> Iterator[CurveEvent]:
        watch = _SilenceWatch(call, silence) if silence is not None else None
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "plan":
                    out: Any = Plan.from_proto(event.plan)
                elif kind == "progress":
                    p = event.progress
                    out = CurveProgress(p.trunks_done, p.trunks, p.seconds, p.model_evals,
                                        p.cache_hits)
                elif kind == "curve":
                    out = CurveDone(Curve.from_proto(event.curve))
                else:
                    continue
                # The caller's own time between events is no silence.
                if watch:
                    watch.pause()
                yield out
                if watch:
                    watch.heard()
        except grpc.RpcError as e:
            if watch and watch.fired:
                raise DgridError("DecisionCurve", grpc.StatusCode.UNAVAILABLE,
                                 f"no word from {self.target} for {silence:g} s (silence=; a "
                                 "running curve sends one at least every 15 s): the connection "
                                 "is lost; the curve was cancelled") from None
            # Curves take no default_timeout.
            raise _error("DecisionCurve", e, self.target, "the call's timeout=") from None
        finally:
            if watch:
                watch.stop()
            call.cancel()

    def promote(
        self,
        grid: GridLike,
        row: int,
        col: int,
        *,
        timeout: Optional[float] = None,
        **overrides: Any,
    ) -> Grid:
        """Re-runs the grid's request with cell (row, col) (0-based) as the trunk.

        ``grid`` is a Grid from this client, a dgrid.v1.GridRecord or Grid
        message, or the path of a JSON sidecar written by ``dgrid grid`` or
        Grid.save_record. ``overrides`` (steps=, branches=, branch_steps=, ...)
        change the request, as in create_grid.
        """
        request = self.promote_request(grid, row, col, **overrides)
        return self.create_grid_from_request(request, timeout=timeout)

    @staticmethod
    def promote_request(grid: GridLike, row: int, col: int, **overrides: Any) -> Any:
        """The GridRequest that promote sends."""
        request, typed = _request_and_grid(grid)
        cell = typed.cell(row, col)
        request.trunk.CopyFrom(cell.path.to_proto())
        # The grid's model, not whichever model a pool of several serves first.
        if not request.model:
            request.model = typed.plan.model
        if overrides:
            fields = _request_fields(request)
            unknown = set(overrides) - set(fields)
            if unknown:
                raise TypeError(f"unknown request fields: {sorted(unknown)}")
            # The cell's path is the trunk; a seed is not read beside it.
            fixed = {k for k in ("seed", "trunk") if overrides.get(k) is not None}
            if fixed:
                raise TypeError(f"promote sets the trunk to the cell's path; {sorted(fixed)} "
                                "cannot be overridden")
            overrides = {k: v for k, v in overrides.items() if k not in ("seed", "trunk")}
            # The request's enums go across as their numbers, not by name: one
            # newer than this client has none here (it read as the default).
            kept_enums = [k for k in _ENUM_FIELDS if k not in overrides]
            fields.update({k: None for k in kept_enums})
            fields.update(overrides)
            fields["trunk"] = cell.path
            original = request
            request = Client.build_request(**fields)
            for name in kept_enums:
                setattr(request, name, getattr(original, name))
        return request

    def list_models(self, *, timeout: Optional[float] = None) -> List[Model]:
        timeout = self._timeout(timeout)
        self._open("ListModels")
        try:
            response = self._stub.ListModels(
                orchestrator_pb2.ListModelsRequest(), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _error("ListModels", e, self.target) from None
        return [Model.from_proto(m) for m in response.models]

    def wait_ready(self, timeout: Optional[float] = 30.0) -> None:
        """Waits until the channel connects (raises DgridError on timeout;
        None waits for ever)."""
        timeout = _seconds("timeout", timeout)
        self._open("connect")
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=timeout)
        except grpc.FutureTimeoutError:
            # Else it would keep watching, and the channel connecting, until
            # the client is closed: a retry loop piled them up.
            ready.cancel()
            raise DgridError("connect", grpc.StatusCode.UNAVAILABLE,
                             f"no server at {self.target} after {timeout:g} s") from None


# The keyword arguments of build_request, which a curve's **grid passes on.
_BUILD_REQUEST_FIELDS = tuple(p for p in inspect.signature(Client.build_request).parameters)
# Its enum arguments (None is each one's default).
_ENUM_FIELDS = ("spacing", "sampler", "branch_noise")


def _request_fields(r: Any) -> dict:
    """The keyword arguments of build_request that reproduce request r."""
    # SDXL-style size conditioning: 0 is the model's default already.
    original_size, crop, target_size = (
        size_pairs(r.size) if r.HasField("size") else (None, None, None))
    return {
        "prompt": r.prompt,
        "seed": r.seed,
        "preset": r.preset,
        "steps": r.steps.value if r.HasField("steps") else None,
        "eta": r.eta.value if r.HasField("eta") else None,
        "guidance": r.guidance.value if r.HasField("guidance") else None,
        "branches": r.branches.value if r.HasField("branches") else None,
        "branch_steps": list(r.branch_steps) or None,
        "model": r.model,
        "spacing": None if r.spacing == 0 else spacing_name(r.spacing),
        "trunk": Path.from_proto(r.trunk) if r.HasField("trunk") else None,
        "negative_prompt": r.negative_prompt,
        "switch_prompt": r.switch_prompt,
        "switch_negative_prompt": r.switch_negative_prompt,
        "branch_noise": branch_noise_name(r.branch_noise),
        "sampler": None if r.sampler == 0 else sampler_name(r.sampler),
        "original_size": original_size,
        "crop": crop,
        "target_size": target_size,
    }


def _request_and_grid(grid: GridLike) -> "tuple[Any, Grid]":
    """(a copy of the original GridRequest, a typed Grid) from what promote accepts."""
    if isinstance(grid, (str, os.PathLike)):
        record = orchestrator_pb2.GridRecord()
        try:
            # A grid's PNG beside its record, say, is no UTF-8.
            with open(grid, encoding="utf-8") as f:
                text = f.read()
            if not text.lstrip().startswith("{"):
                raise ValueError("a JSON object was expected")
            json_format.Parse(text, record)
        except (json_format.ParseError, ValueError) as e:  # UnicodeDecodeError, JSONDecodeError
            raise ValueError(f"{os.fspath(grid)} is not a grid record: {e}") from None
        grid = record
    if isinstance(grid, Grid):
        typed = grid
        request = orchestrator_pb2.GridRequest()
        if grid.request is not None:
            request.CopyFrom(grid.request)
        else:
            request = _request_from_plan(grid.plan)
        return request, typed
    descriptor = getattr(grid, "DESCRIPTOR", None)
    name = descriptor.full_name if descriptor is not None else type(grid).__name__
    if name == "dgrid.v1.GridRecord":
        request = orchestrator_pb2.GridRequest()
        request.CopyFrom(grid.request)
        typed = Grid.from_proto(grid.grid, request)
        if not grid.HasField("request"):
            request = _request_from_plan(typed.plan)
        return request, typed
    if name == "dgrid.v1.Grid":
        typed = Grid.from_proto(grid)
        return _request_from_plan(typed.plan), typed
    raise TypeError(f"promote takes a Grid, a GridRecord or a record file, not {name}")


def _request_from_plan(plan: Plan) -> Any:
    """A request that reproduces a grid from its plan (when the request is unknown)."""
    original_size, crop, target_size = plan.size or (None, None, None)
    return Client.build_request(
        prompt=plan.prompt, steps=plan.steps, eta=plan.eta, guidance=plan.guidance,
        branches=plan.branches, branch_steps=list(plan.branch_steps), model=plan.model,
        spacing=plan.spacing or None, trunk=plan.trunk, negative_prompt=plan.negative_prompt,
        switch_prompt=plan.switch_prompt, switch_negative_prompt=plan.switch_negative_prompt,
        branch_noise=plan.branch_noise, sampler=plan.sampler,
        original_size=original_size, crop=crop, target_size=target_size)
