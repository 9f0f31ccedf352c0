#!/usr/bin/env python3
"""End to end with a real Prometheus (Debian's prometheus package).

    prometheus_e2e.py --bin-dir=build/bin --model-dir=build/fixtures/gaussian \
        --prompt=low --prometheus=/usr/bin/prometheus

1. Starts two dgrid-denoisers and a dgrid-orchestrator on free loopback ports,
   and a Prometheus with deploy/prometheus/prometheus.yml and its rules
   (copied to a temp folder, targets written as file_sd files, as the config
   file describes).
2. Waits until Prometheus has scraped every target, then makes a grid with
   the dgrid CLI.
3. Queries Prometheus's HTTP API: the key series are there and have moved
   since before the grid.
4. Every PromQL expression in the Grafana dashboard, the recording and alert
   rules and the prometheus-adapter rules evaluates without error, the rule
   groups report no evaluation errors, and the main panels have data.
5. Every label matcher on a dgrid metric in those expressions names a label
   the scraped series have: a misspelt label matches nothing, silently.

Exit codes: 0 pass, 1 fail, 77 skipped (no prometheus binary).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    import yaml
except ImportError:
    print("SKIP: PyYAML is missing (Debian: python3-yaml)")
    sys.exit(77)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROM_DIR = os.path.join(ROOT, "deploy", "prometheus")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "dgrid-dashboard.json")
ADAPTER = os.path.join(ROOT, "deploy", "k8s", "prometheus-adapter", "values.yaml")

# Counters and histogram counts that a grid must move.
MOVING = [
    'sum(dgrid_orchestrator_grids_total{status="ok"})',
    "sum(dgrid_orchestrator_grid_seconds_count)",
    'sum(dgrid_orchestrator_jobs_total{status="ok"})',
    "sum(dgrid_denoiser_model_evals_total)",
    "sum(dgrid_denoiser_forward_rows_total)",
    'sum(dgrid_denoiser_requests_total{code="OK"})',
    "sum(dgrid_denoiser_batch_size_count)",
    "sum(dgrid_denoiser_queue_seconds_count)",
    "sum(dgrid_denoiser_forward_seconds_count)",
]
# Series that must exist (gauges and labelled counters).
PRESENT = [
    "dgrid_denoiser_active_trajectories",
    "dgrid_denoiser_ready",
    "dgrid_orchestrator_replica_inflight",
    'dgrid_orchestrator_grids_in_flight{kind="curve"}',
    "dgrid_orchestrator_retries_total",
    "dgrid_orchestrator_cache_hits_total",
    'dgrid_orchestrator_grids_total{status="failed"}',
]
# Dashboard panels that must show data right after a grid.
PANELS_WITH_DATA = ["Grids/s by status", "Grid latency p50 / p99",
                    "Model evaluations/s per replica", "Batch size (rows per forward pass)",
                    "Queue seconds", "Targets up, denoisers ready"]


class Failure(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv):
        log = open(os.path.join(self.workdir, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        p.name = name
        self.procs.append(p)
        return p

    def wait_ports(self, name, proc, path, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    kv = dict(line.strip().split("=", 1) for line in f if "=" in line)
                return int(kv["grpc"]), int(kv["metrics"])
            if proc.poll() is not None:
                raise Failure(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            time.sleep(0.05)
        raise Failure(f"{name}: no port file after {timeout} s")

    def log(self, name):
        try:
            with open(os.path.join(self.workdir, f"{name}.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Prom:
    def __init__(self, base):
        self.base = base

    def get(self, path, **params):
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                return json.loads(body)
            except ValueError:
                raise Failure(f"GET {url}: HTTP {e.code}: {body}")

    def query(self, expr):
        r = self.get("/api/v1/query", query=expr)
        if r.get("status") != "success":
            raise Failure(f"query {expr!r}: {r.get('errorType')}: {r.get('error')}")
        return r["data"]["result"]

    def series(self, match, start, end):
        r = self.get("/api/v1/series", **{"match[]": match, "start": start, "end": end})
        if r.get("status") != "success":
            raise Failure(f"series {match!r}: {r.get('errorType')}: {r.get('error')}")
        return r["data"]

    def scalar(self, expr):
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def wait_for(what, fn, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, Failure) as e:
            last = e
        time.sleep(0.5)
    raise Failure(f"timed out after {timeout} s waiting for {what} (last: {last})")


def expressions():
    """(where, PromQL) for the dashboard, the rules and the adapter rules."""
    out = []
    with open(DASHBOARD) as f:
        dash = json.load(f)
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$__interval", "15s")
            out.append((f"dashboard {panel['title']!r} {t['refId']}", expr, panel["title"]))
    for name in sorted(os.listdir(os.path.join(PROM_DIR, "rules"))):
        with open(os.path.join(PROM_DIR, "rules", name)) as f:
            for group in yaml.safe_load(f)["groups"]:
                for rule in group["rules"]:
                    out.append((f"rules/{name} {rule.get('alert') or rule.get('record')}",
                                rule["expr"], None))
    with open(ADAPTER) as f:
        for rule in yaml.safe_load(f)["rules"]["custom"]:
            series = rule["seriesQuery"].split("{")[0]
            expr = (rule["metricsQuery"].replace("<<.Series>>", series)
                    .replace("<<.LabelMatchers>>", 'job="dgrid-denoiser"')
                    .replace("<<.GroupBy>>", "instance"))
            out.append((f"prometheus-adapter {rule['name']['as']}", expr, None))
    return out


SELECTOR = re.compile(r"\b(dgrid_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def label_matchers(expr):
    """(metric, label) for every label matcher on a dgrid metric in `expr`."""
    for metric, matchers in SELECTOR.findall(STRING.sub('""', expr)):
        for label in MATCHER.findall(matchers):
            yield metric, label


def check_labels(prom, exprs, now):
    """Fails on a matcher whose label no scraped series of its metric has.
    Returns how many matchers were checked and the metrics with no series
    (nothing to check them against: a text model's metrics, here)."""
    keys = {}
    checked, unseen = 0, set()
    for where, expr, _ in exprs:
        for metric, label in label_matchers(expr):
            if metric not in keys:
                found = prom.series(metric, now - 600, now)
                keys[metric] = {k for series in found for k in series}
            if not keys[metric]:
                unseen.add(metric)
                continue
            if label not in keys[metric]:
                raise Failure(f"{where}: {metric} has no label {label!r} "
                              f"(its series have {sorted(keys[metric])})")
            checked += 1
    return checked, unseen


def run(args, workdir):
    stack = Stack(workdir)
    try:
        # 1. The stack.
        bin_dir = args.bin_dir
        for b in ("dgrid-denoiser", "dgrid-orchestrator", "dgrid"):
            if not os.access(os.path.join(bin_dir, b), os.X_OK):
                raise Failure(f"{bin_dir}/{b} is missing: build first")
        denoiser_metrics, denoiser_grpc = [], []
        for i in range(2):
            name = f"denoiser{i}"
            ports = os.path.join(workdir, f"{name}.ports")
            p = stack.start(name, [os.path.join(bin_dir, "dgrid-denoiser"),
                                   f"--model_dir={args.model_dir}", "--listen=127.0.0.1:0",
                                   "--metrics_addr=127.0.0.1:0", "--threads=1",
                                   f"--port_file={ports}"])
            g, m = stack.wait_ports(name, p, ports)
            denoiser_grpc.append(f"127.0.0.1:{g}")
            denoiser_metrics.append(f"127.0.0.1:{m}")
        ports = os.path.join(workdir, "orchestrator.ports")
        p = stack.start("orchestrator", [os.path.join(bin_dir, "dgrid-orchestrator"),
                                         f"--denoisers={','.join(denoiser_grpc)}",
                                         "--listen=127.0.0.1:0", "--metrics_addr=127.0.0.1:0",
                                         f"--port_file={ports}"])
        og, om = stack.wait_ports("orchestrator", p, ports)

        # Prometheus with the project's config, as prometheus.yml describes.
        prom_dir = os.path.join(workdir, "prometheus")
        os.makedirs(os.path.join(prom_dir, "targets"))
        shutil.copy(os.path.join(PROM_DIR, "prometheus.yml"), prom_dir)
        shutil.copytree(os.path.join(PROM_DIR, "rules"), os.path.join(prom_dir, "rules"))
        with open(os.path.join(prom_dir, "targets", "dgrid-denoiser.json"), "w") as f:
            json.dump([{"targets": denoiser_metrics}], f)
        with open(os.path.join(prom_dir, "targets", "dgrid-orchestrator.json"), "w") as f:
            json.dump([{"targets": [f"127.0.0.1:{om}"]}], f)
        port = free_port()
        prom_proc = stack.start("prometheus", [
            args.prometheus, f"--config.file={prom_dir}/prometheus.yml",
            f"--storage.tsdb.path={prom_dir}/data", f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn"])
        prom = Prom(f"http://127.0.0.1:{port}")

        def ready():
            if prom_proc.poll() is not None:
                raise SystemExit(f"FAIL: prometheus exited:\n{stack.log('prometheus')}")
            with urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2) as r:
                return r.status == 200
        wait_for("Prometheus to be ready", ready, 60)
        print(f"prometheus on 127.0.0.1:{port}; orchestrator 127.0.0.1:{og}; "
              f"denoisers {', '.join(denoiser_grpc)}")

        # 2. Every target scraped once, then a grid.
        def all_up():
            r = prom.query('up{job=~"dgrid-denoiser|dgrid-orchestrator"} == 1')
            return len(r) == 3 and r
        wait_for("3 targets up", all_up, 60)
        before = {e: prom.scalar(e) for e in MOVING}
        print(f"before the grid: {before}")
        grid = subprocess.run([os.path.join(bin_dir, "dgrid"), "grid", f"--target=127.0.0.1:{og}",
                               f"--prompt={args.prompt}", "--seed=3",
                               "-o", os.path.join(workdir, "grid.png")],
                              capture_output=True, text=True, timeout=120)
        if grid.returncode != 0:
            raise Failure(f"dgrid grid failed:\n{grid.stdout}\n{grid.stderr}")
        print(grid.stdout.strip().splitlines()[-2] if grid.stdout.strip() else "grid made")

        # 3. Key series present and moved.
        def moved():
            after = {e: prom.scalar(e) for e in MOVING}
            stuck = [e for e in MOVING if after[e] is None or not after[e] > (before[e] or 0)]
            return (not stuck) and after
        try:
            after = wait_for("every key series to move", moved, 30)
        except Failure:
            after = {e: prom.scalar(e) for e in MOVING}
            stuck = [e for e in MOVING if after[e] is None or not after[e] > (before[e] or 0)]
            raise Failure(f"series did not move: {stuck} (before {before}, after {after})")
        for e in MOVING:
            print(f"moved: {e}: {before[e]} -> {after[e]}")
        for e in PRESENT:
            if not prom.query(e):
                raise Failure(f"series missing: {e}")
            print(f"present: {e}")

        # 4. Every expression evaluates; rule groups healthy; panels have data.
        def rules_evaluated():
            groups = prom.get("/api/v1/rules")["data"]["groups"]
            return all(g.get("lastEvaluation", "").startswith("20") and
                       not g["lastEvaluation"].startswith("0001") for g in groups) and groups
        groups = wait_for("a rule evaluation after the grid", rules_evaluated, 30)
        time.sleep(6)  # one more evaluation interval, with the grid in the rates
        groups = prom.get("/api/v1/rules")["data"]["groups"]
        nrules = 0
        for g in groups:
            for rule in g["rules"]:
                nrules += 1
                if rule.get("health") != "ok":
                    raise Failure(f"rule {rule['name']} health {rule.get('health')}: "
                                  f"{rule.get('lastError')}")
        print(f"rule groups: {len(groups)}, {nrules} rules, all healthy")
        now = time.time()
        exprs = expressions()
        panels_with = set()  # a panel has data if any of its queries has
        for where, expr, panel in exprs:
            if prom.query(expr) and panel:  # raises on a PromQL error
                panels_with.add(panel)
            r = prom.get("/api/v1/query_range", query=expr, start=now - 120, end=now, step=5)
            if r.get("status") != "success":
                raise Failure(f"{where}: query_range: {r.get('error')}")
        missing = [p for p in PANELS_WITH_DATA if p not in panels_with]
        if missing:
            raise Failure(f"dashboard panels without data after a grid: {missing}")
        # The ready line ends in "or vector(0)": it has data whatever it
        # counts. Both denoisers serve.
        ready = next(e for w, e, _ in exprs if w == "dashboard 'Targets up, denoisers ready' B")
        if prom.scalar(ready) != 2:
            raise Failure(f"dashboard's ready denoisers: {prom.scalar(ready)}, not 2: {ready}")
        print(f"evaluated {len(exprs)} expressions (dashboard, rules, adapter): no errors; "
              f"panels with data: {', '.join(PANELS_WITH_DATA)}")
        checked, unseen = check_labels(prom, exprs, now)
        print(f"label matchers: {checked} name labels the scraped series have; "
              f"metrics with no series to check against: {', '.join(sorted(unseen)) or 'none'}")
        evals = prom.query("instance:dgrid_denoiser_model_evals:rate1m")
        if not evals:
            raise Failure("recording rule instance:dgrid_denoiser_model_evals:rate1m has no data")
        firing = [a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["data"]["alerts"]]
        if firing:
            raise Failure(f"alerts pending or firing on a healthy stack: {firing}")
        print("no alerts pending or firing")
        return 0
    except Failure as e:
        print(f"FAIL: {e}")
        for p in stack.procs:
            print(f"--- {p.name} log ---\n{stack.log(p.name)}")
        return 1
    finally:
        stack.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--prompt", default="low")
    ap.add_argument("--prometheus", default="prometheus")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    prometheus = shutil.which(args.prometheus)
    if not prometheus:
        print(f"SKIP: prometheus not found ({args.prometheus!r}; Debian package: prometheus)")
        return 77
    args.prometheus = prometheus
    workdir = tempfile.mkdtemp(prefix="dgrid-prom-e2e-")
    try:
        return run(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
