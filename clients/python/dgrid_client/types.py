"""Typed, immutable views of the orchestrator's messages.

Each type has ``from_proto`` (and, where a value goes back to the server,
``to_proto``). Rows and columns are counted from 0, as in the protos
(``GridCell.row`` / ``GridCell.column``); the trunk cell has row -1.
"""

from __future__ import annotations

import operator
import os
import secrets
import stat
import struct
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple, Union

from ._stubs import denoiser_pb2, orchestrator_pb2


def _record_json(record: Any) -> str:
    """A record as JSON with proto field names and its zeros too, as the
    dgrid CLI writes its sidecars."""
    from google.protobuf import json_format
    try:  # the option's name changed
        return json_format.MessageToJson(record, preserving_proto_field_name=True,
                                         including_default_value_fields=True)
    except TypeError:  # protobuf 5.26 and later
        return json_format.MessageToJson(record, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


def _nonempty(data: bytes, path: str, why: str) -> bytes:
    """``data``, which must not be empty: an empty file would look written."""
    if isinstance(data, (bytes, bytearray)) and not data:
        raise ValueError(f"cannot write {path}: {why}")
    return data


def _write_whole(path: str, data: Union[bytes, str]) -> None:
    """Writes a file whole or not at all: into a new temporary file beside it,
    renamed over the name once written, so a failed write (a full disk, data
    of the wrong type) leaves the previous file as it was. A name that is a
    symbolic link is written through. The file is new: it gets the umask's
    permissions (the kernel applies it; the process's umask is not touched,
    which would race with other threads), not an old file's mode, owner or
    other hard links."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"cannot write {path}: expected bytes, got {type(data).__name__}")
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    # A device or a pipe would be replaced by a regular file (as root, the
    # system's /dev/null itself); dgrid refuses them too. The name as given,
    # links followed: /dev/stdout's link names no path. A folder fails in
    # the rename below, as IsADirectoryError.
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ValueError(f"cannot write {path}: it is not a regular file (a device or a pipe)")
    try:
        for _ in range(100):
            # Its own short name, not the file's with a suffix: a name near
            # the folder's length limit (255 bytes) still gets a temporary one.
            temporary = os.path.join(folder, f".dgrid.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(temporary,
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"cannot write {path}: no free temporary name beside it")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as e:
        if e.errno is None:
            raise
        # The caller's name, not the temporary one's: OSError(errno, ...) is
        # the errno's own subclass (FileNotFoundError, IsADirectoryError, ...).
        raise OSError(e.errno, e.strerror, os.fspath(path)) from None


def _unique_keys(pairs: "list[tuple[str, Any]]") -> dict:
    """A JSON object's keys, each once: protobuf's parser refused a key given
    twice, which json.loads would keep the last of."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_SPACING_NAMES = {0: "", 1: "leading", 2: "trailing", 3: "linspace"}


SizePairs = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]


def float32_value(value: float) -> float:
    """A proto float field's value as the shortest decimal that is the same
    float32, as the server and dgrid print it: an eta of 0.3 comes back as
    0.30000001192092896 otherwise."""
    for digits in range(1, 10):
        shorter = float(f"{value:.{digits}g}")
        try:
            if struct.unpack("f", struct.pack("f", shorter))[0] == value:
                return shorter
        except OverflowError:
            break
    return value


def size_pairs(size: Any) -> SizePairs:
    """A dgrid.v1.SizeConditioning as ((original height, width), (crop top,
    left), (target height, width)), as create_grid takes them."""
    return ((size.original_height, size.original_width), (size.crop_top, size.crop_left),
            (size.target_height, size.target_width))


def spacing_name(value: int) -> str:
    """"" (the model's default), "leading", "trailing" or "linspace"."""
    return _SPACING_NAMES.get(value, str(value))


def _enum_name(name: object, what: str) -> str:
    """An enum's name as given, lower-cased: a str (or None for the default)."""
    if name is None:
        return ""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__} {name!r}")
    return name.lower()


def spacing_value(name: Optional[str]) -> int:
    """The Spacing enum value for "", "leading", "trailing" or "linspace"."""
    key = _enum_name(name, "spacing")
    for value, n in _SPACING_NAMES.items():
        if n == key:
            return value
    raise ValueError(f"spacing must be '', 'leading', 'trailing' or 'linspace', got {name!r}")


