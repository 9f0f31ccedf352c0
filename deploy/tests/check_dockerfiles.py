#!/usr/bin/env python3
"""Static checks of deploy/docker (no container engine runs on the project's
machines, so the images themselves are not built by any test).

    check_dockerfiles.py

- Every COPY --from names an earlier stage; every plain COPY source exists in
  the build context (the repository root) and is not excluded by the
  Dockerfile's .dockerignore.
- The .dockerignore files keep host build trees (build/, build-*/) out.
- Each runtime stage runs as the numeric non-root user that the Kubernetes
  pods use (runAsUser in deploy/k8s/base), has an ENTRYPOINT, and copies the
  binary its ENTRYPOINT runs.
- The stages that deploy/README.md and the Dockerfile headers tell people to
  build (--target NAME) exist.

Then it breaks a copy of a Dockerfile and fails unless the break is caught.
Exit codes: 0 pass, 1 fail, 77 skipped (no PyYAML).
"""
import fnmatch
import glob
import json
import os
import re
import sys

try:
    import yaml
except ImportError:
    print("SKIP: PyYAML is missing (Debian: python3-yaml)")
    sys.exit(77)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKER = os.path.join(ROOT, "deploy", "docker")


def instructions(text):
    """[(INSTRUCTION, args)] with continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def ignored(path, patterns):
    for p in patterns:
        p = p.rstrip("/")
        if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p + "/*") or \
                path.split("/")[0] == p or fnmatch.fnmatch(path.split("/")[0], p):
            return True
    return False


def pod_uids():
    uids = set()
    for path in glob.glob(os.path.join(ROOT, "deploy/k8s/base/*.yaml")):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") == "Deployment":
                    uids.add(doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
    return uids


def check_dockerfile(name, text, ignore, uids):
    errors = []
    err = errors.append
    stages = []
    stage = None
    per_stage = {}
    for word, args in instructions(text):
        if word == "FROM":
            m = re.match(r"^(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            stage = m.group(2) or f"#{len(stages)}"
            stages.append(stage)
            per_stage[stage] = {"user": None, "entrypoint": None, "copied": []}
        elif word == "COPY":
            parts = args.split()
            opts = [p for p in parts if p.startswith("--")]
            paths = [p for p in parts if not p.startswith("--")]
            srcs, dest = paths[:-1], paths[-1]
            frm = next((o.split("=", 1)[1] for o in opts if o.startswith("--from=")), None)
            if frm is not None:
                if frm not in stages[:-1]:
                    err(f"{name}: COPY --from={frm} names no earlier stage ({stages[:-1]})")
            else:
                for src in srcs:
                    if src == ".":
                        continue
                    if not os.path.exists(os.path.join(ROOT, src)):
                        err(f"{name}: COPY source {src} does not exist in the repository")
                    elif ignored(src, ignore):
                        err(f"{name}: COPY source {src} is excluded by its .dockerignore")
            for src in srcs:
                target = dest if not dest.endswith("/") else dest + os.path.basename(src)
                per_stage[stage]["copied"].append(target)
        elif word == "USER":
            per_stage[stage]["user"] = args
        elif word == "ENTRYPOINT":
            per_stage[stage]["entrypoint"] = json.loads(args)
    runtime = [s for s in stages if per_stage[s]["entrypoint"]]
    if not runtime:
        err(f"{name}: no stage has an ENTRYPOINT")
    for s in runtime:
        user = per_stage[s]["user"]
        uid = user.split(":")[0] if user else None
        if not uid or not uid.isdigit() or int(uid) == 0:
            err(f"{name}: stage {s} does not run as a numeric non-root USER (got {user!r})")
        elif int(uid) not in uids:
            err(f"{name}: stage {s} runs as {uid}, the pods as {sorted(uids)}")
        binary = per_stage[s]["entrypoint"][0]
        if binary not in per_stage[s]["copied"]:
            err(f"{name}: stage {s} runs {binary}, which no COPY puts there")
    return errors, stages


def check(files):
    errors = []
    uids = pod_uids()
    all_stages = {}
    for name, (text, ignore_text) in files.items():
        if ignore_text is None:
            errors.append(f"{name}: no {name}.dockerignore")
            ignore = []
        else:
            ignore = [l.strip() for l in ignore_text.splitlines()
                      if l.strip() and not l.startswith("#")]
            for must in ("build/", "build-*/"):
                if must not in ignore:
                    errors.append(f"{name}.dockerignore: does not exclude {must}")
        e, stages = check_dockerfile(name, text, ignore, uids)
        errors += e
        all_stages[name] = stages
    # --target names that the docs use exist.
    docs = [os.path.join(ROOT, "deploy/README.md"), os.path.join(DOCKER, "README.md")]
    for path in docs + [os.path.join(DOCKER, n) for n in files]:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r"-f\s+deploy/docker/(\S+)\s+(?:--target\s+(\S+))?", text):
            df, target = m.group(1), m.group(2)
            if df not in all_stages:
                errors.append(f"{os.path.relpath(path, ROOT)}: builds {df}, which does not exist")
            elif target and target not in all_stages[df]:
                errors.append(f"{os.path.relpath(path, ROOT)}: --target {target} is no stage of {df}")
    return errors


def load():
    files = {}
    for path in sorted(glob.glob(os.path.join(DOCKER, "Dockerfile*"))):
        if path.endswith(".dockerignore"):
            continue
        with open(path) as f:
            text = f.read()
        ignore = None
        if os.path.exists(path + ".dockerignore"):
            with open(path + ".dockerignore") as f:
                ignore = f.read()
        files[os.path.basename(path)] = (text, ignore)
    return files


MUTATIONS = [
    ("runtime stage as root", "numeric non-root USER",
     lambda f: f.update({"Dockerfile": (f["Dockerfile"][0].replace("USER 10001:10001", "USER root"),
                                        f["Dockerfile"][1])})),
    ("COPY --from a stage that does not exist", "names no earlier stage",
     lambda f: f.update({"Dockerfile": (f["Dockerfile"][0].replace("--from=build", "--from=builder"),
                                        f["Dockerfile"][1])})),
    ("COPY of a missing source", "does not exist in the repository",
     lambda f: f.update({"Dockerfile": (f["Dockerfile"][0].replace(
         "COPY scripts/install-deps.sh", "COPY scripts/install_deps.sh"), f["Dockerfile"][1])})),
    ("dockerignore letting build/ in", "does not exclude build/",
     lambda f: f.update({"Dockerfile.cuda": (f["Dockerfile.cuda"][0],
                                             f["Dockerfile.cuda"][1].replace("\nbuild/\n", "\n"))})),
    ("entrypoint binary not copied", "which no COPY puts there",
     lambda f: f.update({"Dockerfile": (f["Dockerfile"][0].replace(
         'ENTRYPOINT ["/usr/local/bin/dgrid-orchestrator"]',
         'ENTRYPOINT ["/usr/bin/dgrid-orchestrator"]'), f["Dockerfile"][1])})),
]


def main():
    files = load()
    if not files:
        print("FAIL: no deploy/docker/Dockerfile*")
        return 1
    errors = check(files)
    for e in errors:
        print(f"FAIL: {e}")
    if errors:
        return 1
    print(f"Dockerfiles: OK ({', '.join(files)})")
    missed = 0
    for what, expect, mutate in MUTATIONS:
        broken = dict(files)
        mutate(broken)
        hit = [e for e in check(broken) if expect in e]
        if hit:
            print(f"  caught: {what}: {hit[0]}")
        else:
            missed += 1
            print(f"FAIL: self-test: missed {what} (want an error with {expect!r})")
    if missed:
        return 1
    print(f"self-test: all {len(MUTATIONS)} broken copies caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
