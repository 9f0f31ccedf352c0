#!/usr/bin/env python3
"""Static checks of the monitoring files that promtool does not make.

    check_monitoring.py

- Every alert in deploy/prometheus/rules has a promtool unit test in which it
  fires and one in which it stays quiet (deploy/prometheus/tests/*.yml).
- Every metric that the rules, the Grafana dashboard, the prometheus-adapter
  rules and the HPA name exists: defined by the C++ sources (prometheus-cpp
  Build*().Name("...")), recorded by a rule, or Prometheus's own "up";
  _bucket/_sum/_count only on histograms.
- The dashboard has the panels the project promises, a datasource variable
  that every panel and query uses, unique panel ids and a query per target.
- The PrometheusRule for Prometheus Operator holds exactly the rule groups of
  deploy/prometheus/rules (rewrite it with --write-prometheusrule).

Then it breaks copies of the files one way at a time and fails unless each
break is caught. Exit codes: 0 pass, 1 fail, 77 skipped (no PyYAML).
"""
import copy
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
DEPLOY = os.path.join(ROOT, "deploy")
PROMETHEUS_RULE = os.path.join(DEPLOY, "k8s/components/prometheus-operator/prometheusrule.yaml")
METRIC_SOURCES = ["common", "denoiser_service", "grid_orchestrator"]

# Panel title words the dashboard must have (issue 5), each a regex.
REQUIRED_PANELS = {
    "grids/s": r"grids/s",
    "grid latency p50/p99": r"grid latency.*p50.*p99",
    "denoiser batch size": r"batch size",
    "queue seconds": r"queue seconds",
    "model evaluations/s per replica": r"model evaluations/s per replica",
    "in-flight work per replica": r"(in-flight|active).*per replica",
    "retries and errors": r"retries and errors",
    "cache hit ratio": r"cache hit ratio",
}


def load_inputs():
    rules = {}
    for path in sorted(glob.glob(os.path.join(DEPLOY, "prometheus/rules/*.yml"))):
        with open(path) as f:
            rules[os.path.relpath(path, ROOT)] = yaml.safe_load(f)
    tests = {}
    for path in sorted(glob.glob(os.path.join(DEPLOY, "prometheus/tests/*.yml"))):
        with open(path) as f:
            tests[os.path.relpath(path, ROOT)] = yaml.safe_load(f)
    with open(os.path.join(DEPLOY, "grafana/dgrid-dashboard.json")) as f:
        dashboard = json.load(f)
    with open(os.path.join(DEPLOY, "k8s/prometheus-adapter/values.yaml")) as f:
        adapter = yaml.safe_load(f)
    hpa_metrics = []
    for path in glob.glob(os.path.join(DEPLOY, "k8s/**/*.yaml"), recursive=True):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                # (JSON 6902 patches are lists, not objects.)
                if isinstance(doc, dict) and doc.get("kind") == "HorizontalPodAutoscaler":
                    for m in doc.get("spec", {}).get("metrics", []):
                        if m.get("type") == "Pods":
                            hpa_metrics.append(m["pods"]["metric"]["name"])
    prometheus_rule = None
    if os.path.exists(PROMETHEUS_RULE):
        with open(PROMETHEUS_RULE) as f:
            prometheus_rule = yaml.safe_load(f)
    return {"rules": rules, "tests": tests, "dashboard": dashboard, "adapter": adapter,
            "hpa_metrics": hpa_metrics, "prometheus_rule": prometheus_rule}


def rule_groups(rules):
    return [g for path in sorted(rules) for g in rules[path]["groups"]]


def write_prometheus_rule(rules):
    text = ("# Generated from deploy/prometheus/rules/*.yml by\n"
            "#   deploy/tests/check_monitoring.py --write-prometheusrule\n"
            "# Do not edit: edit the rule files and rerun that (ctest checks they agree).\n"
            "# kube-prometheus-stack selects PrometheusRules by its Helm release label.\n")
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "dgrid", "labels": {"app.kubernetes.io/part-of": "dgrid",
                                                    "release": "kube-prometheus-stack"}},
           "spec": {"groups": rule_groups(rules)}}
    with open(PROMETHEUS_RULE, "w") as f:
        f.write(text + yaml.safe_dump(doc, sort_keys=False, width=100))


def defined_metrics():
    """name -> type, from prometheus-cpp builders in the C++ sources."""
    out = {}
    pattern = re.compile(r"Build(Counter|Gauge|Histogram|Summary)\(\)\s*\.Name\(\s*\"([^\"]+)\"")
    for top in METRIC_SOURCES:
        for path in glob.glob(os.path.join(ROOT, top, "**/*.cc"), recursive=True):
            with open(path) as f:
                for kind, name in pattern.findall(f.read()):
                    out[name] = kind.lower()
    return out