# Unspecified on the wire is DDIM; "euler_a" is the short spelling the CLI
# and the preset name use.
_SAMPLER_VALUES = {
    "": denoiser_pb2.SAMPLER_UNSPECIFIED,
    "ddim": denoiser_pb2.SAMPLER_DDIM,
    "euler_ancestral": denoiser_pb2.SAMPLER_EULER_ANCESTRAL,
    "euler_a": denoiser_pb2.SAMPLER_EULER_ANCESTRAL,
}


def sampler_name(value: int) -> str:
    """"ddim" or "euler_ancestral" (what ran: unspecified is DDIM)."""
    if value == denoiser_pb2.SAMPLER_EULER_ANCESTRAL:
        return "euler_ancestral"
    if value in (denoiser_pb2.SAMPLER_UNSPECIFIED, denoiser_pb2.SAMPLER_DDIM):
        return "ddim"
    return str(value)  # a sampler newer than this client


def sampler_value(name: Optional[str]) -> int:
    """The Sampler enum value for "" (the preset's), "ddim" or "euler_ancestral" ("euler_a")."""
    key = _enum_name(name, "sampler")
    if key not in _SAMPLER_VALUES:
        raise ValueError(
            f"sampler must be '', 'ddim' or 'euler_ancestral' ('euler_a'), got {name!r}")
    return _SAMPLER_VALUES[key]


def branch_noise_name(value: int) -> str:
    """"new" or "trunk" (unspecified is new)."""
    if value == orchestrator_pb2.BRANCH_NOISE_TRUNK:
        return "trunk"
    if value == orchestrator_pb2.BRANCH_NOISE_NEW:
        return "new"
    return str(value)  # a kind newer than this client


def branch_noise_value(name: str) -> int:
    """The BranchNoise enum value for "new" or "trunk"."""
    key = _enum_name(name, "branch_noise") or "new"
    if key not in ("new", "trunk"):
        raise ValueError(f"branch_noise must be 'new' or 'trunk', got {name!r}")
    return orchestrator_pb2.BRANCH_NOISE_TRUNK if key == "trunk" else orchestrator_pb2.BRANCH_NOISE_NEW


def short_repr(value: Any) -> str:
    """A value as an error message echoes it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def int_argument(name: str, value: Any) -> int:
    """An int, or int-like as numpy's integers are (not a bool), named when
    not: protobuf's refusal would not say which argument it was."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} "
                        f"{short_repr(value)}") from None



@dataclass(frozen=True)
class Segment:
    """Noise at steps >= from_step (up to the next segment) comes from noise_seed.

    A prompt switch also sets what the trajectory is conditioned on from
    from_step: ``prompt`` and ``negative_prompt`` (a class model: ``prompt``
    names the class, or ``class_index`` gives it, not both); ``switched`` is
    False when the segment keeps the conditioning before it, and then none
    of the three may be given (a ValueError naming it)."""

    from_step: int
    noise_seed: int
    switched: bool = False
    prompt: str = ""
    negative_prompt: str = ""
    class_index: Optional[int] = None

    def __post_init__(self) -> None:
        # What fill_proto would otherwise drop, or protobuf refuse without
        # the field's name.
        for name in ("from_step", "noise_seed"):
            int_argument(f"Segment.{name}", getattr(self, name))
        if self.class_index is not None:
            int_argument("Segment.class_index", self.class_index)
        for name in ("prompt", "negative_prompt"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Segment.{name}: expected a str, got "
                                f"{type(getattr(self, name)).__name__}")
        if not isinstance(self.switched, bool):
            raise TypeError(f"Segment.switched: expected a bool, got "
                            f"{type(self.switched).__name__}")
        given = [n for n in ("prompt", "negative_prompt") if getattr(self, n)]
        if self.class_index is not None:
            given.append("class_index")
        if given and not self.switched:
            raise ValueError(f"Segment.{given[0]}: a segment's conditioning is read only with "
                             "switched=True (without it the segment keeps the conditioning "
                             "before it)")
        if self.class_index is not None and self.prompt:
            raise ValueError("Segment.prompt: give a class model's class by prompt (its name) "
                             "or by class_index, not both")

    @classmethod
    def from_proto(cls, s: Any) -> "Segment":
        if not s.HasField("conditioning"):
            return cls(s.from_step, s.noise_seed)
        c = s.conditioning
        label = c.WhichOneof("label")
        return cls(s.from_step, s.noise_seed, True,
                   prompt=c.prompt if label == "prompt" else "",
                   negative_prompt=c.negative_prompt,
                   class_index=c.class_index if label == "class_index" else None)

    def fill_proto(self, out: Any) -> None:
        out.from_step = self.from_step
        out.noise_seed = self.noise_seed
        if not self.switched:
            return
        if self.class_index is not None:
            out.conditioning.class_index = self.class_index
        elif self.prompt:
            out.conditioning.prompt = self.prompt
        out.conditioning.negative_prompt = self.negative_prompt


