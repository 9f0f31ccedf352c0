#!/usr/bin/env python3
"""The layering rule as a check on the real build (docs/ARCHITECTURE.md,
"Layering"): no translation unit that includes torch may see the generated
protobuf code's include path, and the engine's and the core's headers include
neither protobuf nor gRPC.

usage: layering_check.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import re
import sys

TORCH_INCLUDE = re.compile(r'#\s*include\s*[<"](torch|ATen|c10)/')
RPC_INCLUDE = re.compile(r'#\s*include\s*[<"](google/protobuf|grpcpp|grpc/|dgrid/v1/)')


def main(build_dir, source_dir):
    with open(os.path.join(build_dir, "compile_commands.json")) as f:
        commands = json.load(f)
    gen_dir = os.path.join(build_dir, "proto", "gen")
    problems = []
    torch_units = 0
    for entry in commands:
        path = entry["file"]
        try:
            with open(path, encoding="utf-8", errors="replace") as src:
                text = src.read()
        except OSError:
            continue
        if not TORCH_INCLUDE.search(text):
            continue
        torch_units += 1
        command = entry.get("command") or " ".join(entry.get("arguments", []))
        if gen_dir in command:
            problems.append(f"{path}: includes torch and sees {gen_dir}")
    for folder in ("denoiser_service/engine", "common"):
        for name in sorted(os.listdir(os.path.join(source_dir, folder))):
            if not name.endswith(".h"):
                continue
            header = os.path.join(source_dir, folder, name)
            with open(header, encoding="utf-8") as f:
                text = f.read()
            # common/ also holds the RPC helpers; only the core's headers count.
            if folder == "common" and not is_core_header(source_dir, name):
                continue
            match = RPC_INCLUDE.search(text)
            if match:
                problems.append(f"{header}: includes {match.group(0)!r}")
    if torch_units == 0:
        problems.append("no translation unit includes torch: is this the right build?")
    for p in problems:
        print("layering:", p)
    print(f"layering: {torch_units} torch translation units checked, "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


def is_core_header(source_dir, name):
    """A header of dgrid_core: its .cc is listed in dgrid_core's sources."""
    with open(os.path.join(source_dir, "common", "CMakeLists.txt")) as f:
        cmake = f.read()
    core = re.search(r"add_library\(dgrid_core STATIC([^)]*)\)", cmake)
    sources = core.group(1).split() if core else []
    stem = name[:-2]
    return f"{stem}.cc" in sources or stem == "bundle_manifest" or stem == "status_macros"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
