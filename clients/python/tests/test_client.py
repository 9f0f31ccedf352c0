#!/usr/bin/python3
"""dgrid_client against a live stack (ctest python_client, LABELS python).

Starts one dgrid-denoiser on DGRID_TEST_MODEL (default: the shipped
models/fashion-mnist) and one dgrid-orchestrator on free loopback ports, runs
the example script, create_grid, stream_grid and promote, and stops both.
With DGRID_TEXT_MODEL (a text-conditioned bundle, e.g. the fixture
build/fixtures/textlatent) a second stack serves it for the text tests;
without it they are skipped.

    PYTHONPATH=build/python:clients/python DGRID_TEST_MODEL=build/fixtures/gaussian \\
        /usr/bin/python3 clients/python/tests/test_client.py
"""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import List, Optional
from xml.etree import ElementTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from dgrid_client import (  # noqa: E402
    Cell,
    Client,
    Curve,
    CurveProgress,
    DgridError,
    EventStream,
    Grid,
    GridDone,
    Model,
    Path,
    Plan,
    Segment,
    TrunkProgress,
)
from dgrid.v1 import denoiser_pb2, orchestrator_pb2  # noqa: E402
from live_stack import LiveStack, stop_on_sigterm  # noqa: E402
from pngcheck import png_info  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "make_grid.py")
PYTHON = os.environ.get("DGRID_PYTHON", "/usr/bin/python3")

# Small grids keep the test fast on a CPU with the shipped model:
# 10 steps, rows after steps 0 and 5, 2 branches = 40 model evaluations.
STEPS, BRANCH_STEPS, BRANCHES = 10, [0, 5], 2
CALL_TIMEOUT = 300.0
TEXT_MODEL = os.environ.get("DGRID_TEXT_MODEL", "")
LONG_PROMPT = " ".join(["a photo of a cat on a red sofa"] * 30)  # 240 words

stack: Optional[LiveStack] = None
client: Optional[Client] = None
prompt = ""
workdir = ""


def setUpModule() -> None:
    global stack, client, prompt, workdir
    workdir = tempfile.mkdtemp(prefix="dgrid-pyclient-")
    stack = LiveStack()
    try:
        stack.start()
        client = Client(stack.orchestrator, default_timeout=CALL_TIMEOUT)
        client.wait_ready(30)
        # The pool may need a health round before it knows the model.
        deadline = time.monotonic() + 60
        while True:
            try:
                models = client.list_models(timeout=5)
                if models:
                    break
            except DgridError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the orchestrator lists no models after 60 s")
            time.sleep(0.2)
        prompt = models[0].prompts[0] if models[0].prompts else ""
        print(f"stack: orchestrator {stack.orchestrator}, model {models[0].name} "
              f"({stack.model}), prompt '{prompt}'", file=sys.stderr)
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    if client is not None:
        client.close()
    if stack is not None:
        stack.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def small(seed: int, **kw: object) -> dict:
    args = dict(prompt=prompt, seed=seed, steps=STEPS, branch_steps=BRANCH_STEPS,
                branches=BRANCHES)
    args.update(kw)
    return args