@dataclass(frozen=True)
class Path:
    """A trajectory's full name: x_T from init_seed, then its noise segments."""

    init_seed: int
    segments: Tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        int_argument("Path.init_seed", self.init_seed)
        for i, segment in enumerate(self.segments):
            if not isinstance(segment, Segment):
                raise TypeError(f"Path.segments[{i}]: expected a Segment, got "
                                f"{type(segment).__name__}")

    @classmethod
    def from_proto(cls, p: Any) -> "Path":
        return cls(p.init_seed, tuple(Segment.from_proto(s) for s in p.segments))

    def to_proto(self) -> Any:
        p = denoiser_pb2.Path(init_seed=self.init_seed)
        for s in self.segments:
            s.fill_proto(p.segments.add())
        return p

    def __str__(self) -> str:
        def one(s: Segment) -> str:
            if not s.switched:
                return f"({s.from_step}, {s.noise_seed})"
            to = repr(s.prompt) if s.class_index is None else f"class {s.class_index}"
            if s.negative_prompt:
                to += f", not {s.negative_prompt!r}"
            return f"({s.from_step}, {s.noise_seed}, -> {to})"
        return f"({self.init_seed}, [{', '.join(one(s) for s in self.segments)}])"


@dataclass(frozen=True)
class Cell:
    """One finished trajectory: a branch (row >= 0) or the trunk (row == -1)."""

    row: int
    column: int
    path: Path
    png: bytes = field(repr=False)
    # A replica address, or "cache".
    source: str = ""

    @property
    def is_trunk(self) -> bool:
        return self.row < 0

    @classmethod
    def from_proto(cls, c: Any) -> "Cell":
        return cls(c.row, c.column, Path.from_proto(c.path), bytes(c.png), c.source)


@dataclass(frozen=True)
class Row:
    """The branches that leave the trunk after ``branch_step`` steps."""

    branch_step: int
    timestep: int
    cells: Tuple[Cell, ...]
    # Mean pairwise RMS pixel distance among the branches (pixels in [0, 1]);
    # 0 with one branch, which has no pair (a CurveRow's is None then).
    divergence: float
    # Mean distance of the branches to the trunk's image.
    divergence_to_trunk: float
    trunk_xt_png: bytes = field(repr=False, default=b"")
    trunk_x0_png: bytes = field(repr=False, default=b"")

    @classmethod
    def from_proto(cls, r: Any) -> "Row":
        return cls(
            branch_step=r.branch_step,
            timestep=r.timestep,
            cells=tuple(Cell.from_proto(c) for c in r.cells),
            divergence=r.divergence,
            divergence_to_trunk=r.divergence_to_trunk,
            trunk_xt_png=bytes(r.trunk_xt_png),
            trunk_x0_png=bytes(r.trunk_x0_png),
        )


