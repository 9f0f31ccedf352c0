#!/usr/bin/python3
"""Streams a grid from an orchestrator and writes it as a PNG.

    PYTHONPATH=build/python:clients/python /usr/bin/python3 \\
        clients/python/examples/make_grid.py --target 127.0.0.1:50050 \\
        --prompt sneaker --seed 7 --out grid.png
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from dgrid_client import Cell, Client, DgridError, GridDone, Plan, TrunkProgress


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50050", help="orchestrator host:port")
    parser.add_argument("--prompt", default="",
                        help="a class name (class models) or free text (text models); '' = none")
    parser.add_argument("--negative", default="", help="text models: the negative prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="grid.png")
    parser.add_argument("--preset", default="", help="'' / 'default', 'classic', 'euler_a' or 'turbo'")
    parser.add_argument("--sampler", choices=["ddim", "euler_ancestral", "euler_a"],
                        help="unset = the preset's")
    parser.add_argument("--model", default="")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--eta", type=float)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--branches", type=int, help="columns: branches per row")
    parser.add_argument("--branch-steps", type=lambda s: [int(k) for k in s.split(",")],
                        help="rows, e.g. 0,10,20")
    parser.add_argument("--record", help="also write the JSON record (as dgrid grid does)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds")
    args = parser.parse_args(argv)

    try:
        with Client(args.target) as client:
            grid = None
            cells = total = 0
            for event in client.stream_grid(
                    prompt=args.prompt, seed=args.seed, preset=args.preset, steps=args.steps,
                    eta=args.eta, guidance=args.guidance, branches=args.branches,
                    branch_steps=args.branch_steps, model=args.model,
                    negative_prompt=args.negative, sampler=args.sampler,
                    timeout=args.timeout):
                if isinstance(event, Plan):
                    total = event.cells
                    print(f"plan: {event.model} '{event.prompt}', {event.steps} steps of "
                          f"{event.sampler}, rows after steps {list(event.branch_steps)}, "
                          f"{event.branches} branches, {event.model_evals} model evaluations",
                          file=sys.stderr)
                    if event.tokens_dropped:
                        print(f"warning: the model dropped {event.prompt_tokens_dropped} tokens "
                              f"of the prompt, {event.negative_prompt_tokens_dropped} of the "
                              f"negative prompt, {event.switch_prompt_tokens_dropped} of the "
                              f"switch prompt and {event.switch_negative_prompt_tokens_dropped} "
                              "of the switch negative prompt", file=sys.stderr)
                    if event.unknown_words:
                        print(f"warning: {event.model} does not know "
                              f"{', '.join(repr(w) for w in event.unknown_words)}: read as "
                              "unknown", file=sys.stderr)
                elif isinstance(event, TrunkProgress):
                    print(f"trunk at step {event.step} (t={event.timestep})", file=sys.stderr)
                elif isinstance(event, Cell):
                    cells += 1
                    where = "trunk" if event.is_trunk else f"row {event.row} col {event.column}"
                    print(f"cell {cells}/{total}: {where} from {event.source}", file=sys.stderr)
                elif isinstance(event, GridDone):
                    grid = event.grid
    except (DgridError, ValueError, TypeError) as e:  # the server's refusal, or the client's
        print(f"make_grid: {e}", file=sys.stderr)
        return 1
    if grid is None:
        print("make_grid: the stream ended without a grid", file=sys.stderr)
        return 1
    try:
        grid.save_png(args.out)
        if args.record:
            grid.save_record(args.record)
    except OSError as e:
        print(f"make_grid: {e}", file=sys.stderr)
        return 1
    divergence = ", ".join(f"{r.branch_step}: {r.divergence:.3f}" for r in grid.rows)
    print(f"wrote {args.out}: {len(grid.rows)} rows x {grid.plan.branches} branches, "
          f"{grid.model_evals} model evaluations, {grid.seconds:.2f} s; "
          f"divergence by branch step: {divergence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