def metric_names(expr):
    """Metric-like identifiers in a PromQL expression (not labels, not strings)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                     # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)                      # ranges
    expr = expr.replace("<<.Series>>", "")
    names = set()
    for tok in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if tok.startswith("dgrid_") or tok == "up" or tok.count(":") >= 2:
            names.add(tok)
    return names


def dashboard_targets(dashboard):
    for panel in dashboard.get("panels", []):
        for sub in [panel] + panel.get("panels", []):
            for t in sub.get("targets", []) or []:
                yield sub, t


def check(inputs):
    errors = []
    err = errors.append
    metrics = defined_metrics()
    if not metrics:
        err("found no metric definitions in the C++ sources")

    # Rules: alerts and recorded names.
    alerts, recorded = {}, set()
    for path, doc in inputs["rules"].items():
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    alerts[rule["alert"]] = (path, rule)
                    if "severity" not in rule.get("labels", {}):
                        err(f"{path}: alert {rule['alert']} has no severity label")
                    if "summary" not in rule.get("annotations", {}):
                        err(f"{path}: alert {rule['alert']} has no summary annotation")
                elif "record" in rule:
                    if rule["record"].count(":") != 2:
                        err(f"{path}: recording rule {rule['record']} is not level:metric:operations")
                    recorded.add(rule["record"])
    if not alerts:
        err("no alert rules found")

    # Each alert fires in some test and stays quiet in another.
    fires, quiet = set(), set()
    for path, doc in inputs["tests"].items():
        for case in doc.get("tests", []):
            for at in case.get("alert_rule_test", []) or []:
                (fires if at.get("exp_alerts") else quiet).add(at.get("alertname"))
    for name in alerts:
        if name not in fires:
            err(f"alert {name}: no promtool test where it fires")
        if name not in quiet:
            err(f"alert {name}: no promtool test where it stays quiet")
    for name in (fires | quiet) - set(alerts):
        err(f"promtool tests name alert {name}, which no rule defines")

    # The Prometheus Operator copy of the rules.
    pr = inputs["prometheus_rule"]
    if pr is None:
        err(f"{os.path.relpath(PROMETHEUS_RULE, ROOT)} is missing")
    elif pr.get("kind") != "PrometheusRule" or \
            pr.get("spec", {}).get("groups") != rule_groups(inputs["rules"]):
        err(f"{os.path.relpath(PROMETHEUS_RULE, ROOT)} differs from deploy/prometheus/rules: "
            "run deploy/tests/check_monitoring.py --write-prometheusrule")

    # Metric names everywhere.
    def check_names(where, expr):
        for name in metric_names(expr):
            if name == "up" or name in recorded or name in metrics:
                continue
            base, _, suffix = name.rpartition("_")
            if suffix in ("bucket", "sum", "count") and base in metrics:
                if metrics[base] not in ("histogram", "summary"):
                    err(f"{where}: {name}: {base} is a {metrics[base]}, not a histogram")
                elif suffix == "bucket" and metrics[base] == "summary":
                    err(f"{where}: {name}: summaries have no buckets")
                continue
            err(f"{where}: unknown metric {name}")

    for path, doc in inputs["rules"].items():
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                check_names(f"{path}: {rule.get('alert') or rule.get('record')}", rule["expr"])
    for rule in inputs["adapter"].get("rules", {}).get("custom", []):
        check_names("prometheus-adapter seriesQuery", rule["seriesQuery"])
        check_names("prometheus-adapter metricsQuery", rule["metricsQuery"])
    served = {r.get("name", {}).get("as") for r in inputs["adapter"].get("rules", {}).get("custom", [])}
    for m in inputs["hpa_metrics"]:
        if m not in served:
            err(f"HPA metric {m} is served by no prometheus-adapter rule")

    # Dashboard.
    d = inputs["dashboard"]
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err("dashboard: no datasource variable named 'datasource' of type prometheus")
    ids = [p.get("id") for p in d.get("panels", [])]
    if len(ids) != len(set(ids)):
        err("dashboard: panel ids repeat")
    titles = []
    for p in d.get("panels", []):
        if p.get("type") == "row":
            continue
        titles.append(p.get("title", ""))
        if "gridPos" not in p:
            err(f"dashboard: panel {p.get('title')!r} has no gridPos")
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            err(f"dashboard: panel {p.get('title')!r} does not use the $datasource variable")
        if not p.get("targets"):
            err(f"dashboard: panel {p.get('title')!r} has no queries")
    for panel, t in dashboard_targets(d):
        where = f"dashboard panel {panel.get('title')!r} {t.get('refId')}"
        if not t.get("expr"):
            err(f"{where}: no expr")
            continue
        if (t.get("datasource") or {}).get("uid") != "${datasource}":
            err(f"{where}: does not use the $datasource variable")
        check_names(where, t["expr"])
    for what, pattern in REQUIRED_PANELS.items():
        if not any(re.search(pattern, title, re.I) for title in titles):
            err(f"dashboard: no panel for {what} (title matching /{pattern}/)")
    return errors


def _alert_tests(inputs):
    return [at for doc in inputs["tests"].values() for case in doc["tests"]
            for at in case.get("alert_rule_test", [])]


def _first_target(inputs, title_re):
    for panel, t in dashboard_targets(inputs["dashboard"]):
        if re.search(title_re, panel.get("title", ""), re.I):
            return t
    raise KeyError(title_re)


def _first_rule(inputs, key):
    for doc in inputs["rules"].values():
        for group in doc["groups"]:
            for rule in group["rules"]:
                if key in rule:
                    return rule
    raise KeyError(key)


MUTATIONS = [
    ("an alert without a quiet test", "no promtool test where it stays quiet",
     lambda i: [at.update({"exp_alerts": [{"exp_labels": {}}]}) for at in _alert_tests(i)
                if at["alertname"] == "DgridGridLatencyP99High"]),
    ("an alert without a firing test", "no promtool test where it fires",
     lambda i: [at.update({"exp_alerts": []}) for at in _alert_tests(i)
                if at["alertname"] == "DgridDenoiserQueueTimeHigh"]),
    ("a test for an alert that does not exist", "which no rule defines",
     lambda i: _alert_tests(i)[0].update({"alertname": "DgridNoSuchAlert"})),
    ("a misspelt metric in the dashboard", "unknown metric dgrid_denoiser_model_eval_total",
     lambda i: _first_target(i, "model evaluations").update(
         {"expr": "sum by (instance) (rate(dgrid_denoiser_model_eval_total[$__rate_interval]))"})),
    ("_bucket of a counter", "is a counter, not a histogram",
     lambda i: _first_target(i, "grids/s").update(
         {"expr": "histogram_quantile(0.5, sum by (le) (rate(dgrid_orchestrator_grids_total_bucket[5m])))"})),
    ("a rule reading an unrecorded series", "unknown metric job:dgrid_nothing:rate5m",
     lambda i: _first_rule(i, "alert").update({"expr": "job:dgrid_nothing:rate5m > 1"})),
    ("a panel on another datasource", "does not use the $datasource variable",
     lambda i: _first_target(i, "queue seconds").update({"datasource": {"uid": "prometheus"}})),
    ("no cache hit ratio panel", "no panel for cache hit ratio",
     lambda i: [p.update({"title": "Cache"}) for p in i["dashboard"]["panels"]
                if "cache hit ratio" in p.get("title", "").lower()]),
    ("an alert without severity", "has no severity label",
     lambda i: _first_rule(i, "alert")["labels"].pop("severity")),
    ("HPA metric the adapter does not serve", "is served by no prometheus-adapter rule",
     lambda i: i["hpa_metrics"].append("dgrid_denoiser_queue_depth")),
    ("PrometheusRule out of date", "differs from deploy/prometheus/rules",
     lambda i: _first_rule(i, "alert").update({"for": "1m"})),
    ("adapter rule on an unknown series", "unknown metric dgrid_denoiser_active",
     lambda i: i["adapter"]["rules"]["custom"][0].update(
         {"seriesQuery": 'dgrid_denoiser_active{namespace!="",pod!=""}'})),
]


def main():
    inputs = load_inputs()
    if sys.argv[1:] == ["--write-prometheusrule"]:
        write_prometheus_rule(inputs["rules"])
        print(f"wrote {os.path.relpath(PROMETHEUS_RULE, ROOT)}")
        return 0
    errors = check(inputs)
    for e in errors:
        print(f"FAIL: {e}")
    if errors:
        return 1
    print(f"monitoring files: OK ({len(list(dashboard_targets(inputs['dashboard'])))} dashboard "
          f"queries, {len(defined_metrics())} metrics defined in C++)")
    missed = []
    for what, expect, mutate in MUTATIONS:
        broken = copy.deepcopy(inputs)
        mutate(broken)
        hit = [e for e in check(broken) if expect in e]
        if hit:
            print(f"  caught: {what}: {hit[0]}")
        else:
            missed.append(what)
            print(f"FAIL: self-test: missed {what} (want an error with {expect!r})")
    if missed:
        return 1
    print(f"self-test: all {len(MUTATIONS)} broken copies caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