@dataclass(frozen=True)
class Plan:
    """What the orchestrator will run (the first streamed event)."""

    model: str
    prompt: str
    steps: int
    eta: float
    guidance: float
    spacing: str
    trunk: Path
    branch_steps: Tuple[int, ...]
    timesteps: Tuple[int, ...]
    branches: int
    # Model evaluations this plan costs, and what computing every cell from
    # step 0 would cost.
    model_evals: int
    from_scratch_evals: int
    # Text models: what guidance steers away from, and the tokens cut off the
    # prompt and the negative prompt to fit the model's context (the grid is
    # of the shortened text).
    negative_prompt: str = ""
    prompt_tokens_dropped: int = 0
    negative_prompt_tokens_dropped: int = 0
    # A prompt switch at each row's branch step ("" for none), and the
    # branches' noise: "new" or "trunk".
    switch_prompt: str = ""
    switch_negative_prompt: str = ""
    branch_noise: str = "new"
    # How a step moves the latent: "ddim" or "euler_ancestral".
    sampler: str = "ddim"
    # Text models: the tokens cut off the switch prompts.
    switch_prompt_tokens_dropped: int = 0
    switch_negative_prompt_tokens_dropped: int = 0
    # Models with a word vocabulary: words of the prompts it lacks and reads
    # as its unknown token.
    unknown_words: Tuple[str, ...] = ()
    # Models with size conditioning (SDXL): what the grid ran with, as
    # ((original height, width), (crop top, left), (target height, width));
    # None for other models.
    size: Optional[SizePairs] = None
    # The model reads the switch as the prompt in force (the same class or
    # tokens, or one this guidance does not read): the rows do not switch.
    switch_unseen: bool = False
    # Per row (as branch_steps): whether its branches switch to the switch
    # prompt at its step (not where a promoted trunk has switched already).
    switching_rows: Tuple[bool, ...] = ()

    @property
    def tokens_dropped(self) -> bool:
        """True when the model saw less than the whole of a prompt."""
        return any(n > 0 for n in (self.prompt_tokens_dropped,
                                   self.negative_prompt_tokens_dropped,
                                   self.switch_prompt_tokens_dropped,
                                   self.switch_negative_prompt_tokens_dropped))

    @property
    def cells(self) -> int:
        """Cells the grid will stream: every branch plus the trunk."""
        return len(self.branch_steps) * self.branches + 1

    @classmethod
    def from_proto(cls, p: Any) -> "Plan":
        return cls(
            model=p.model,
            prompt=p.prompt,
            steps=p.sampler.steps,
            eta=float32_value(p.sampler.eta),
            guidance=float32_value(p.sampler.guidance),
            spacing=spacing_name(p.sampler.spacing),
            trunk=Path.from_proto(p.trunk),
            branch_steps=tuple(p.branch_steps),
            timesteps=tuple(p.timesteps),
            branches=p.branches,
            model_evals=p.model_evals,
            from_scratch_evals=p.from_scratch_evals,
            negative_prompt=p.negative_prompt,
            prompt_tokens_dropped=p.prompt_tokens_dropped,
            negative_prompt_tokens_dropped=p.negative_prompt_tokens_dropped,
            switch_prompt=p.switch_prompt,
            switch_negative_prompt=p.switch_negative_prompt,
            switch_prompt_tokens_dropped=p.switch_prompt_tokens_dropped,
            switch_negative_prompt_tokens_dropped=p.switch_negative_prompt_tokens_dropped,
            branch_noise=branch_noise_name(p.branch_noise),
            sampler=sampler_name(p.sampler.sampler),
            unknown_words=tuple(p.unknown_words),
            size=size_pairs(p.size) if p.HasField("size") else None,
            switch_unseen=p.switch_unseen,
            switching_rows=tuple(p.switching_rows),
        )


@dataclass(frozen=True)
class TrunkProgress:
    """The trunk reached ``step``, a capture step (a branch step, or a
    checkpoint every 10 steps; only those it runs to, or the cache holds):
    its x_t and x0 prediction there."""

    step: int
    timestep: int
    xt_png: bytes = field(repr=False, default=b"")
    x0_png: bytes = field(repr=False, default=b"")
    # The replica running the trunk.
    source: str = ""

    @classmethod
    def from_proto(cls, t: Any) -> "TrunkProgress":
        return cls(t.step, t.timestep, bytes(t.xt_png), bytes(t.x0_png), t.source)