class ClientTest(unittest.TestCase):
    def assertPng(self, data: bytes, what: str) -> None:
        try:
            png_info(data)
        except ValueError as e:
            self.fail(f"{what} is not a valid PNG: {e}")

    def assertGridShape(self, grid: Grid) -> None:
        self.assertEqual(len(grid.rows), len(BRANCH_STEPS))
        self.assertEqual([r.branch_step for r in grid.rows], BRANCH_STEPS)
        for r, row in enumerate(grid.rows):
            self.assertEqual(len(row.cells), BRANCHES)
            for c, cell in enumerate(row.cells):
                self.assertEqual((cell.row, cell.column), (r, c))
                self.assertPng(cell.png, f"cell ({r}, {c})")
                self.assertEqual(cell.path.init_seed, grid.trunk.path.init_seed)
            self.assertTrue(math.isfinite(row.divergence) and row.divergence >= 0)
        self.assertTrue(grid.trunk.is_trunk)
        self.assertPng(grid.png, "grid")
        self.assertPng(grid.trunk.png, "trunk")
        self.assertEqual(len(grid.divergence), len(BRANCH_STEPS))

    def test_list_models(self) -> None:
        models = client.list_models()
        self.assertGreaterEqual(len(models), 1)
        m = models[0]
        self.assertTrue(m.name)
        self.assertGreater(m.defaults.steps, 0)
        self.assertEqual(len(m.latent_shape), 3)

    def test_example_writes_png(self) -> None:
        out = os.path.join(workdir, "grid.png")
        record = os.path.join(workdir, "grid.json")
        argv = [PYTHON, EXAMPLE, "--target", stack.orchestrator, "--prompt", prompt,
                "--seed", "7", "--out", out, "--steps", str(STEPS), "--branches",
                str(BRANCHES), "--branch-steps", ",".join(map(str, BRANCH_STEPS)),
                "--record", record]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT + 30,
                             env=dict(os.environ))
        self.assertEqual(run.returncode, 0, f"{run.stdout}\n{run.stderr}")
        self.assertIn("wrote", run.stdout)
        with open(out, "rb") as f:
            width, height, _ = png_info(f.read())
        self.assertGreater(width, 0)
        self.assertGreater(height, 0)

        # The record promotes like `dgrid promote grid.json --row 2 --col 2`.
        promoted = client.promote(record, 1, 1)
        wanted = client.promote_request(record, 1, 1).trunk
        self.assertEqual(promoted.plan.trunk.to_proto(), wanted)
        self.assertEqual(promoted.trunk.path.to_proto(), wanted)
        self.assertEqual(promoted.plan.steps, STEPS)

    def test_example_reports_errors(self) -> None:
        run = subprocess.run(
            [PYTHON, EXAMPLE, "--target", stack.orchestrator, "--prompt", "no-such-prompt",
             "--out", os.path.join(workdir, "bad.png")],
            capture_output=True, text=True, timeout=60, env=dict(os.environ))
        self.assertEqual(run.returncode, 1)
        self.assertIn("INVALID_ARGUMENT", run.stderr)

    def test_create_grid(self) -> None:
        grid = client.create_grid(**small(11))
        self.assertGridShape(grid)
        self.assertEqual(grid.plan.steps, STEPS)
        self.assertEqual(grid.plan.prompt, prompt)
        self.assertEqual(grid.plan.branches, BRANCHES)
        self.assertEqual(grid.cell(1, 0), grid.rows[1].cells[0])
        with self.assertRaises(IndexError):
            grid.cell(len(BRANCH_STEPS), 0)

    def test_stream_grid_cells_before_grid(self) -> None:
        events: List[object] = list(client.stream_grid(**small(23)))
        kinds = [type(e).__name__ for e in events]
        self.assertIsInstance(events[0], Plan, kinds)
        self.assertIsInstance(events[-1], GridDone, kinds)
        self.assertEqual(sum(isinstance(e, GridDone) for e in events), 1, kinds)
        plan: Plan = events[0]
        cells = [e for e in events if isinstance(e, Cell)]
        # Every cell (the branches and the trunk) streams before the grid.
        self.assertEqual(len(cells), plan.cells, kinds)
        self.assertEqual(len(cells), len(BRANCH_STEPS) * BRANCHES + 1)
        self.assertLess(kinds.index("Cell"), kinds.index("GridDone"))
        for e in events:
            if isinstance(e, TrunkProgress):
                self.assertGreaterEqual(e.step, 0)  # step 0: x_T
                self.assertLess(e.step, STEPS)
        grid = events[-1].grid
        self.assertGridShape(grid)
        streamed = {(c.row, c.column): c for c in cells}
        for c in grid.cells + (grid.trunk,):
            self.assertEqual(streamed[(c.row, c.column)].path, c.path)
            self.assertEqual(streamed[(c.row, c.column)].png, c.png)

    def test_decision_curve(self) -> None:
        progress: List[CurveProgress] = []
        args = small(500)
        curve = client.decision_curve(3, on_progress=progress.append, **args)
        self.assertEqual(curve.trunks, 3)
        # A trunk slower than the server's 15 s keepalive repeats a count.
        done = [p.trunks_done for p in progress]
        self.assertEqual(done, sorted(done))
        self.assertEqual(sorted(set(done) - {0}), [1, 2, 3])
        self.assertEqual([r.branch_step for r in curve.rows], BRANCH_STEPS)
        judge = client.list_models()[0].judge_heads
        self.assertEqual(tuple(h.head for h in curve.heads), judge)
        for head in curve.heads:
            for p in head.p_differs:
                self.assertTrue(0 <= p.mean <= 1 and p.standard_error >= 0)
        self.assertEqual(curve.judged_images,
                         (3 * (1 + len(BRANCH_STEPS) * BRANCHES)) if judge else 0)
        self.assertPng(curve.png, "curve")
        # The same figure as SVG, at the PNG's size.
        svg = ElementTree.fromstring(curve.svg)
        self.assertEqual(svg.tag, "{http://www.w3.org/2000/svg}svg")
        width, height, _ = png_info(curve.png)
        self.assertEqual((svg.get("width"), svg.get("height")), (f"{width}px", f"{height}px"))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "curve.svg")
            curve.save_svg(path)
            with open(path, "rb") as f:
                self.assertEqual(f.read(), curve.svg)
        for row in curve.rows:
            self.assertIsNotNone(row.divergence)
        # One branch per row: no pair of branches, so no pairwise divergence.
        single = client.decision_curve(2, **small(510, branches=1))
        self.assertEqual([r.divergence for r in single.rows], [None] * len(BRANCH_STEPS))
        self.assertTrue(all(r.divergence_to_trunk.mean > 0 for r in single.rows))
        with self.assertRaises(DgridError) as bad:
            client.decision_curve(1, **args)
        self.assertEqual(bad.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("trunks", bad.exception.details)
        # A curve past its timeout names the one setting a curve reads.
        with self.assertRaises(DgridError) as late:
            client.decision_curve(20, timeout=0.05, **small(520))
        self.assertEqual((late.exception.code, late.exception.details),
                         (grpc.StatusCode.DEADLINE_EXCEEDED,
                          "not done within this client's timeout (the call's timeout=)"))

    def test_a_silent_orchestrator_ends_the_curve(self) -> None:
        """Stopped mid-curve (SIGSTOP, its connection open), the orchestrator
        sends nothing; the curve gives up after ``silence`` seconds."""
        orchestrator = next(p for p in stack.processes if stack.names[p.pid] == "orchestrator")
        events = client.stream_decision_curve(200, silence=2.0, **small(700))
        self.assertIsInstance(next(events), Plan)
        os.kill(orchestrator.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            with self.assertRaises(DgridError) as lost:
                for _ in events:
                    pass
            waited = time.monotonic() - stopped
        finally:
            os.kill(orchestrator.pid, signal.SIGCONT)
        self.assertEqual(lost.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("for 2 s (silence=", lost.exception.details)
        self.assertGreaterEqual(waited, 1.9)
        self.assertLess(waited, 30)
        with self.assertRaisesRegex(ValueError, "silence: expected seconds > 0 or None"):
            next(client.stream_decision_curve(2, silence=0, **small(701)))
        self.assertTrue(client.list_models(timeout=30))  # served again

    def test_the_callers_own_time_is_no_silence(self) -> None:
        """Time the caller spends between events does not count as the
        server's silence: a slow consumer's curve completes."""
        events = client.stream_decision_curve(2, silence=2.0, **small(720))
        kinds = []
        for event in events:
            kinds.append(type(event).__name__)
            time.sleep(2.5)
        self.assertEqual(kinds[0], "Plan")
        self.assertEqual(kinds[-1], "CurveDone")

    def test_stream_closed_early_cancels(self) -> None:
        stream = client.stream_grid(**small(31))
        first = next(stream)
        self.assertIsInstance(first, Plan)
        stream.close()  # cancels the call; the server must stay usable
        self.assertGridShape(client.create_grid(**small(32)))

    def test_a_stream_is_cancelled_from_another_thread(self) -> None:
        """cancel() ends a stream whose reader waits for its next event (a
        generator's close() refused, from another thread, while it ran)."""
        long_grid = small(740, steps=999, branch_steps=[0, 500], branches=8)
        for name, make in (("grid", lambda: client.stream_grid(**long_grid)),
                           ("curve", lambda: client.stream_decision_curve(200, **small(741)))):
            events = make()
            self.assertIsInstance(next(events), Plan, name)
            threading.Timer(0.3, events.cancel).start()
            started = time.monotonic()
            with self.assertRaises(DgridError, msg=name) as cancelled:
                for _ in events:
                    pass
            self.assertLess(time.monotonic() - started, 20, name)
            self.assertEqual(cancelled.exception.code, grpc.StatusCode.CANCELLED, name)
            self.assertIn("cancel()", cancelled.exception.details, name)
            events.cancel()  # once ended, a no-op
        # Before the first next(): no call is made.
        started: List[int] = []
        events = EventStream(lambda: started.append(1), lambda call: iter(()), "StreamGrid")
        events.cancel()
        with self.assertRaises(DgridError) as cancelled:
            next(events)
        self.assertEqual(cancelled.exception.code, grpc.StatusCode.CANCELLED)
        self.assertEqual(started, [])
        self.assertGridShape(client.create_grid(**small(743)))

    def test_errors_survive_pickling(self) -> None:
        # A process pool's worker sends its exception to the parent pickled.
        error = DgridError("CreateGrid", grpc.StatusCode.INVALID_ARGUMENT, "steps: too many")
        again = pickle.loads(pickle.dumps(error))
        self.assertEqual((again.method, again.code, again.details, str(again)),
                         (error.method, error.code, error.details, str(error)))

    def test_model_and_trunk_progress_carry_every_field(self) -> None:
        raw = client._stub.ListModels(orchestrator_pb2.ListModelsRequest(), timeout=30).models[0]
        model = next(m for m in client.list_models() if m.name == raw.name)
        self.assertEqual(model.judge_labels, tuple(tuple(h.labels) for h in raw.judge.heads))
        self.assertEqual(len(model.judge_labels), len(model.judge_heads))
        self.assertEqual(model.steps_offset, raw.steps_offset)
        self.assertEqual(model.set_alpha_to_one, raw.set_alpha_to_one)
        self.assertEqual(model.float_timesteps, raw.float_timesteps)
        self.assertTrue(model.float_timesteps)  # the shipped fashion-mnist's
        self.assertEqual(model.default_size is None, not raw.HasField("default_size"))
        trunk = [e for e in client.stream_grid(**small(760)) if isinstance(e, TrunkProgress)]
        self.assertTrue(trunk)
        for t in trunk:
            self.assertRegex(t.source, r"^(127\.0\.0\.1:\d+|cache)$")

    def test_promote_passes_on_an_enum_value_it_cannot_name(self) -> None:
        # A record from a newer server: its kinds go across as numbers.
        record = client.create_grid(**small(750)).record()
        record.request.branch_noise = 7
        record.request.spacing = 9
        request = Client.promote_request(record, 1, 0, branches=1)
        self.assertEqual((request.branch_noise, request.spacing), (7, 9))
        self.assertEqual(request.branches.value, 1)
        # An override still sets it by name.
        request = Client.promote_request(record, 1, 0, branch_noise="trunk", spacing="leading")
        self.assertEqual(request.branch_noise, orchestrator_pb2.BRANCH_NOISE_TRUNK)
        self.assertEqual(request.spacing, denoiser_pb2.SPACING_LEADING)

    def test_a_grid_without_its_png_is_not_saved(self) -> None:
        record = client.create_grid(**small(755)).record()
        path = os.path.join(workdir, "no-png.png")
        with self.assertRaisesRegex(ValueError, "this grid has no PNG"):
            Grid.from_proto(record.grid, record.request).save_png(path)
        self.assertFalse(os.path.exists(path))

    def test_a_switch_the_model_reads_as_the_prompt_says_so(self) -> None:
        if not prompt:
            self.skipTest("the model has no classes to switch to")
        switched = client.create_grid(**small(770, switch_prompt=prompt))
        plain = client.create_grid(**small(770))
        self.assertTrue(switched.plan.switch_unseen)
        self.assertFalse(plain.plan.switch_unseen)
        self.assertEqual([c.png for c in switched.cells], [c.png for c in plain.cells])

    def test_promote(self) -> None:
        grid = client.create_grid(**small(41))
        row, col = len(BRANCH_STEPS) - 1, BRANCHES - 1
        cell = grid.cell(row, col)
        promoted = client.promote(grid, row, col)
        self.assertGridShape(promoted)
        # The promoted cell is the new trunk: same path, same image.
        self.assertEqual(promoted.plan.trunk, cell.path)
        self.assertEqual(promoted.trunk.path, cell.path)
        self.assertEqual(promoted.trunk.png, cell.png)
        # Its branches share the promoted path's initial latent.
        self.assertEqual(promoted.cell(0, 0).path.init_seed, cell.path.init_seed)

        # From a plain GridRecord / Grid message too, with an override.
        record = grid.record()
        self.assertEqual(len(record.grid.png), 0)
        again = client.promote(record, row, col, branches=1)
        self.assertEqual(again.trunk.png, cell.png)
        self.assertEqual([len(r.cells) for r in again.rows], [1] * len(BRANCH_STEPS))
        with self.assertRaises(IndexError):
            client.promote(grid, row, BRANCHES)

    def test_sampler_reaches_the_plan_and_promote_keeps_it(self) -> None:
        grid = client.create_grid(**small(61, sampler="euler_a"))
        self.assertEqual(grid.request.sampler, denoiser_pb2.SAMPLER_EULER_ANCESTRAL)
        self.assertEqual(grid.plan.sampler, "euler_ancestral")
        self.assertEqual(client.create_grid(**small(61)).plan.sampler, "ddim")
        promoted = client.promote(grid, 1, 0)
        self.assertEqual(promoted.plan.sampler, "euler_ancestral")
        self.assertEqual(promoted.trunk.png, grid.cell(1, 0).png)

    def test_bearer_token(self) -> None:
        token_file = os.path.join(workdir, "token")
        with open(token_file, "w") as f:
            f.write("s3cret-token\n")
        target = stack.add_orchestrator([f"--auth_token_file={token_file}"], "orchestrator-auth")
        with Client(target, token="s3cret-token") as authed:
            authed.wait_ready(30)
            self.assertGridShape(authed.create_grid(**small(51)))
        # As read from the file, newline and all.
        with open(token_file) as f, Client(target, token=f.read()) as from_file:
            self.assertTrue(from_file.list_models(timeout=30))
        with self.assertRaises(ValueError) as refused:
            Client(target, token="s3cret token")
        self.assertEqual(str(refused.exception),
                         "token: holds a space, a control character or non-ASCII")
        with self.assertRaises(ValueError):
            Client(target, token="\ufeffs3cret-token")  # a BOM from an editor
        with Client(target) as anonymous:
            with self.assertRaises(DgridError) as caught:
                anonymous.list_models(timeout=30)
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        with Client(target, token="wrong") as wrong:
            with self.assertRaises(DgridError) as caught:
                list(wrong.stream_grid(**small(52), timeout=30))
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED)

    def test_records_interoperate_with_cli(self) -> None:
        """A sidecar from `dgrid grid` promotes here, and one from
        Grid.save_record promotes with `dgrid promote` (rows/cols 1-based there)."""
        dgrid = os.path.join(os.path.dirname(stack.processes[0].args[0]), "dgrid")
        if not os.access(dgrid, os.X_OK):
            self.skipTest(f"no {dgrid}")
        out = os.path.join(workdir, "cli.png")
        run = subprocess.run(
            [dgrid, "grid", f"--target={stack.orchestrator}", f"--prompt={prompt}", "--seed=61",
             f"--steps={STEPS}", f"--branches={BRANCHES}",
             "--branch_steps=" + ",".join(map(str, BRANCH_STEPS)), f"-o={out}"],
            capture_output=True, text=True, timeout=CALL_TIMEOUT + 30)
        self.assertEqual(run.returncode, 0, run.stderr)
        cli_record = os.path.join(workdir, "cli.json")
        promoted = client.promote(cli_record, 1, 0)
        self.assertEqual(promoted.plan.steps, STEPS)
        self.assertEqual(promoted.trunk.path.to_proto(),
                         client.promote_request(cli_record, 1, 0).trunk)

        grid = client.create_grid(**small(62))
        py_record = os.path.join(workdir, "py.json")
        grid.save_record(py_record)
        # Zeros too, as dgrid's sidecar has them (row 0's branch step).
        with open(py_record, encoding="utf-8") as f:
            self.assertIn('"branch_step": 0', f.read())
        run = subprocess.run(
            [dgrid, "promote", py_record, "--row=2", "--col=1", f"--target={stack.orchestrator}",
             f"-o={os.path.join(workdir, 'py-promoted.png')}"],
            capture_output=True, text=True, timeout=CALL_TIMEOUT + 30)
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(os.path.join(workdir, "py-promoted.json"), encoding="utf-8") as f:
            from dgrid.v1 import orchestrator_pb2
            back = json_format.Parse(f.read(), orchestrator_pb2.GridRecord())
        self.assertEqual(back.grid.trunk.path, grid.cell(1, 0).path.to_proto())

    def test_class_model_takes_no_negative_prompt(self) -> None:
        m = client.list_models()[0]
        self.assertEqual(m.conditioning, "class")
        self.assertFalse(m.is_text)
        self.assertEqual(m.example_prompts, ())
        with self.assertRaises(DgridError) as caught:
            client.create_grid(**small(71, negative_prompt="blurry"))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("negative_prompt", caught.exception.details)
        stream = client.stream_grid(**small(72))
        plan = next(stream)
        stream.close()
        self.assertEqual((plan.negative_prompt, plan.tokens_dropped), ("", False))

    def test_errors_carry_code_and_message(self) -> None:
        with self.assertRaises(DgridError) as caught:
            client.create_grid(prompt="no-such-prompt", seed=1, steps=STEPS)
        e = caught.exception
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("INVALID_ARGUMENT", str(e))
        self.assertTrue(e.details)
        with self.assertRaises(DgridError) as caught:
            list(client.stream_grid(prompt=prompt, seed=1, steps=STEPS, branch_steps=[STEPS]))
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

        # Nothing listens on port 1 (a port freed here could be another
        # test's server by now).
        with Client("127.0.0.1:1") as dead:
            with self.assertRaises(DgridError) as caught:
                dead.list_models(timeout=5)
            self.assertIn(caught.exception.code,
                          (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))

        # A denoiser's address by mistake: its UNIMPLEMENTED says why.
        with Client(stack.denoisers[0]) as denoiser:
            with self.assertRaises(DgridError) as caught:
                denoiser.list_models(timeout=30)
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNIMPLEMENTED)
            self.assertIn(f"the server at {stack.denoisers[0]} does not serve it",
                          caught.exception.details)


def grid_plan(sampler: int) -> orchestrator_pb2.GridPlan:
    plan = orchestrator_pb2.GridPlan()
    plan.sampler.sampler = sampler
    return plan


class RequestTest(unittest.TestCase):
    """The client's own conversions; no server."""

    def test_negative_prompt_is_sent_and_promote_keeps_it(self) -> None:
        r = Client.build_request(prompt="a photo of a cat", negative_prompt="blurry", seed=3,
                                 steps=10)
        self.assertEqual((r.prompt, r.negative_prompt), ("a photo of a cat", "blurry"))
        grid = orchestrator_pb2.Grid()
        grid.plan.prompt = "a photo of a cat"
        grid.plan.negative_prompt = "blurry"
        row = grid.rows.add(branch_step=5)
        row.cells.add(row=0, column=0, path=denoiser_pb2.Path(init_seed=3))
        record = orchestrator_pb2.GridRecord(request=r, grid=grid)
        promoted = Client.promote_request(record, 0, 0)
        self.assertEqual(promoted.negative_prompt, "blurry")
        self.assertEqual(Client.promote_request(record, 0, 0, steps=20).negative_prompt, "blurry")
        # Without the request, the plan's text is the request's.
        self.assertEqual(Client.promote_request(grid, 0, 0).negative_prompt, "blurry")

    def test_sampler_is_sent_by_name_and_promote_keeps_it(self) -> None:
        self.assertEqual(Client.build_request().sampler, denoiser_pb2.SAMPLER_UNSPECIFIED)
        self.assertEqual(Client.build_request(sampler="ddim").sampler, denoiser_pb2.SAMPLER_DDIM)
        for name in ("euler_ancestral", "euler_a", "Euler_Ancestral"):
            self.assertEqual(Client.build_request(sampler=name).sampler,
                             denoiser_pb2.SAMPLER_EULER_ANCESTRAL, name)
        with self.assertRaisesRegex(ValueError, "sampler must be"):
            Client.build_request(sampler="heun")
        r = Client.build_request(seed=3, steps=10, sampler="euler_ancestral")
        grid = orchestrator_pb2.Grid()
        grid.plan.sampler.sampler = denoiser_pb2.SAMPLER_EULER_ANCESTRAL
        row = grid.rows.add(branch_step=5)
        row.cells.add(row=0, column=0, path=denoiser_pb2.Path(init_seed=3))
        record = orchestrator_pb2.GridRecord(request=r, grid=grid)
        self.assertEqual(Client.promote_request(record, 0, 0).sampler,
                         denoiser_pb2.SAMPLER_EULER_ANCESTRAL)
        self.assertEqual(Client.promote_request(record, 0, 0, steps=20).sampler,
                         denoiser_pb2.SAMPLER_EULER_ANCESTRAL)
        # Without the request, the plan's sampler is the request's.
        self.assertEqual(Client.promote_request(grid, 0, 0).sampler,
                         denoiser_pb2.SAMPLER_EULER_ANCESTRAL)
        # A request that left it to the preset still does after promotion.
        record.request.sampler = denoiser_pb2.SAMPLER_UNSPECIFIED
        self.assertEqual(Client.promote_request(record, 0, 0, steps=20).sampler,
                         denoiser_pb2.SAMPLER_UNSPECIFIED)

    def test_promote_keeps_and_overrides_the_size_conditioning(self) -> None:
        r = Client.build_request(seed=3, steps=10, original_size=(512, 512), crop=(0, 64))
        grid = orchestrator_pb2.Grid()
        row = grid.rows.add(branch_step=5)
        row.cells.add(row=0, column=0, path=denoiser_pb2.Path(init_seed=3))
        record = orchestrator_pb2.GridRecord(request=r, grid=grid)
        for promoted in (Client.promote_request(record, 0, 0),
                         Client.promote_request(record, 0, 0, steps=20)):
            self.assertEqual(promoted.size, r.size)
        overridden = Client.promote_request(record, 0, 0, crop=(32, 0))
        self.assertEqual((overridden.size.original_height, overridden.size.crop_top,
                          overridden.size.crop_left), (512, 32, 0))
        # A request without size conditioning gets none from promotion.
        record.request.ClearField("size")
        self.assertFalse(Client.promote_request(record, 0, 0, steps=20).HasField("size"))

    def test_promote_keeps_spacing_and_pins_the_model_and_refuses_a_seed(self) -> None:
        r = Client.build_request(seed=3, steps=10, spacing="trailing")
        grid = orchestrator_pb2.Grid()
        grid.plan.model = "fashion-mnist"
        row = grid.rows.add(branch_step=5)
        row.cells.add(row=0, column=0, path=denoiser_pb2.Path(init_seed=3))
        record = orchestrator_pb2.GridRecord(request=r, grid=grid)
        promoted = Client.promote_request(record, 0, 0, steps=20)  # raised AttributeError
        self.assertEqual(promoted.spacing, denoiser_pb2.SPACING_TRAILING)
        self.assertEqual(promoted.steps.value, 20)
        self.assertEqual(Client.promote_request(record, 0, 0, spacing="linspace").spacing,
                         denoiser_pb2.SPACING_LINSPACE)
        # The grid's model, though the request named none.
        self.assertEqual(promoted.model, "fashion-mnist")
        for fixed in ({"seed": 5}, {"trunk": Path.from_proto(denoiser_pb2.Path(init_seed=9))}):
            with self.assertRaisesRegex(TypeError, "cannot be overridden"):
                Client.promote_request(record, 0, 0, **fixed)
        # None is no override.
        self.assertEqual(Client.promote_request(record, 0, 0, seed=None, steps=20).trunk,
                         promoted.trunk)

    def test_paths_and_promote_check_their_arguments_naming_them(self) -> None:
        # A segment's prompt without switched=True was dropped: the path ran
        # unswitched. A prompt beside a class_index lost the prompt.
        with self.assertRaisesRegex(ValueError, r"^Segment.prompt: .*switched=True"):
            Segment(5, 2, prompt="bag")
        with self.assertRaisesRegex(ValueError, r"^Segment.class_index: .*switched=True"):
            Segment(5, 2, class_index=3)
        with self.assertRaisesRegex(ValueError, r"^Segment.prompt: .*not both"):
            Segment(5, 2, True, prompt="coat", class_index=8)
        # Protobuf's own refusals said no argument (or raised AttributeError).
        with self.assertRaisesRegex(TypeError, r"^Path.init_seed: expected an int, got str"):
            Path("1")
        with self.assertRaisesRegex(TypeError, r"^Path.segments\[0\]: expected a Segment"):
            Path(1, ((0, 1),))
        with self.assertRaisesRegex(TypeError, r"^Segment.from_step: expected an int, got bool"):
            Segment(True, 1)
        self.assertEqual(Path(1, (Segment(0, 2), Segment(5, 3, True, prompt="bag"))).to_proto()
                         .segments[1].conditioning.prompt, "bag")
        # A row of True was row 1; 0.5 a TypeError about tuple indices.
        grid = orchestrator_pb2.Grid()
        row = grid.rows.add(branch_step=5)
        row.cells.add(row=0, column=0, path=denoiser_pb2.Path(init_seed=3))
        record = orchestrator_pb2.GridRecord(request=Client.build_request(seed=3), grid=grid)
        for bad in (True, 0.5):
            with self.assertRaisesRegex(TypeError, r"^row: expected an int"):
                Client.promote_request(record, bad, 0)
        # A record without rows says so (it said the row must be in [0, 0)).
        with self.assertRaisesRegex(IndexError, "this grid has no rows"):
            Client.promote_request(orchestrator_pb2.GridRecord(), 0, 0)

    def test_sizes_take_any_int_and_name_the_argument(self) -> None:
        class Index:  # an int-like, as numpy's integers are
            def __init__(self, v: int) -> None:
                self.v = v

            def __index__(self) -> int:
                return self.v
        r = Client.build_request(original_size=(Index(512), 512), crop=[0, Index(64)])
        self.assertEqual((r.size.original_height, r.size.crop_left), (512, 64))
        with self.assertRaisesRegex(ValueError, "original_size: give two ints"):
            Client.build_request(original_size=(512,))
        with self.assertRaisesRegex(ValueError, "target_size: give two ints"):
            Client.build_request(target_size=(1.5, 2))

    def test_arguments_are_checked_naming_them(self) -> None:
        # Protobuf's own refusals ("Value out of range: -1") say no field.
        cases = [
            ({"steps": 2**40}, ValueError, r"^steps: 1099511627776 is out of range \[-2147483648, "),
            ({"seed": -1}, ValueError, r"^seed: -1 is out of range \[0, 18446744073709551615\]"),
            ({"seed": 2**64}, ValueError, r"^seed: "),
            ({"steps": 5.5}, TypeError, r"^steps: expected an int, got float 5.5"),
            ({"branches": "2"}, TypeError, r"^branches: expected an int, got str '2'"),
            ({"branch_steps": [0, "x"]}, TypeError, r"^branch_steps\[1\]: expected an int"),
            ({"branch_steps": 5}, TypeError, r"^branch_steps: expected a sequence of ints"),
            ({"eta": "0.5"}, TypeError, r"^eta: expected a number, got str"),
            ({"guidance": None, "eta": True}, TypeError, r"^eta: expected a number"),
            ({"prompt": "\ud800 cat"}, ValueError, r"^prompt: not valid text: surrogates"),
            ({"switch_prompt": 7}, TypeError, r"^switch_prompt: expected a str, got int 7"),
            ({"crop": (0, 2**40)}, ValueError, r"^crop: 1099511627776 is out of range"),
            ({"steps": True}, TypeError, r"^steps: expected an int, got bool True"),
            ({"guidance": 10**400}, ValueError, r"^guidance: 1000.* is out of range for a float"),
            # A float32 on the wire: protobuf would send infinity.
            ({"guidance": 1e39}, ValueError, r"^guidance: 1e\+39 is out of range for a float"),
            ({"trunk": "7_0-1"}, TypeError, r"^trunk: expected a dgrid_client\.Path .*got str '7_0-1'"),
            ({"prompt": "x" * 1000 + "\ud800"}, ValueError, r"^prompt: not valid text"),
            ({"model": b"y" * 1000}, TypeError, r"^model: expected a str, got bytes b'y{35}\.\.\.$"),
        ]
        for kwargs, error, pattern in cases:
            with self.subTest(kwargs=str(kwargs)[:60]):
                with self.assertRaisesRegex(error, pattern):
                    Client.build_request(**kwargs)
        # None leaves a field unset, as protobuf took it.
        self.assertEqual(Client.build_request(prompt=None, seed=None, model=None, preset=None),
                         Client.build_request())
        # The edges of the ranges, and int-likes, are taken.
        r = Client.build_request(seed=2**64 - 1, steps=2**31 - 1, eta=1, guidance=7.5,
                                 branch_steps=(0, 5))
        self.assertEqual((r.seed, r.steps.value, r.eta.value), (2**64 - 1, 2**31 - 1, 1.0))
        with Client("127.0.0.1:1", default_timeout=None) as c:
            with self.assertRaisesRegex(ValueError, r"^trunks: 8589934592 is out of range"):
                next(c.stream_decision_curve(2**33, seed=1))
            with self.assertRaisesRegex(TypeError, r"^timeout: expected seconds > 0 or None, "
                                                   r"got str '5'"):
                c.list_models(timeout="5")
        # The example says so without a traceback.
        run = subprocess.run([PYTHON, EXAMPLE, "--target", "127.0.0.1:1", "--timeout", "0"],
                             capture_output=True, text=True, timeout=60, env=dict(os.environ))
        self.assertEqual((run.returncode, run.stderr.strip()),
                         (1, "make_grid: timeout: expected seconds > 0 or None, got 0.0"))

    def test_streams_check_their_arguments_when_called(self) -> None:
        # Not at the first next(), which a caller may reach far from the call.
        with Client("127.0.0.1:1", default_timeout=None) as c:
            with self.assertRaisesRegex(ValueError, r"^timeout: expected seconds > 0"):
                c.stream_decision_curve(2, timeout=0, seed=1)
            with self.assertRaisesRegex(ValueError, r"^silence: expected seconds > 0"):
                c.stream_decision_curve(2, silence=0, seed=1)
            with self.assertRaisesRegex(ValueError, r"^timeout: expected seconds > 0"):
                c.stream_grid(prompt="x", timeout=-1)
            # Named as the caller gave them, not as build_request's.
            with self.assertRaisesRegex(TypeError, r"^unknown request fields: \['bogus'\]"):
                c.decision_curve(2, bogus=1)
            with self.assertRaisesRegex(TypeError, r"^on_progress: expected a callable, got int 5"):
                c.decision_curve(2, on_progress=5)
            with self.assertRaisesRegex(ValueError, r"^timeout: expected seconds > 0"):
                c.wait_ready(0)
            with self.assertRaisesRegex(TypeError, r"^timeout: expected seconds > 0 or None"):
                c.wait_ready("5")

    def test_a_closed_client_raises_dgrid_error(self) -> None:
        c = Client("127.0.0.1:1")
        stream = c.stream_grid(prompt="x")
        c.close()
        for call in (c.list_models, lambda: c.create_grid(prompt="x"), lambda: next(stream),
                     lambda: next(c.stream_decision_curve(2, seed=1)), c.wait_ready):
            with self.assertRaises(DgridError) as closed:
                call()
            self.assertEqual(closed.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("is closed", closed.exception.details)

    def test_a_url_is_not_a_target(self) -> None:
        for target in ("http://127.0.0.1:5000", "HTTPS://dgrid.example:443"):
            with self.assertRaisesRegex(ValueError, r"^target: expected host:port \(a gRPC address"):
                Client(target)

    def test_a_file_that_is_no_record_is_a_value_error(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "grid.png")
            with open(png, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
            listed = os.path.join(tmp, "list.json")
            with open(listed, "w") as f:
                f.write("[1, 2]")
            for path in (png, listed):
                with self.assertRaisesRegex(ValueError, "is not a curve record"):
                    Curve.load(path)
                with self.assertRaisesRegex(ValueError, "is not a grid record"):
                    Client.promote_request(path, 0, 0)

    def test_a_timeout_of_zero_or_less_is_refused_naming_it(self) -> None:
        # gRPC would take it as a deadline already past.
        with self.assertRaisesRegex(ValueError, r"^default_timeout: expected seconds > 0"):
            Client("127.0.0.1:1", default_timeout=0)
        with Client("127.0.0.1:1", default_timeout=None) as c:
            for bad in (0, -5.0):
                with self.assertRaisesRegex(ValueError, r"^timeout: expected seconds > 0"):
                    c.list_models(timeout=bad)
                with self.assertRaisesRegex(ValueError, r"^timeout: expected seconds > 0"):
                    next(c.stream_decision_curve(2, timeout=bad, seed=1))

    def test_a_stream_left_early_cancels_its_call_at_once(self) -> None:
        """A for loop left early (break, an exception) drops the stream: its
        call is cancelled then, not when the garbage collector finds it (a
        cycle through the stream held it, and a grid ran on)."""
        cancelled: List[int] = []

        class Call:
            def cancel(self) -> None:
                cancelled.append(1)

        def read(call: Call):
            try:
                yield from range(10)
            finally:
                call.cancel()

        gc.disable()
        try:
            for _ in EventStream(Call, read, "StreamGrid"):
                break
            self.assertEqual(cancelled, [1], "break")
            with self.assertRaises(KeyError):
                for _ in EventStream(Call, read, "StreamGrid"):
                    raise KeyError("in the loop's body")
            self.assertEqual(cancelled, [1, 1], "an exception")
        finally:
            gc.enable()

    def test_a_key_without_its_chain_is_refused(self) -> None:
        # gRPC's C core aborted the whole process on one without the other.
        cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        key = b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
        for kwargs in ({"private_key": key}, {"certificate_chain": cert}):
            with self.assertRaisesRegex(ValueError, "^private_key and certificate_chain go together"):
                Client("127.0.0.1:1", root_certificates=cert, **kwargs)

    def test_a_channel_of_the_callers_is_used_as_it_is(self) -> None:
        channel = grpc.insecure_channel(stack.orchestrator)
        try:
            for kwargs in ({"root_certificates": b"x"}, {"tls_name": "dgrid.example"},
                           {"private_key": b"k", "certificate_chain": b"c"}):
                with self.assertRaisesRegex(ValueError, "a channel given is used as it is"):
                    Client(stack.orchestrator, channel=channel, **kwargs)
            with Client(stack.orchestrator, channel=channel) as borrowed:
                self.assertTrue(borrowed.list_models(timeout=30))
            # Closing the client left the caller's channel open.
            with Client(stack.orchestrator, channel=channel) as again:
                self.assertTrue(again.list_models(timeout=30))
        finally:
            channel.close()

    def test_an_empty_or_odd_token_is_refused(self) -> None:
        # A token file of a newline alone would turn authentication off.
        for token in ("", "\n", " \t\r\n"):
            with self.assertRaisesRegex(ValueError, "^token: empty"):
                Client("127.0.0.1:1", token=token)
        # str.strip() took a no-break space as whitespace; the CLI does not.
        with self.assertRaisesRegex(ValueError, "non-ASCII"):
            Client("127.0.0.1:1", token="s3cret\xa0")
        with self.assertRaisesRegex(TypeError, "^token: expected a str, got bytes"):
            Client("127.0.0.1:1", token=b"s3cret")

    def test_an_infinite_timeout_is_none_and_a_huge_one_is_refused(self) -> None:
        # gRPC took both as a deadline already past (and threading refused
        # a silence past 9.2e9 s).
        with Client(stack.orchestrator, default_timeout=math.inf) as unbounded:
            self.assertTrue(unbounded.list_models())
        self.assertTrue(client.list_models(timeout=math.inf))
        events = list(client.stream_decision_curve(2, silence=math.inf, timeout=math.inf,
                                                   **small(730)))
        self.assertEqual(type(events[-1]).__name__, "CurveDone")
        for bad in (1e10, 1e300):
            with self.assertRaisesRegex(ValueError, r"^timeout: expected at most 1e\+09 seconds "
                                        r"\(None or math.inf: no limit\), got"):
                client.list_models(timeout=bad)

    def test_tls_options_without_root_certificates_are_refused(self) -> None:
        for kwargs in ({"tls_name": "dgrid.example"}, {"private_key": b"k"},
                       {"certificate_chain": b"c"}):
            with self.assertRaisesRegex(ValueError, "need root_certificates"):
                Client("127.0.0.1:1", **kwargs)

    def test_tls_files_that_are_not_pem_are_refused_naming_them(self) -> None:
        cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        key = b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
        for kwargs, message in (
                ({"root_certificates": b"garbage"}, "^root_certificates: holds no PEM certificate"),
                ({"root_certificates": cert, "private_key": cert, "certificate_chain": cert},
                 "^private_key: holds no PEM private key"),
                ({"root_certificates": cert, "private_key": key, "certificate_chain": key},
                 "^certificate_chain: holds no PEM certificate")):
            with self.assertRaisesRegex(ValueError, message):
                Client("127.0.0.1:1", **kwargs)
        with self.assertRaisesRegex(TypeError, "^root_certificates: expected PEM bytes"):
            Client("127.0.0.1:1", root_certificates="/etc/ssl/ca.pem")
        Client("127.0.0.1:1", root_certificates=cert, private_key=key,
               certificate_chain=cert).close()

    def test_a_port_gRPC_would_wrap_is_refused(self) -> None:
        for target in ("127.0.0.1:99999", "[::1]:0", "dns:///localhost:65536", "h:70000"):
            with self.assertRaisesRegex(ValueError, "^target: port .* is out of range"):
                Client(target)
        for target in ("127.0.0.1:65535", "[::1]:1", "dns:///localhost:50050",
                       "unix:/tmp/socket", "unix:0", "unix-abstract:99999", "localhost"):
            Client(target).close()

    def test_the_plan_carries_the_size_and_promote_from_a_grid_keeps_it(self) -> None:
        grid = orchestrator_pb2.Grid()
        grid.plan.size.original_height = 512
        grid.plan.size.original_width = 640
        grid.plan.size.crop_top = 32
        row = grid.rows.add(branch_step=5)
        row.cells.add(row=0, column=0, path=denoiser_pb2.Path(init_seed=3))
        self.assertEqual(Plan.from_proto(grid.plan).size, ((512, 640), (32, 0), (0, 0)))
        self.assertIsNone(Plan.from_proto(orchestrator_pb2.GridPlan()).size)
        # Without the request, the plan's size is the request's.
        self.assertEqual(Client.promote_request(grid, 0, 0).size, grid.plan.size)

    def test_a_curve_record_round_trips(self) -> None:
        result = orchestrator_pb2.CurveResult(trunks=4, seconds=2.5, model_evals=100,
                                              judged_images=20, png=b"png", svg=b"svg")
        result.plan.model = "fashion-mnist"
        row = result.rows.add(branch_step=5, timestep=901)
        row.divergence.mean, row.divergence.standard_error = 0.25, 0.5
        result.heads.add(head="class", half_found=True, half_step=12.5,
                         half_step_standard_error=1.5, half_found_fraction=1.0)
        result.heads[0].p_differs.add(mean=0.0, standard_error=0.0)  # zeros are kept
        result.cache_hits = 6
        curve = Curve.from_proto(result)
        self.assertEqual(curve.cache_hits, 6)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "curve.json")
            curve.save_record(path)
            loaded = Curve.load(path)
            self.assertEqual(loaded.cache_hits, 6)
            # With each trunk's labels: lists of numbers on one line, strings
            # as they are, and the labels must give the figures.
            labelled = orchestrator_pb2.CurveResult()
            labelled.CopyFrom(result)
            labelled.plan.prompt = "[1,2] → x"
            labels = labelled.trunk_labels.add(seed=7).heads.add(trunk=3)
            labels.rows.add(branches=[1, 2, 3, 4])
            Curve.from_proto(labelled).save_record(path)
            with self.assertRaisesRegex(ValueError, "1 trunks' labels for 4 trunks"):
                Curve.load(path)
            labelled.trunks = 1
            labelled.heads[0].p_differs[0].mean = 0.75  # 3 of the 4 branches differ
            Curve.from_proto(labelled).save_record(path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            self.assertIn('"branches": [1, 2, 3, 4]', text)
            self.assertIn('"prompt": "[1,2] → x"', text)
            again = Curve.load(path)
            self.assertEqual(again.proto.trunk_labels[0].heads[0].rows[0].branches, [1, 2, 3, 4])
            self.assertEqual(again.plan.prompt, "[1,2] → x")
            labelled.heads[0].p_differs[0].mean = 0.5  # pieced together by hand
            Curve.from_proto(labelled).save_record(path)
            with self.assertRaisesRegex(ValueError, "row 0: P\\(differs\\) 0.5000 is not the "
                                                    "labels' 0.7500"):
                Curve.load(path)
            with open(path, "w", encoding="utf-8") as f:
                f.write("{\"trunks\": \"four\"}")
            with self.assertRaisesRegex(ValueError, "is not a curve record"):
                Curve.load(path)
            with open(path, "w", encoding="utf-8") as f:
                f.write("{\"trunks\": 4, \"trunks\": 5}")
            with self.assertRaisesRegex(ValueError, "is not a curve record: duplicate key 'trunks'"):
                Curve.load(path)
            for empty in ("{}", "{\"curve\": {}}"):
                with open(path, "w", encoding="utf-8") as f:
                    f.write(empty)
                with self.assertRaisesRegex(ValueError, "is not a curve record: it has no trunks"):
                    Curve.load(path)
            # The explorer's "Curve JSON": the request beside the curve.
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"request": {"trunks": 4, "grid": {"model": "fashion-mnist"}},
                           "curve": json.loads(json_format.MessageToJson(result))}, f)
            from_page = Curve.load(path)
            # A curve read from a record has no plots: writing one is refused,
            # not an empty file.
            for save in (loaded.save_png, loaded.save_svg):
                with self.assertRaisesRegex(ValueError, "this curve has no (PNG|SVG) plot"):
                    save(os.path.join(tmp, "plot"))
            self.assertFalse(os.path.exists(os.path.join(tmp, "plot")))
        self.assertEqual((loaded.plan, loaded.trunks, loaded.rows, loaded.heads, loaded.seconds),
                         (curve.plan, curve.trunks, curve.rows, curve.heads, curve.seconds))
        self.assertEqual((from_page.plan, from_page.trunks, from_page.rows, from_page.heads),
                         (curve.plan, curve.trunks, curve.rows, curve.heads))
        self.assertEqual((loaded.png, loaded.svg), (b"", b""))  # the plots are files of their own

    def test_a_failed_save_keeps_the_previous_file(self) -> None:
        curve = Curve.from_proto(orchestrator_pb2.CurveResult(trunks=1, png=b"new png"))
        with tempfile.TemporaryDirectory() as tmp:
            real, link = os.path.join(tmp, "real.png"), os.path.join(tmp, "curve.png")
            os.symlink("real.png", link)
            curve.save_png(link)  # through the link, to the file it names
            self.assertTrue(os.path.islink(link))
            with open(real, "rb") as f:
                self.assertEqual(f.read(), b"new png")
            mask = os.umask(0)
            os.umask(mask)
            self.assertEqual(os.stat(real).st_mode & 0o777, 0o666 & ~mask)
            # A plot that is not bytes fails before the old file is touched.
            broken = Curve.from_proto(orchestrator_pb2.CurveResult(trunks=1))
            object.__setattr__(broken, "png", None)
            with self.assertRaisesRegex(TypeError, "cannot write .*curve.png: expected bytes"):
                broken.save_png(link)
            with open(real, "rb") as f:
                self.assertEqual(f.read(), b"new png")
            self.assertEqual(sorted(os.listdir(tmp)), ["curve.png", "real.png"])
            # A failed write names the caller's path, not the temporary file's.
            missing = os.path.join(tmp, "no-such-folder", "curve.png")
            with self.assertRaises(FileNotFoundError) as failed:
                curve.save_png(missing)
            self.assertEqual(failed.exception.filename, missing)
            folder = os.path.join(tmp, "folder")
            os.mkdir(folder)
            with self.assertRaises(IsADirectoryError) as failed:
                curve.save_png(folder)
            self.assertEqual((failed.exception.filename, failed.exception.filename2),
                             (folder, None))
            self.assertEqual(sorted(os.listdir(tmp)), ["curve.png", "folder", "real.png"])
            os.rmdir(folder)
            # A pipe (or a device) is refused, and stays what it was: it was
            # replaced by a regular file (as root, /dev/null itself).
            pipe = os.path.join(tmp, "pipe")
            os.mkfifo(pipe)
            os.symlink("pipe", os.path.join(tmp, "to-pipe"))
            for name in (pipe, os.path.join(tmp, "to-pipe")):
                with self.assertRaisesRegex(ValueError, "is not a regular file"):
                    curve.save_png(name)
            self.assertTrue(stat.S_ISFIFO(os.stat(pipe).st_mode))
            os.unlink(pipe)
            os.unlink(os.path.join(tmp, "to-pipe"))
            # A name of 254 bytes, one short of the usual limit, is written.
            longest = os.path.join(tmp, "c" * 250 + ".png")
            curve.save_png(longest)
            with open(longest, "rb") as f:
                self.assertEqual(f.read(), b"new png")

    def test_plan_and_model_name_the_sampler(self) -> None:
        self.assertEqual(Plan.from_proto(grid_plan(denoiser_pb2.SAMPLER_EULER_ANCESTRAL)).sampler,
                         "euler_ancestral")
        self.assertEqual(Plan.from_proto(grid_plan(denoiser_pb2.SAMPLER_DDIM)).sampler, "ddim")
        # Unspecified is DDIM (and what a server from before samplers sends).
        self.assertEqual(Plan.from_proto(orchestrator_pb2.GridPlan()).sampler, "ddim")
        info = denoiser_pb2.ModelInfo(name="m")
        info.defaults.sampler = denoiser_pb2.SAMPLER_EULER_ANCESTRAL
        self.assertEqual(Model.from_proto(info).defaults.sampler, "euler_ancestral")
        # Floats on the wire read back as the decimals sent (and as dgrid
        # prints them), not as 0.30000001192092896.
        plan = orchestrator_pb2.GridPlan()
        plan.sampler.eta, plan.sampler.guidance = 0.3, 7.5
        self.assertEqual((Plan.from_proto(plan).eta, Plan.from_proto(plan).guidance), (0.3, 7.5))
        info.defaults.eta = 0.1
        self.assertEqual(Model.from_proto(info).defaults.eta, 0.1)

    def test_plan_and_model_carry_the_text_fields(self) -> None:
        plan = Plan.from_proto(orchestrator_pb2.GridPlan(
            prompt="x", negative_prompt="y", prompt_tokens_dropped=5,
            negative_prompt_tokens_dropped=0))
        self.assertEqual((plan.negative_prompt, plan.prompt_tokens_dropped,
                          plan.negative_prompt_tokens_dropped, plan.tokens_dropped),
                         ("y", 5, 0, True))
        self.assertEqual(plan.unknown_words, ())
        self.assertEqual(Plan.from_proto(orchestrator_pb2.GridPlan(
            unknown_words=["xyzzy", "qux"])).unknown_words, ("xyzzy", "qux"))
        text = Model.from_proto(denoiser_pb2.ModelInfo(
            name="sd", conditioning="text", example_prompts=["a", "b"], max_prompt_tokens=77))
        self.assertEqual((text.is_text, text.example_prompts, text.max_prompt_tokens),
                         (True, ("a", "b"), 77))
        # A server from before text models sends no conditioning: a class model.
        self.assertEqual(Model.from_proto(denoiser_pb2.ModelInfo(name="old")).conditioning,
                         "class")

    def test_a_head_that_never_halves_keeps_its_bootstrap_figures(self) -> None:
        result = orchestrator_pb2.CurveResult(trunks=4)
        added = result.heads.add(head="class", half_found=False, half_step=0.0,
                                 half_step_standard_error=1.5, half_step_lo=24.0, half_step_hi=26.0,
                                 half_found_fraction=0.25, half_step_hi_after_last_row=True,
                                 labels=["shirt", "bag"])
        added.p_differs_95.add(lo=0.68, hi=1.0)
        head = Curve.from_proto(result).head("class")
        self.assertEqual((head.half_step, head.half_step_standard_error, head.half_step_interval,
                          head.half_found_fraction), (None, 1.5, (24.0, 26.0), 0.25))
        self.assertEqual((head.half_step_hi_after_last_row, head.p_differs_95, head.labels),
                         (True, ((0.68, 1.0),), ("shirt", "bag")))
        # A head the judge lacks names those it has.
        with self.assertRaisesRegex(KeyError, "no head 'style'; this curve's heads: class"):
            Curve.from_proto(result).head("style")


@unittest.skipUnless(TEXT_MODEL and os.path.isfile(os.path.join(TEXT_MODEL, "manifest.json")),
                     "no DGRID_TEXT_MODEL bundle")
class TextModelTest(unittest.TestCase):
    """A text-conditioned bundle: free-text prompts, negative prompts."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.stack = LiveStack(model=TEXT_MODEL)
        try:
            cls.stack.start()
            cls.client = Client(cls.stack.orchestrator, default_timeout=CALL_TIMEOUT)
            cls.client.wait_ready(30)
            deadline = time.monotonic() + 60
            while True:
                try:
                    cls.models = cls.client.list_models(timeout=5)
                    if cls.models:
                        break
                except DgridError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the text orchestrator lists no models after 60 s")
                time.sleep(0.2)
        except BaseException:
            cls.stack.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()
        cls.stack.stop()

    def test_model_is_text_with_examples(self) -> None:
        m = self.models[0]
        self.assertEqual(m.conditioning, "text")
        self.assertTrue(m.is_text)
        self.assertGreater(len(m.example_prompts), 0)
        self.assertEqual(m.max_prompt_tokens, 77)

    def test_negative_prompt_changes_the_grid_and_promote_keeps_it(self) -> None:
        prompt = self.models[0].example_prompts[0]
        plain = self.client.create_grid(**small(81, prompt=prompt))
        negative = self.client.create_grid(**small(81, prompt=prompt, negative_prompt="blurry"))
        self.assertEqual((plain.plan.prompt, plain.plan.negative_prompt), (prompt, ""))
        self.assertEqual(negative.plan.negative_prompt, "blurry")
        self.assertFalse(negative.plan.tokens_dropped)
        self.assertNotEqual(plain.trunk.png, negative.trunk.png)
        other = self.client.create_grid(**small(81, prompt="a red car on a snowy road"))
        self.assertNotEqual(plain.trunk.png, other.trunk.png)

        promoted = self.client.promote(negative, 1, 0)
        self.assertEqual(promoted.request.negative_prompt, "blurry")
        self.assertEqual(promoted.plan.negative_prompt, "blurry")
        self.assertEqual(promoted.trunk.png, negative.cell(1, 0).png)

    def test_switch_prompt_grid_and_promote_keeps_the_segment_prompt(self) -> None:
        prompt = self.models[0].example_prompts[0]
        switched = self.client.create_grid(**small(83, prompt=prompt,
                                                   switch_prompt="a red car on a snowy road"))
        self.assertEqual(switched.plan.switch_prompt, "a red car on a snowy road")
        self.assertEqual(switched.plan.branch_noise, "new")
        cell = switched.cell(1, 0)
        segment = cell.path.segments[-1]
        self.assertTrue(segment.switched)
        self.assertEqual(segment.prompt, "a red car on a snowy road")
        self.assertIn("->", str(cell.path))
        # The path goes back on the wire with its prompt: promote reproduces.
        promoted = self.client.promote(switched, 1, 0)
        self.assertEqual(promoted.trunk.path, cell.path)
        self.assertEqual(promoted.trunk.png, cell.png)
        trunk_noise = self.client.create_grid(**small(83, prompt=prompt, branches=1,
                                                      switch_prompt="a red car on a snowy road",
                                                      branch_noise="trunk"))
        self.assertEqual(trunk_noise.plan.branch_noise, "trunk")
        with self.assertRaises(ValueError):
            self.client.build_request(branch_noise="sideways")
        # Not a name at all: a TypeError naming the field (as for every other
        # argument of the wrong type), not AttributeError.
        for field, value in (("branch_noise", 1), ("sampler", 2), ("spacing", 3.0)):
            with self.assertRaisesRegex(TypeError, f"{field} must be a string"):
                self.client.build_request(**{field: value})
        # A switched segment's negative prompt shows in the path.
        negative = Path(1, (Segment(0, 2), Segment(5, 2, True, prompt="car", negative_prompt="blur")))
        self.assertIn("not 'blur'", str(negative))

    def test_long_prompt_reports_dropped_tokens(self) -> None:
        stream = self.client.stream_grid(**small(91, prompt=LONG_PROMPT))
        plan = next(stream)
        stream.close()
        self.assertIsInstance(plan, Plan)
        self.assertEqual(plan.prompt, LONG_PROMPT)
        self.assertGreater(plan.prompt_tokens_dropped, 0)
        self.assertEqual(plan.negative_prompt_tokens_dropped, 0)
        self.assertTrue(plan.tokens_dropped)
        stream = self.client.stream_grid(**small(92, prompt="a cat", switch_prompt=LONG_PROMPT))
        plan = next(stream)
        stream.close()
        self.assertEqual(plan.prompt_tokens_dropped, 0)
        self.assertGreater(plan.switch_prompt_tokens_dropped, 0)
        self.assertTrue(plan.tokens_dropped)


def main() -> int:
    stop_on_sigterm()
    result = unittest.main(module=__name__, exit=False, verbosity=2).result
    ok = result.wasSuccessful() and result.testsRun > 0
    print(f"python_client: {'PASSED' if ok else 'FAILED'}: {result.testsRun} tests, "
          f"{len(result.failures)} failures, {len(result.errors)} errors", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