@dataclass(frozen=True)
class Grid:
    """A finished grid: the composed PNG, the trunk and one row per branch step."""

    plan: Plan
    png: bytes = field(repr=False)
    trunk: Cell
    rows: Tuple[Row, ...]
    model_evals: int
    cache_hits: int
    seconds: float
    # The request that produced the grid (promote re-sends it with a new
    # trunk) and the raw message; None / omitted when not known.
    request: Optional[Any] = field(default=None, repr=False, compare=False)
    proto: Optional[Any] = field(default=None, repr=False, compare=False)

    def cell(self, row: int, col: int) -> Cell:
        """The cell at (row, col), both counted from 0."""
        int_argument("row", row)
        int_argument("col", col)
        if not self.rows:
            raise IndexError("this grid has no rows (a record of a grid that never ran?)")
        if not 0 <= row < len(self.rows):
            raise IndexError(f"row must be in [0, {len(self.rows)}), got {row}")
        cells = self.rows[row].cells
        if not 0 <= col < len(cells):
            raise IndexError(f"col must be in [0, {len(cells)}), got {col}")
        return cells[col]

    @property
    def cells(self) -> Tuple[Cell, ...]:
        """Every branch cell, row by row."""
        return tuple(c for r in self.rows for c in r.cells)

    @property
    def divergence(self) -> Tuple[float, ...]:
        """Per-row divergence (mean pairwise distance among branches)."""
        return tuple(r.divergence for r in self.rows)

    def save_png(self, path: str) -> None:
        _write_whole(path, _nonempty(self.png, path, "this grid has no PNG (a grid read from a "
                                     "record keeps none of its images)"))

    def record(self) -> Any:
        """A dgrid.v1.GridRecord (request + grid without image bytes), as the
        ``dgrid`` CLI writes beside its PNG."""
        record = orchestrator_pb2.GridRecord()
        if self.request is not None:
            record.request.CopyFrom(self.request)
        if self.proto is not None:
            record.grid.CopyFrom(self.proto)
        g = record.grid
        g.ClearField("png")
        g.trunk.ClearField("png")
        for r in g.rows:
            r.ClearField("trunk_xt_png")
            r.ClearField("trunk_x0_png")
            for c in r.cells:
                c.ClearField("png")
        return record

    def save_record(self, path: str) -> None:
        """Writes the GridRecord as JSON, zeros included, as ``dgrid grid``
        writes its sidecar (``dgrid promote`` reads it too)."""
        _write_whole(path, _record_json(self.record()))

    @classmethod
    def from_proto(cls, g: Any, request: Optional[Any] = None) -> "Grid":
        return cls(
            plan=Plan.from_proto(g.plan),
            png=bytes(g.png),
            trunk=Cell.from_proto(g.trunk),
            rows=tuple(Row.from_proto(r) for r in g.rows),
            model_evals=g.model_evals,
            cache_hits=g.cache_hits,
            seconds=g.seconds,
            request=request,
            proto=g,
        )


@dataclass(frozen=True)
class GridDone:
    """The last streamed event: the finished grid."""

    grid: Grid


GridEvent = Union[Plan, TrunkProgress, Cell, GridDone]


@dataclass(frozen=True)
class SamplerDefaults:
    steps: int
    eta: float
    guidance: float
    spacing: str
    sampler: str = "ddim"


@dataclass(frozen=True)
class Model:
    """A model the orchestrator's pool serves.

    ``conditioning`` is "class" (``prompts`` are its class names) or "text"
    (free-text prompts of at most ``max_prompt_tokens`` tokens, BOS and EOS
    included; ``example_prompts`` to start from)."""

    name: str
    version: str
    prompts: Tuple[str, ...]
    latent_shape: Tuple[int, ...]
    image_shape: Tuple[int, ...]
    defaults: SamplerDefaults
    train_timesteps: int = 0
    prediction_type: str = ""
    license: str = ""
    description: str = ""
    conditioning: str = "class"
    example_prompts: Tuple[str, ...] = ()
    max_prompt_tokens: int = 0
    # The heads of the model's judge (decision curves); empty without one.
    judge_heads: Tuple[str, ...] = ()
    # Per head, what each of its label indices means.
    judge_labels: Tuple[Tuple[str, ...], ...] = ()
    # With train_timesteps and the spacing, fixes each step's timestep.
    steps_offset: int = 0
    # A DDIM step below timestep 0 lands on alpha-bar 1 (adds no noise).
    set_alpha_to_one: bool = False
    # The model reads float timesteps: only then does Euler ancestral run at
    # linspace spacing (whose timesteps have fractions).
    float_timesteps: bool = False
    # Size-conditioned (SDXL-style) models: what a size left at 0 gets, as
    # (original_size, crop, target_size); None for other models.
    default_size: Optional[SizePairs] = None

    @property
    def is_text(self) -> bool:
        return self.conditioning == "text"

    @classmethod
    def from_proto(cls, m: Any) -> "Model":
        d = m.defaults
        return cls(
            name=m.name,
            version=m.version,
            prompts=tuple(m.prompts),
            latent_shape=tuple(m.latent_shape),
            image_shape=tuple(m.image_shape),
            defaults=SamplerDefaults(d.steps, float32_value(d.eta), float32_value(d.guidance),
                                     spacing_name(d.spacing),
                                     sampler_name(d.sampler)),
            train_timesteps=m.train_timesteps,
            prediction_type=m.prediction_type,
            license=m.license,
            description=m.description,
            # Servers from before text models leave it empty: class models.
            conditioning=m.conditioning or "class",
            example_prompts=tuple(m.example_prompts),
            max_prompt_tokens=m.max_prompt_tokens,
            judge_heads=tuple(h.name for h in m.judge.heads),
            judge_labels=tuple(tuple(h.labels) for h in m.judge.heads),
            steps_offset=m.steps_offset,
            set_alpha_to_one=m.set_alpha_to_one,
            float_timesteps=m.float_timesteps,
            default_size=size_pairs(m.default_size) if m.HasField("default_size") else None,
        )


# ---- decision curves ----


@dataclass(frozen=True)
class Estimate:
    """A mean over trunks and its standard error."""

    mean: float
    standard_error: float

    @classmethod
    def from_proto(cls, e: Any) -> "Estimate":
        return cls(e.mean, e.standard_error)


@dataclass(frozen=True)
class CurveRow:
    """One row of a curve, over trunks: the mean RMS divergence between its
    branches (None with one branch per row: no pair to compare) and from
    its branches to their trunk."""

    branch_step: int
    timestep: int
    divergence: Optional[Estimate]
    divergence_to_trunk: Estimate


@dataclass(frozen=True)
class HeadCurve:
    """One judge head's curve: per row, P(a branch's label differs from its
    trunk's) (for a switch curve, 1 minus it is P(the trunk's label
    survives)); ``half_step`` is where it first falls to half its row-0
    value (None when it never does, or row 0 is 0). Its uncertainty comes
    from bootstrap resamples of the trunks: ``half_found_fraction`` of them
    found a half step; ``half_step_interval`` is a 68% interval over them
    all, a resample that stays above half through the last row counting as
    later than it (set when ``half_step`` is None too). When the interval
    runs past the last row, ``half_step_hi_after_last_row`` is True, its
    upper end is the last row's step, and ``half_step_standard_error`` (over
    the resamples that found one) is 0. ``p_differs_95``: per row, a 95%
    interval that holds at 0 and 1 too (Wilson's, over trunks).
    ``labels``: what each label index means; each trunk's labels are in
    ``Curve.proto.trunk_labels``."""

    head: str
    p_differs: Tuple[Estimate, ...]
    half_step: Optional[float]
    half_step_standard_error: float
    half_step_interval: Tuple[float, float]
    half_found_fraction: float = 0.0
    half_step_hi_after_last_row: bool = False
    p_differs_95: Tuple[Tuple[float, float], ...] = ()
    labels: Tuple[str, ...] = ()


def _inline_number_lists(text: str) -> str:
    """JSON as protobuf indents it, but each list of plain numbers on one
    line: a curve's labels (100 trunks x 6 rows x 4 branches x 2 heads) took
    a line each."""
    import json

    def dump(value: Any, depth: int) -> str:
        pad, inner = "  " * depth, "  " * (depth + 1)
        if isinstance(value, dict) and value:
            items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {dump(v, depth + 1)}"
                     for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and value:
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return "[" + ", ".join(json.dumps(v) for v in value) + "]"
            return "[\n" + ",\n".join(inner + dump(v, depth + 1) for v in value) + f"\n{pad}]"
        return json.dumps(value, ensure_ascii=False)

    return dump(json.loads(text), 0) + "\n"


def _labels_disagree(record: Any) -> str:
    """Why a curve record's per-trunk labels do not give its P(differs) rows
    ("" when they do, or when it has none): a record edited or pieced
    together by hand."""
    if not record.trunk_labels:
        return ""
    if len(record.trunk_labels) != record.trunks:
        return f"{len(record.trunk_labels)} trunks' labels for {record.trunks} trunks"
    for h, head in enumerate(record.heads):
        for r, p in enumerate(head.p_differs):
            fractions = []
            for t in record.trunk_labels:
                if h >= len(t.heads) or r >= len(t.heads[h].rows) or not t.heads[h].rows[r].branches:
                    return f"trunk seed {t.seed} has no labels for head {head.head!r} row {r}"
                branches = t.heads[h].rows[r].branches
                fractions.append(sum(b != t.heads[h].trunk for b in branches) / len(branches))
            mean = sum(fractions) / len(fractions)
            if abs(mean - p.mean) > 1e-9:
                return (f"head {head.head!r} row {r}: P(differs) {p.mean:.4f} is not the "
                        f"labels' {mean:.4f}")
    return ""


@dataclass(frozen=True)
class CurveProgress:
    trunks_done: int
    trunks: int
    seconds: float
    model_evals: int
    cache_hits: int


@dataclass(frozen=True)
class Curve:
    """A finished decision curve (dgrid.v1.CurveResult)."""

    plan: Plan
    trunks: int
    rows: Tuple[CurveRow, ...]
    heads: Tuple[HeadCurve, ...]
    png: bytes
    seconds: float
    model_evals: int
    judged_images: int
    proto: Any = field(default=None, repr=False, compare=False)
    # Fields added later come last, so that positional construction keeps
    # its old order: the same plot as an SVG document (vector), and the
    # grids' work found in the orchestrator's cache instead of run.
    svg: bytes = field(default=b"", repr=False)
    cache_hits: int = 0

    def head(self, name: str) -> HeadCurve:
        for h in self.heads:
            if h.head == name:
                return h
        raise KeyError(f"no head {name!r}; this curve's heads: "
                       f"{', '.join(h.head for h in self.heads) or 'none (no judge)'}")

    def save_png(self, path: str) -> None:
        _write_whole(path, self._plot(self.png, "PNG", path))

    def save_svg(self, path: str) -> None:
        _write_whole(path, self._plot(self.svg, "SVG", path))

    @staticmethod
    def _plot(data: bytes, kind: str, path: str) -> bytes:
        return _nonempty(data, path, f"this curve has no {kind} plot (a curve read from a record "
                         "keeps only its numbers)")

    def save_record(self, path: str) -> None:
        """Writes the curve without its plots as JSON (dgrid.v1.CurveResult,
        the file ``dgrid curve`` writes beside its plot); Curve.load reads it."""
        record = orchestrator_pb2.CurveResult()
        record.CopyFrom(self.proto)
        record.ClearField("png")
        record.ClearField("svg")
        text = _record_json(record)
        _write_whole(path, _inline_number_lists(text))

    @classmethod
    def load(cls, path: str) -> "Curve":
        """A curve from a JSON record: Curve.save_record's or ``dgrid curve``'s,
        or the explorer's "Curve JSON" (the request beside the curve)."""
        import json

        from google.protobuf import json_format

        record = orchestrator_pb2.CurveResult()
        try:
            # A PNG beside the record, say, is no UTF-8 (UnicodeDecodeError is
            # a ValueError).
            with open(path, encoding="utf-8") as f:
                text = f.read()
            value = json.loads(text, object_pairs_hook=_unique_keys)
            if isinstance(value, dict) and "curve" in value and set(value) <= {"request", "curve"}:
                value = value["curve"]  # the explorer's
            if not isinstance(value, dict):
                raise ValueError(f"a JSON object was expected, not {type(value).__name__}")
            json_format.ParseDict(value, record)
        except (json_format.ParseError, ValueError) as e:  # JSONDecodeError is one
            raise ValueError(f"{path} is not a curve record: {e}") from None
        if record.trunks <= 0:
            raise ValueError(f"{path} is not a curve record: it has no trunks")
        if problem := _labels_disagree(record):
            raise ValueError(f"{path} is not a curve record: {problem}")
        return cls.from_proto(record)

    @classmethod
    def from_proto(cls, c: Any) -> "Curve":
        return cls(
            plan=Plan.from_proto(c.plan),
            trunks=c.trunks,
            rows=tuple(CurveRow(r.branch_step, r.timestep,
                                Estimate.from_proto(r.divergence) if r.HasField("divergence")
                                else None,
                                Estimate.from_proto(r.divergence_to_trunk)) for r in c.rows),
            heads=tuple(HeadCurve(h.head, tuple(Estimate.from_proto(p) for p in h.p_differs),
                                  h.half_step if h.half_found else None,
                                  h.half_step_standard_error,
                                  (h.half_step_lo, h.half_step_hi),
                                  h.half_found_fraction, h.half_step_hi_after_last_row,
                                  tuple((i.lo, i.hi) for i in h.p_differs_95),
                                  tuple(h.labels)) for h in c.heads),
            png=bytes(c.png),
            seconds=c.seconds,
            model_evals=c.model_evals,
            judged_images=c.judged_images,
            proto=c,
            svg=bytes(c.svg),
            cache_hits=c.cache_hits,
        )


@dataclass(frozen=True)
class CurveDone:
    """The last streamed curve event: the finished curve."""

    curve: Curve


CurveEvent = Union[Plan, CurveProgress, CurveDone]
