#!/usr/bin/env python3
"""Renders a kustomize overlay with kubectl and checks the objects' structure.

    check_k8s.py --kubectl=kubectl --overlay=deploy/k8s/overlays/cpu --device=cpu

Checks (see check() below): probes and resources on every container, Service
selectors and target ports against pod templates, container ports against
the --listen/--metrics_addr/--http_addr flags, flags against the binaries'
ABSL_FLAGs, the explorer (HTTP port, Service port, readiness on /healthz,
--web_dir in the image), the HPA's target and metric, the PDB, the
NetworkPolicies (only orchestrator pods reach the denoisers' gRPC port; the
orchestrator's API ports stay open), an Ingress if any (backend, SSE
settings, TLS, bearer token), token files in mounted Secrets and the
denoisers' token the one the orchestrator sends, ServiceMonitors, non-root pods, the denoiser
device, and that commands and model paths exist in the Dockerfiles.

Then it checks itself: it breaks the rendered objects in one way at a time
(MUTATIONS) and fails unless the checks catch every one.

Exit codes: 0 pass, 1 fail, 77 skipped (kubectl or PyYAML missing).
"""
import argparse
import copy
import glob
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:
    print("SKIP: PyYAML is missing (Debian: python3-yaml)")
    sys.exit(77)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NAMESPACE = "dgrid"
BINARY_SOURCES = {
    "dgrid-denoiser": "denoiser_service/server/main.cc",
    "dgrid-orchestrator": "grid_orchestrator/server/main.cc",
}


# --------------------------------------------------------------- helpers ---

def binary_flags(binary):
    """Flag names defined with ABSL_FLAG in the binary's main.cc."""
    with open(os.path.join(ROOT, BINARY_SOURCES[binary])) as f:
        return set(re.findall(r"ABSL_FLAG\(\s*[\w:<>, ]+?,\s*(\w+)\s*,", f.read()))


def flag_default(binary, name):
    """The default of an int flag, as main.cc's ABSL_FLAG gives it."""
    with open(os.path.join(ROOT, BINARY_SOURCES[binary])) as f:
        m = re.search(r"ABSL_FLAG\(\s*int\s*,\s*" + name + r"\s*,\s*(\d+)\s*,", f.read())
    if not m:
        raise ValueError(f"{binary}: no int flag --{name}")
    return int(m.group(1))


def int_flag(container, binary, name):
    """An int flag as `container` sets it, else its default in main.cc;
    ValueError naming the flag when it is neither."""
    raw = flag_value(container, name)
    if not raw:
        return flag_default(binary, name)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"--{name}={raw!r} is not an integer") from None


def adapter_metrics():
    """Custom metric names that the prometheus-adapter rules serve."""
    with open(os.path.join(ROOT, "deploy/k8s/prometheus-adapter/values.yaml")) as f:
        values = yaml.safe_load(f)
    names = set()
    for rule in values.get("rules", {}).get("custom", []):
        name = rule.get("name", {})
        if "as" in name:
            names.add(name["as"])
        else:  # no rename: the series name itself
            names.add(re.match(r"\s*([a-zA-Z_:][\w:]*)", rule["seriesQuery"]).group(1))
    return names


def dockerfiles_text():
    text = ""
    for path in glob.glob(os.path.join(ROOT, "deploy/docker/Dockerfile*")):
        if not path.endswith(".dockerignore"):
            with open(path) as f:
                text += f.read()
    return text


def model_name(model_dir):
    """The name a bundle's manifest gives, else the folder's name."""
    base = os.path.basename(model_dir.rstrip("/"))
    manifest = os.path.join(ROOT, "models", base, "manifest.json")
    if os.path.exists(manifest):
        import json
        with open(manifest) as f:
            return json.load(f).get("name", base)
    return base


def parse_args(args):
    """['--a=1', '--b'] -> ([('a', '1'), ('b', None)])."""
    out = []
    for a in args or []:
        m = re.match(r"^--?([A-Za-z0-9_]+)(?:=(.*))?$", str(a))
        out.append((m.group(1), m.group(2)) if m else (None, a))
    return out


def addr_port(addr):
    m = re.match(r"^.*:(\d+)$", addr or "")
    return int(m.group(1)) if m else None


def quantity(q):
    """Kubernetes quantity -> float (cpu cores or bytes)."""
    q = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.match(r"^([0-9.]+)([A-Za-z]*)$", q)
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def selects(selector, labels):
    """matchLabels-style selector (a dict, or {matchLabels: ...}) against labels."""
    if selector is None:
        return False
    ml = selector.get("matchLabels", selector) if "matchExpressions" not in selector else None
    if ml is None:
        return False  # matchExpressions: not used here, treat as not matching
    return all(labels.get(k) == v for k, v in ml.items())


class Objects:
    def __init__(self, docs):
        self.docs = docs

    def of(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def workloads(self):
        return [d for d in self.docs if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")]

    def role(self, workload):
        """'dgrid-denoiser' or 'dgrid-orchestrator' from the first container's command."""
        for c in workload["spec"]["template"]["spec"].get("containers", []):
            cmd = c.get("command") or []
            if cmd and os.path.basename(cmd[0]) in BINARY_SOURCES:
                return os.path.basename(cmd[0])
        return None

    def by_role(self, role):
        return [w for w in self.workloads() if self.role(w) == role]


def pod_labels(w):
    return w["spec"]["template"]["metadata"].get("labels", {})


def main_container(w):
    return w["spec"]["template"]["spec"]["containers"][0]


def flag_value(container, name):
    vals = [v for k, v in parse_args(container.get("args")) if k == name]
    return vals[-1] if vals else None


def prestop_sleep(container):
    """Seconds the container's preStop sleeps: 0 without one, None when it
    cannot be told (an httpGet, a script)."""
    pre = (container.get("lifecycle") or {}).get("preStop")
    if not pre:
        return 0
    command = (pre.get("exec") or {}).get("command") or []
    if len(command) == 2 and os.path.basename(command[0]) == "sleep":
        text = command[1]
    elif (len(command) == 3 and command[1] == "-c" and
          os.path.basename(command[0]) in ("sh", "bash")):
        match = re.fullmatch(r"\s*(?:exec\s+)?sleep\s+(\S+)\s*", command[2])
        text = match.group(1) if match else ""
    else:
        return None
    match = re.fullmatch(r"(\d+)s?", text)
    return int(match.group(1)) if match else None


TOKEN_FLAGS = ("auth_token_file", "denoiser_token_file")


def secret_holding(w, path):
    """The Secret whose volume the workload's main container mounts at the
    folder of `path`, or None."""
    mount = next((m for m in main_container(w).get("volumeMounts", [])
                  if m.get("mountPath", "").rstrip("/") == os.path.dirname(path)), None)
    volume = mount and next((v for v in w["spec"]["template"]["spec"].get("volumes", [])
                             if v.get("name") == mount.get("name")), None)
    return (volume.get("secret") or {}).get("secretName") if volume else None


# ---------------------------------------------------------------- checks ---

def check(docs, device):
    """Returns a list of problems with the rendered objects."""
    errors = []
    err = errors.append
    objs = Objects(docs)
    dockerfiles = dockerfiles_text()
    served_metrics = adapter_metrics()

    # Namespace.
    if not any(d["metadata"]["name"] == NAMESPACE for d in objs.of("Namespace")):
        err(f"no Namespace {NAMESPACE}")
    for d in docs:
        if d.get("kind") not in ("Namespace",) and d["metadata"].get("namespace") != NAMESPACE:
            err(f"{d['kind']}/{d['metadata']['name']}: namespace is "
                f"{d['metadata'].get('namespace')!r}, want {NAMESPACE!r}")

    denoisers = objs.by_role("dgrid-denoiser")
    orchestrators = objs.by_role("dgrid-orchestrator")
    if len(denoisers) != 1:
        err(f"want 1 denoiser workload, found {len(denoisers)}")
    if len(orchestrators) != 1:
        err(f"want 1 orchestrator workload, found {len(orchestrators)}")

    # Stopping: the preStop sleep and the binary's --shutdown_grace_s (5 s
    # by default) end before kubelet's SIGKILL, or calls under way are cut
    # off unfinished.
    for w in objs.workloads():
        if objs.role(w) is None:
            continue
        name = f"{w['kind']}/{w['metadata']['name']}"
        c = main_container(w)
        period = w["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        sleep = prestop_sleep(c)
        if sleep is None:
            err(f"{name}: preStop {c['lifecycle']['preStop']}: cannot tell how long it sleeps "
                "(exec sleep N, or a shell's sleep N)")
            continue
        grace = int(flag_value(c, "shutdown_grace_s") or 5)
        if sleep + grace >= period:
            err(f"{name}: preStop sleep {sleep} s + --shutdown_grace_s {grace} s is not under "
                f"terminationGracePeriodSeconds {period}")

    # Workloads and their containers.
    for w in objs.workloads():
        name = f"{w['kind']}/{w['metadata']['name']}"
        role = objs.role(w)
        if role is None:
            err(f"{name}: no container runs a dgrid binary (command[0])")
            continue
        spec = w["spec"]
        pod = spec["template"]["spec"]
        if not selects(spec.get("selector"), pod_labels(w)):
            err(f"{name}: selector does not match its pod template labels")
        psc = pod.get("securityContext", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            cname = f"{name} container {c.get('name')}"
            csc = c.get("securityContext", {})
            # Non-root and locked down.
            non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = csc.get("runAsUser", psc.get("runAsUser"))
            if non_root is not True:
                err(f"{cname}: runAsNonRoot is not true")
            if uid is None or uid == 0:
                err(f"{cname}: runAsUser must be set and non-zero (got {uid})")
            if csc.get("allowPrivilegeEscalation") is not False:
                err(f"{cname}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                err(f"{cname}: readOnlyRootFilesystem is not true")
            if csc.get("privileged"):
                err(f"{cname}: privileged")
            if "ALL" not in (csc.get("capabilities", {}).get("drop") or []):
                err(f"{cname}: capabilities do not drop ALL")
            # Resources.
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        err(f"{cname}: no resources.{part}.{r}")
            for r in ("cpu", "memory"):
                try:
                    if (r in (res.get("requests") or {}) and r in (res.get("limits") or {}) and
                            quantity(res["requests"][r]) > quantity(res["limits"][r])):
                        err(f"{cname}: {r} request exceeds its limit")
                except ValueError as e:
                    err(f"{cname}: {e}")
            # Image pinned by the overlay.
            image = c.get("image", "")
            if ":" not in image.split("/")[-1] and "@" not in image:
                err(f"{cname}: image {image!r} has no tag")
        c = main_container(w)
        cname = f"{name} container {c.get('name')}"
        # Flags: known to the binary, not repeated.
        known = binary_flags(role)
        parsed = parse_args(c.get("args"))
        seen = set()
        for k, v in parsed:
            if k is None:
                err(f"{cname}: argument {v!r} is not a --flag")
            elif k not in known:
                err(f"{cname}: {role} has no flag --{k}")
            elif k in seen:
                err(f"{cname}: --{k} given twice")
            seen.add(k)
        listen = addr_port(flag_value(c, "listen"))
        metrics = addr_port(flag_value(c, "metrics_addr"))
        if listen is None:
            err(f"{cname}: --listen=HOST:PORT missing")
        if metrics is None:
            err(f"{cname}: --metrics_addr=HOST:PORT missing")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        if ports.get("grpc") != listen:
            err(f"{cname}: containerPort grpc={ports.get('grpc')} but --listen port is {listen}")
        if ports.get("metrics") != metrics:
            err(f"{cname}: containerPort metrics={ports.get('metrics')} but --metrics_addr port is {metrics}")
        http = addr_port(flag_value(c, "http_addr"))
        if http is not None and ports.get("http") != http:
            err(f"{cname}: containerPort http={ports.get('http')} but --http_addr port is {http}")
        # Probes: native gRPC on the --listen port, or HTTP on the
        # --http_addr port (named "http" or by number).
        grpc_probes = []
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            p = c.get(probe)
            if p is None:
                if probe != "startupProbe":
                    err(f"{cname}: no {probe}")
                continue
            if "grpc" in p:
                if p["grpc"].get("port") != listen:
                    err(f"{cname}: {probe} probes port {p['grpc'].get('port')}, --listen is {listen}")
                else:
                    grpc_probes.append(probe)
            elif "httpGet" in p:
                port = p["httpGet"].get("port")
                if http is None or port not in ("http", http):
                    err(f"{cname}: {probe} probes HTTP port {port!r}, --http_addr port is {http}")
            else:
                err(f"{cname}: {probe} is neither a gRPC nor an HTTP probe")
        if not grpc_probes:
            err(f"{cname}: no probe checks gRPC on the --listen port")
        # Scraped one way: by the pods' annotations, or by ServiceMonitors
        # (checked below), not both (every series twice).
        ann = w["spec"]["template"]["metadata"].get("annotations", {}) or {}
        if objs.of("ServiceMonitor"):
            scraping = sorted(k for k in ann if k.startswith("prometheus.io/"))
            if scraping:
                err(f"{name}: pod annotations {', '.join(scraping)} beside ServiceMonitors: "
                    "every series would be scraped twice")
        else:
            if ann.get("prometheus.io/scrape") != "true":
                err(f"{name}: pod annotation prometheus.io/scrape is not \"true\"")
            if str(ann.get("prometheus.io/port")) != str(metrics):
                err(f"{name}: prometheus.io/port={ann.get('prometheus.io/port')} but metrics "
                    f"port is {metrics}")
        # The image has what the manifest runs.
        cmd = c.get("command") or []
        if cmd and cmd[0] not in dockerfiles:
            err(f"{cname}: command {cmd[0]} appears in no deploy/docker/Dockerfile*")

        if role == "dgrid-denoiser":
            sp = c.get("startupProbe")
            if not sp:
                err(f"{cname}: no startupProbe (model loading)")
            elif sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) < 120:
                err(f"{cname}: startupProbe allows under 120 s for model loading")
            age = flag_value(c, "max_connection_age_s")
            if age is None or not age.isdigit() or int(age) <= 0:
                err(f"{cname}: --max_connection_age_s must be > 0 (clients re-resolve after scale-up)")
            model_dir = flag_value(c, "model_dir")
            if not model_dir:
                err(f"{cname}: no --model_dir")
            else:
                for d in model_dir.split(","):
                    if d not in dockerfiles:
                        err(f"{cname}: --model_dir {d} appears in no deploy/docker/Dockerfile*")
                svc = (c.get("readinessProbe") or {}).get("grpc", {}).get("service")
                names = [model_name(d) for d in model_dir.split(",")]
                if svc not in (None, "", "dgrid.v1.Denoiser") and svc not in names:
                    err(f"{cname}: readiness probe service {svc!r} is neither dgrid.v1.Denoiser "
                        f"nor a served model {names}")
            dev = flag_value(c, "device")
            if dev != device:
                err(f"{cname}: --device={dev}, want {device}")
            limits = c.get("resources", {}).get("limits", {}) or {}
            gpus = limits.get("nvidia.com/gpu")
            if device == "cuda":
                if not gpus or int(gpus) < 1:
                    err(f"{cname}: no nvidia.com/gpu limit")
                if not pod.get("nodeSelector"):
                    err(f"{name}: no nodeSelector for GPU nodes")
                if not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations") or []):
                    err(f"{name}: no toleration for nvidia.com/gpu")
            elif gpus:
                err(f"{cname}: asks for nvidia.com/gpu without --device=cuda")

    # The explorer: the orchestrator serves HTTP, is ready only when /healthz
    # answers, and its image has the page's files.
    for w in orchestrators:
        c = main_container(w)
        cname = f"{w['kind']}/{w['metadata']['name']} container {c.get('name')}"
        if addr_port(flag_value(c, "http_addr")) is None:
            err(f"{cname}: --http_addr=HOST:PORT missing (the explorer and /api/v1)")
        rp = (c.get("readinessProbe") or {}).get("httpGet") or {}
        if rp.get("path") != "/healthz":
            err(f"{cname}: readinessProbe does not check HTTP /healthz")
        web_dir = flag_value(c, "web_dir")
        if not web_dir:
            err(f"{cname}: no --web_dir (the explorer page)")
        elif web_dir not in dockerfiles:
            err(f"{cname}: --web_dir {web_dir} appears in no deploy/docker/Dockerfile*")

    # Services.
    services = objs.of("Service")
    for s in services:
        name = f"Service/{s['metadata']['name']}"
        sel = s["spec"].get("selector")
        matched = [w for w in objs.workloads() if sel and selects(sel, pod_labels(w))]
        if not matched:
            err(f"{name}: selector {sel} matches no pod template")
            continue
        for p in s["spec"].get("ports", []):
            target = p.get("targetPort", p.get("port"))
            for w in matched:
                cports = [cp for c in w["spec"]["template"]["spec"]["containers"]
                          for cp in c.get("ports", [])]
                if not any(cp.get("name") == target or cp.get("containerPort") == target
                           for cp in cports):
                    err(f"{name}: port {p.get('name')} targets {target!r}, which "
                        f"{w['metadata']['name']} does not expose")

    def services_of(role):
        return [s for s in services for w in objs.by_role(role)
                if selects(s["spec"].get("selector"), pod_labels(w))]

    for w in orchestrators:
        http = addr_port(flag_value(main_container(w), "http_addr"))
        if http is not None and not any(
                p.get("name") == "http" and p.get("targetPort") in ("http", http)
                for s in services_of("dgrid-orchestrator") for p in s["spec"].get("ports", [])):
            err("no orchestrator Service exposes a port named http for the explorer")

    for role in BINARY_SOURCES:
        if not services_of(role):
            err(f"no Service selects the {role} pods")

    # The orchestrator finds denoisers through a headless Service.
    for w in orchestrators:
        target = flag_value(main_container(w), "denoisers") or ""
        m = re.match(r"^dns:///([^:/]+):(\d+)$", target)
        if not m:
            err(f"orchestrator: --denoisers={target!r} is not dns:///SERVICE:PORT")
            continue
        host, port = m.group(1), int(m.group(2))
        svc_name, _, rest = host.partition(".")
        if rest and not (rest == NAMESPACE or rest.startswith(NAMESPACE + ".svc")):
            err(f"orchestrator: --denoisers host {host} is not in namespace {NAMESPACE}")
        svc = next((s for s in services if s["metadata"]["name"] == svc_name), None)
        if svc is None:
            err(f"orchestrator: --denoisers names Service {svc_name}, which does not exist")
            continue
        if svc["spec"].get("clusterIP") != "None":
            err(f"Service/{svc_name}: not headless (clusterIP: None), so dns:/// sees one address")
        if not any(selects(svc["spec"].get("selector"), pod_labels(d)) for d in denoisers):
            err(f"Service/{svc_name}: does not select the denoiser pods")
        if not any(p.get("port") == port for p in svc["spec"].get("ports", [])):
            err(f"orchestrator: --denoisers port {port} is no port of Service/{svc_name}")
        for d in denoisers:
            if addr_port(flag_value(main_container(d), "listen")) != port:
                err(f"orchestrator: --denoisers port {port} is not the denoisers' --listen port")

    # HPA.
    hpas = objs.of("HorizontalPodAutoscaler")
    if not hpas:
        err("no HorizontalPodAutoscaler")
    for h in hpas:
        name = f"HPA/{h['metadata']['name']}"
        if h.get("apiVersion") != "autoscaling/v2":
            err(f"{name}: apiVersion {h.get('apiVersion')}, want autoscaling/v2")
        ref = h["spec"].get("scaleTargetRef", {})
        target = next((w for w in objs.workloads() if w["kind"] == ref.get("kind")
                       and w["metadata"]["name"] == ref.get("name")
                       and ref.get("apiVersion") == "apps/v1"), None)
        if target is None:
            err(f"{name}: scaleTargetRef {ref} matches no workload")
        else:
            if objs.role(target) != "dgrid-denoiser":
                err(f"{name}: scales {ref.get('name')}, not the denoisers")
            if "replicas" in target["spec"]:
                err(f"{name}: {ref.get('name')} sets spec.replicas, which fights the HPA on re-apply")
        if not 1 <= h["spec"].get("minReplicas", 1) <= h["spec"].get("maxReplicas", 0):
            err(f"{name}: want 1 <= minReplicas <= maxReplicas")
        metrics = h["spec"].get("metrics") or []
        if not any(m.get("type") == "Pods" for m in metrics):
            err(f"{name}: no per-pod (type: Pods) custom metric")
        for m in metrics:
            if m.get("type") == "Pods":
                mname = m["pods"]["metric"]["name"]
                if mname not in served_metrics:
                    err(f"{name}: metric {mname} is served by no prometheus-adapter rule "
                        f"(serves {sorted(served_metrics)})")
                target_value = m["pods"].get("target", {}).get("averageValue")
                if mname == "dgrid_denoiser_active_trajectories" and target_value and orchestrators:
                    # A replica holds at most the orchestrator's jobs in
                    # flight on it, each of at most cells_per_job
                    # trajectories; the HPA adds pods only past its target
                    # plus a 10 % tolerance.
                    oc = main_container(orchestrators[0])
                    try:
                        inflight, cells = (int_flag(oc, "dgrid-orchestrator", f)
                                           for f in ("replica_max_inflight", "cells_per_job"))
                    except ValueError as e:
                        err(f"{name}: cannot check its target against the orchestrator's "
                            f"flags: {e}")
                        continue
                    if quantity(target_value) * 1.1 >= inflight * cells:
                        err(f"{name}: a target of {target_value} active trajectories a pod is "
                            f"never passed: the orchestrator gives a replica at most "
                            f"{inflight * cells} (--replica_max_inflight={inflight} x "
                            f"--cells_per_job={cells})")

    # PDB.
    pdbs = objs.of("PodDisruptionBudget")
    if not any(selects(p["spec"].get("selector"), pod_labels(d)) for p in pdbs for d in denoisers):
        err("no PodDisruptionBudget selects the denoiser pods")

    # NetworkPolicy: only orchestrator pods reach the denoisers' gRPC port.
    def grpc_port_of(w):
        return addr_port(flag_value(main_container(w), "listen"))

    for d in denoisers:
        grpc = grpc_port_of(d)
        policies = [p for p in objs.of("NetworkPolicy")
                    if selects(p["spec"].get("podSelector"), pod_labels(d))
                    and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
        if not policies:
            err("no NetworkPolicy selects the denoiser pods for Ingress")
        orchestrator_allowed = False
        for p in policies:
            name = f"NetworkPolicy/{p['metadata']['name']}"
            for rule in p["spec"].get("ingress") or []:
                ports = rule.get("ports")
                covers_grpc = not ports or any(
                    pp.get("port") in (grpc, "grpc") or pp.get("port") is None for pp in ports)
                if not covers_grpc:
                    continue
                peers = rule.get("from")
                if not peers:
                    err(f"{name}: an ingress rule opens the gRPC port to everyone")
                    continue
                for peer in peers:
                    if "namespaceSelector" in peer or "ipBlock" in peer or "podSelector" not in peer:
                        err(f"{name}: gRPC port open to {peer} (only orchestrator pods allowed)")
                        continue
                    sel = peer["podSelector"]
                    picked = {objs.role(w) for w in objs.workloads() if selects(sel, pod_labels(w))}
                    if not (sel.get("matchLabels") or sel.get("matchExpressions")):
                        err(f"{name}: gRPC port open to every pod (empty podSelector)")
                    elif picked != {"dgrid-orchestrator"}:
                        err(f"{name}: gRPC peer {sel} selects {sorted(filter(None, picked))}, "
                            "want the orchestrator only")
                    else:
                        orchestrator_allowed = True
        if policies and not orchestrator_allowed:
            err("no NetworkPolicy rule lets the orchestrator reach the denoisers' gRPC port")

    # The orchestrator's API ports (gRPC and HTTP) stay open to clients under
    # any NetworkPolicy that selects its pods.
    for w in orchestrators:
        c = main_container(w)
        policies = [p for p in objs.of("NetworkPolicy")
                    if selects(p["spec"].get("podSelector"), pod_labels(w))
                    and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
        named = {cp.get("containerPort"): cp.get("name") for cp in c.get("ports", [])}
        for what, port in (("gRPC", addr_port(flag_value(c, "listen"))),
                           ("http", addr_port(flag_value(c, "http_addr")))):
            if port is None or not policies:
                continue
            open_to_all = any(
                not rule.get("from") and (not rule.get("ports") or any(
                    pp.get("port") in (port, named.get(port)) for pp in rule["ports"]))
                for p in policies for rule in p["spec"].get("ingress") or [])
            if not open_to_all:
                err(f"NetworkPolicy: no rule admits clients to the orchestrator's {what} port {port}")

    # An Ingress reaches the explorer: the orchestrator's http Service port,
    # SSE unbuffered with a read timeout past the grid timeout, TLS, and a
    # bearer token on the orchestrator.
    for ing in objs.of("Ingress"):
        name = f"Ingress/{ing['metadata']['name']}"
        ann = ing["metadata"].get("annotations") or {}
        backends = [path["backend"] for rule in ing["spec"].get("rules") or []
                    for path in (rule.get("http") or {}).get("paths") or []]
        if ing["spec"].get("defaultBackend"):
            backends.append(ing["spec"]["defaultBackend"])
        if not backends:
            err(f"{name}: no backend")
        for b in backends:
            svc_ref = b.get("service") or {}
            svc = next((x for x in services if x["metadata"]["name"] == svc_ref.get("name")), None)
            want = svc_ref.get("port") or {}
            port = None if svc is None else next(
                (p for p in svc["spec"].get("ports", [])
                 if p.get("name") == want.get("name") or p.get("port") == want.get("number")), None)
            if svc is None:
                err(f"{name}: backend Service {svc_ref.get('name')} does not exist")
            elif port is None:
                err(f"{name}: Service/{svc_ref.get('name')} has no port {want}")
            elif svc not in services_of("dgrid-orchestrator") or port.get("name") != "http":
                err(f"{name}: backend {svc_ref.get('name')}:{port.get('name')} is not the "
                    "orchestrator's http port")
        if ann.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
            err(f"{name}: proxy-buffering is not \"off\" (SSE events would wait in the proxy)")
        for w in orchestrators:
            try:
                grid_timeout = int_flag(main_container(w), "dgrid-orchestrator", "grid_timeout_s")
            except ValueError as e:
                err(f"{name}: cannot check the proxy timeouts: {e}")
                continue
            for key in ("proxy-read-timeout", "proxy-send-timeout"):
                value = ann.get(f"nginx.ingress.kubernetes.io/{key}", "60")
                if not str(value).isdigit() or int(value) <= grid_timeout:
                    err(f"{name}: {key} {value} s is not above --grid_timeout_s={grid_timeout}")
            if not flag_value(main_container(w), "auth_token_file"):
                err(f"{name}: publishes the orchestrator, which has no --auth_token_file")
        if not ing["spec"].get("tls"):
            err(f"{name}: no tls (the bearer token would cross the network in clear)")

    # Bearer tokens: a token file lies in a Secret its container mounts, and
    # the token the denoisers require is the one the orchestrator sends.
    for w in denoisers + orchestrators:
        for flag in TOKEN_FLAGS:
            path = flag_value(main_container(w), flag)
            if path and secret_holding(w, path) is None:
                err(f"Deployment/{w['metadata']['name']}: --{flag}={path} is not in a Secret "
                    "the container mounts")
    for o in orchestrators:
        sent = flag_value(main_container(o), "denoiser_token_file")
        for d in denoisers:
            required = flag_value(main_container(d), "auth_token_file")
            if required and not sent:
                err(f"Deployment/{o['metadata']['name']}: the denoisers require a token "
                    "(--auth_token_file) and it sends none (--denoiser_token_file)")
            elif sent and not required:
                err(f"Deployment/{o['metadata']['name']}: sends a token (--denoiser_token_file) "
                    "that the denoisers do not require (no --auth_token_file)")
            elif sent:
                sent_secret, required_secret = secret_holding(o, sent), secret_holding(d, required)
                if sent_secret != required_secret:
                    err(f"Deployment/{o['metadata']['name']}: sends the token of Secret "
                        f"{sent_secret}, the denoisers require Secret {required_secret}'s")

    # ServiceMonitors, where the overlay has them (else the pods' annotations,
    # checked above), cover both Services' metrics ports.
    monitors = objs.of("ServiceMonitor")
    for role in BINARY_SOURCES if monitors else ():
        ok = False
        for s in services_of(role):
            port_names = {p.get("name") for p in s["spec"].get("ports", [])}
            for m in monitors:
                if selects(m["spec"].get("selector"), s["metadata"].get("labels", {})) and \
                        any(e.get("port") in port_names and e.get("port") == "metrics"
                            for e in m["spec"].get("endpoints", [])):
                    ok = True
        if not ok:
            err(f"no ServiceMonitor scrapes the metrics port of a Service of {role}")
    return errors


# ------------------------------------------------------------- self-test ---

def _scrape_by_annotations(docs, port):
    """A render without Prometheus Operator: no ServiceMonitors, the pods
    annotated, the denoiser's annotation on `port`."""
    docs[:] = [d for d in docs if d.get("kind") != "ServiceMonitor"]
    for d in docs:
        if d.get("kind") == "Deployment":
            d["spec"]["template"]["metadata"]["annotations"] = {
                "prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                "prometheus.io/port": port if "denoiser" in d["metadata"]["name"] else "9090"}


def _find(docs, kind, role=None, name=None):
    objs = Objects(docs)
    for d in docs:
        if d.get("kind") != kind:
            continue
        if role and objs.role(d) != role:
            continue
        if name and d["metadata"]["name"] != name:
            continue
        return d
    raise KeyError(f"{kind} {role or name}")


def _container(docs, role):
    return main_container(_find(docs, "Deployment", role=role))


def _set_flag(docs, role, flag, value):
    c = _container(docs, role)
    args = [a for a in c["args"] if not a.startswith(f"--{flag}=") and a != f"--{flag}"]
    if value is not None:
        args.append(f"--{flag}={value}")
    c["args"] = args


def _grpc_rule(docs):
    np = _find(docs, "NetworkPolicy", name="dgrid-denoiser")
    return next(r for r in np["spec"]["ingress"]
                if any(p.get("port") == 50051 for p in r.get("ports", [])))


MUTATIONS = [
    ("denoiser without readinessProbe", 'no readinessProbe',
        lambda d: _container(d, "dgrid-denoiser").pop("readinessProbe")),
    ("orchestrator without livenessProbe", 'no livenessProbe',
        lambda d: _container(d, "dgrid-orchestrator").pop("livenessProbe")),
    ("orchestrator without limits", 'no resources.limits',
        lambda d: _container(d, "dgrid-orchestrator")["resources"].pop("limits")),
    ("denoiser without memory request", 'no resources.requests.memory',
        lambda d: _container(d, "dgrid-denoiser")["resources"]["requests"].pop("memory")),
    ("Service selector off by one letter", 'matches no pod template',
        lambda d: _find(d, "Service", name="dgrid-denoiser")["spec"]["selector"].update(
            {"app.kubernetes.io/name": "dgrid-denoiserr"})),
    ("Service targets a port the pod lacks", 'does not expose',
        lambda d: _find(d, "Service", name="dgrid-orchestrator")["spec"]["ports"][0].update(
            {"targetPort": "grcp"})),
    ("denoiser containerPort differs from --listen", 'containerPort grpc=50052',
        lambda d: _container(d, "dgrid-denoiser")["ports"][0].update({"containerPort": 50052})),
    ("orchestrator --metrics_addr differs from its port", '--metrics_addr port is 9999',
        lambda d: _set_flag(d, "dgrid-orchestrator", "metrics_addr", "0.0.0.0:9999")),
    ("denoiser shutdown grace past its pod's", 'is not under terminationGracePeriodSeconds',
        lambda d: _set_flag(d, "dgrid-denoiser", "shutdown_grace_s", "25")),
    ("denoiser preStop through a shell, longer", 'is not under terminationGracePeriodSeconds',
        lambda d: _container(d, "dgrid-denoiser")["lifecycle"]["preStop"]["exec"].update(
            {"command": ["/bin/sh", "-c", "sleep 15s"]})),
    ("orchestrator preStop of unknown length", 'cannot tell how long it sleeps',
        lambda d: _container(d, "dgrid-orchestrator")["lifecycle"]["preStop"]["exec"].update(
            {"command": ["/usr/local/bin/drain.sh"]})),
    ("orchestrator pod grace shortened", 'is not under terminationGracePeriodSeconds',
        lambda d: _find(d, "Deployment", name="dgrid-orchestrator")["spec"]["template"]["spec"]
        .update({"terminationGracePeriodSeconds": 20})),
    ("readiness probe on the metrics port", 'readinessProbe probes port 9091',
        lambda d: _container(d, "dgrid-denoiser")["readinessProbe"]["grpc"].update({"port": 9091})),
    ("readiness probe for a model not served", 'nor a served model',
        lambda d: _container(d, "dgrid-denoiser")["readinessProbe"]["grpc"].update(
            {"service": "no-such-model"})),
    ("flag the binary does not have", 'has no flag --max_conection_age_s',
        lambda d: _container(d, "dgrid-denoiser")["args"].append("--max_conection_age_s=60")),
    ("flag given twice", '--cache_mb given twice',
        lambda d: _container(d, "dgrid-orchestrator")["args"].append("--cache_mb=1")),
    ("no max connection age", '--max_connection_age_s must be > 0',
        lambda d: _set_flag(d, "dgrid-denoiser", "max_connection_age_s", None)),
    ("wrong device", '--device=bogus',
        lambda d: _set_flag(d, "dgrid-denoiser", "device", "bogus")),
    ("static denoiser list", 'is not dns:///SERVICE:PORT',
        lambda d: _set_flag(d, "dgrid-orchestrator", "denoisers", "10.0.0.1:50051")),
    ("dns:/// to a Service that does not exist", 'which does not exist',
        lambda d: _set_flag(d, "dgrid-orchestrator", "denoisers", "dns:///dgrid-denoisers:50051")),
    ("denoiser Service not headless", 'not headless',
        lambda d: _find(d, "Service", name="dgrid-denoiser")["spec"].pop("clusterIP")),
    ("HPA target renamed", 'matches no workload',
        lambda d: _find(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(
            {"name": "dgrid-denoiser-x"})),
    ("HPA metric no adapter rule serves", 'served by no prometheus-adapter rule',
        lambda d: _find(d, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"].update(
            {"name": "dgrid_denoiser_active"})),
    ("HPA target past what the orchestrator sends a replica", 'is never passed',
        lambda d: _set_flag(d, "dgrid-orchestrator", "replica_max_inflight", "8")),
    ("orchestrator flag the HPA check cannot read", 'cannot check its target',
        lambda d: _set_flag(d, "dgrid-orchestrator", "replica_max_inflight", "lots")),
    ("Deployment replicas under an HPA", 'fights the HPA',
        lambda d: _find(d, "Deployment", role="dgrid-denoiser")["spec"].update({"replicas": 3})),
    ("PDB selects nothing", 'no PodDisruptionBudget selects',
        lambda d: _find(d, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/name": "denoiser"})),
    ("NetworkPolicy selects the orchestrator instead", 'no NetworkPolicy selects the denoiser pods',
        lambda d: _find(d, "NetworkPolicy", name="dgrid-denoiser")["spec"]["podSelector"][
            "matchLabels"].update({"app.kubernetes.io/name": "dgrid-orchestrator"})),
    ("NetworkPolicy opens gRPC to a namespace", "gRPC port open to {'namespaceSelector'",
        lambda d: _grpc_rule(d)["from"].append({"namespaceSelector": {}})),
    ("NetworkPolicy opens gRPC to every pod", 'empty podSelector',
        lambda d: _grpc_rule(d)["from"][0].update({"podSelector": {}})),
    ("NetworkPolicy gRPC rule without from", 'opens the gRPC port to everyone',
        lambda d: _grpc_rule(d).pop("from")),
    ("NetworkPolicy rule for all ports from monitoring", 'only orchestrator pods allowed',
        lambda d: _find(d, "NetworkPolicy", name="dgrid-denoiser")["spec"]["ingress"][1].pop("ports")),
    ("pod may run as root", 'runAsNonRoot is not true',
        lambda d: _find(d, "Deployment", role="dgrid-denoiser")["spec"]["template"]["spec"][
            "securityContext"].update({"runAsNonRoot": False, "runAsUser": 0})),
    ("writable root filesystem", 'readOnlyRootFilesystem is not true',
        lambda d: _container(d, "dgrid-orchestrator")["securityContext"].update(
            {"readOnlyRootFilesystem": False})),
    ("capabilities kept", 'do not drop ALL',
        lambda d: _container(d, "dgrid-denoiser")["securityContext"].pop("capabilities")),
    ("privilege escalation allowed", 'allowPrivilegeEscalation is not false',
        lambda d: _container(d, "dgrid-orchestrator")["securityContext"].pop(
            "allowPrivilegeEscalation")),
    ("no ServiceMonitors, and an annotation on the wrong port", 'prometheus.io/port=50051',
        lambda d: _scrape_by_annotations(d, port="50051")),
    ("scrape annotations beside ServiceMonitors", 'beside ServiceMonitors',
        lambda d: _find(d, "Deployment", role="dgrid-denoiser")["spec"]["template"][
            "metadata"].setdefault("annotations", {}).update({"prometheus.io/scrape": "true"})),
    ("ServiceMonitor on a port name that does not exist", 'no ServiceMonitor scrapes',
        lambda d: _find(d, "ServiceMonitor", name="dgrid-orchestrator")["spec"]["endpoints"][0].update(
            {"port": "http-metrics"})),
    ("object outside the namespace", "namespace is 'default'",
        lambda d: _find(d, "Service", name="dgrid-orchestrator")["metadata"].update(
            {"namespace": "default"})),
    ("startupProbe too short for model loading", 'startupProbe allows under 120 s',
        lambda d: _container(d, "dgrid-denoiser")["startupProbe"].update({"failureThreshold": 3})),
    ("command not in any Dockerfile", 'appears in no deploy/docker/Dockerfile',
        lambda d: _container(d, "dgrid-denoiser").update({"command": ["/usr/bin/dgrid-denoiser"]})),
]

def _orchestrator_policy_rule(docs, port):
    np = _find(docs, "NetworkPolicy", name="dgrid-orchestrator")
    return next(r for r in np["spec"]["ingress"]
                if any(p.get("port") == port for p in r.get("ports", [])))


EXPLORER_MUTATIONS = [
    ("orchestrator without --http_addr", '--http_addr=HOST:PORT missing',
        lambda d: _set_flag(d, "dgrid-orchestrator", "http_addr", None)),
    ("http containerPort differs from --http_addr", 'containerPort http=8081',
        lambda d: next(p for p in _container(d, "dgrid-orchestrator")["ports"]
                       if p["name"] == "http").update({"containerPort": 8081})),
    ("readiness on gRPC only", 'readinessProbe does not check HTTP /healthz',
        lambda d: _container(d, "dgrid-orchestrator").update(
            {"readinessProbe": {"grpc": {"port": 50050}}})),
    ("readiness on a path the gateway does not serve", 'readinessProbe does not check HTTP /healthz',
        lambda d: _container(d, "dgrid-orchestrator")["readinessProbe"]["httpGet"].update(
            {"path": "/health"})),
    ("readiness on the metrics port", "readinessProbe probes HTTP port 'metrics'",
        lambda d: _container(d, "dgrid-orchestrator")["readinessProbe"]["httpGet"].update(
            {"port": "metrics"})),
    ("no probe left on gRPC", 'no probe checks gRPC',
        lambda d: [_container(d, "dgrid-orchestrator").update(
            {"livenessProbe": {"httpGet": {"port": "http", "path": "/healthz"}}}),
            _container(d, "dgrid-orchestrator").pop("startupProbe")]),
    ("--web_dir the image does not have", '--web_dir /srv/web appears in no',
        lambda d: _set_flag(d, "dgrid-orchestrator", "web_dir", "/srv/web")),
    ("Service without the http port", 'exposes a port named http',
        lambda d: _find(d, "Service", name="dgrid-orchestrator")["spec"].update(
            {"ports": [p for p in _find(d, "Service", name="dgrid-orchestrator")["spec"]["ports"]
                       if p["name"] != "http"]})),
    ("orchestrator NetworkPolicy closes the http port", "admits clients to the orchestrator's http port",
        lambda d: _orchestrator_policy_rule(d, 8080).update(
            {"ports": [{"protocol": "TCP", "port": 50050}]})),
    ("orchestrator NetworkPolicy opens gRPC to monitoring only", "orchestrator's gRPC port",
        lambda d: _orchestrator_policy_rule(d, 50050).update(
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]})),
]


def _ingress(docs):
    return _find(docs, "Ingress")


def _ingress_backend(docs):
    return _ingress(docs)["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]


INGRESS_MUTATIONS = [
    ("Ingress to a Service port that does not exist", "has no port {'name': 'web'}",
        lambda d: _ingress_backend(d).update({"port": {"name": "web"}})),
    ("Ingress to the gRPC port", "is not the orchestrator's http port",
        lambda d: _ingress_backend(d).update({"port": {"name": "grpc"}})),
    ("Ingress to a Service that does not exist", 'backend Service dgrid-explorer does not exist',
        lambda d: _ingress_backend(d).update({"name": "dgrid-explorer"})),
    ("Ingress buffering SSE", 'proxy-buffering is not "off"',
        lambda d: _ingress(d)["metadata"]["annotations"].pop(
            "nginx.ingress.kubernetes.io/proxy-buffering")),
    ("Ingress read timeout below the grid timeout", 'proxy-read-timeout 60 s is not above',
        lambda d: _ingress(d)["metadata"]["annotations"].pop(
            "nginx.ingress.kubernetes.io/proxy-read-timeout")),
    ("Ingress without TLS", 'no tls',
        lambda d: _ingress(d)["spec"].pop("tls")),
    ("Ingress to an orchestrator without a token", 'has no --auth_token_file',
        lambda d: _set_flag(d, "dgrid-orchestrator", "auth_token_file", None)),
]

DENOISER_TOKEN_MUTATIONS = [
    ("denoisers require a token the orchestrator does not send", 'it sends none',
        lambda d: _set_flag(d, "dgrid-orchestrator", "denoiser_token_file", None)),
    ("orchestrator sends a token the denoisers do not require", 'do not require',
        lambda d: _set_flag(d, "dgrid-denoiser", "auth_token_file", None)),
    ("orchestrator sends another Secret's token", 'sends the token of Secret dgrid-auth-token',
        lambda d: _set_flag(d, "dgrid-orchestrator", "denoiser_token_file", "/etc/dgrid/auth/token")),
    ("token file outside any mounted Secret", '--auth_token_file=/etc/dgrid/token is not in a Secret',
        lambda d: _set_flag(d, "dgrid-denoiser", "auth_token_file", "/etc/dgrid/token")),
]

GPU_MUTATIONS = [
    ("GPU denoiser without nvidia.com/gpu", 'no nvidia.com/gpu limit',
        lambda d: _container(d, "dgrid-denoiser")["resources"]["limits"].pop("nvidia.com/gpu")),
    ("GPU denoiser without toleration", 'no toleration for nvidia.com/gpu',
        lambda d: _find(d, "Deployment", role="dgrid-denoiser")["spec"]["template"]["spec"].pop(
            "tolerations")),
    ("GPU denoiser without nodeSelector", 'no nodeSelector',
        lambda d: _find(d, "Deployment", role="dgrid-denoiser")["spec"]["template"]["spec"].pop(
            "nodeSelector")),
]
CPU_MUTATIONS = [
    ("CPU denoiser asking for a GPU", 'asks for nvidia.com/gpu',
        lambda d: _container(d, "dgrid-denoiser")["resources"]["limits"].update({"nvidia.com/gpu": 1})),
]


def mutations_for(docs, device):
    mutations = MUTATIONS + EXPLORER_MUTATIONS
    mutations += GPU_MUTATIONS if device == "cuda" else CPU_MUTATIONS
    if Objects(docs).of("Ingress"):
        mutations += INGRESS_MUTATIONS
    if flag_value(_container(docs, "dgrid-denoiser"), "auth_token_file"):
        mutations += DENOISER_TOKEN_MUTATIONS
    return mutations


def self_test(docs, device):
    """Every mutation must be caught, by the check meant to catch it.
    Returns the ones that were not."""
    missed = []
    mutations = mutations_for(docs, device)
    for what, expect, mutate in mutations:
        broken = copy.deepcopy(docs)
        mutate(broken)
        errors = check(broken, device)
        hit = [e for e in errors if expect in e]
        if not hit:
            missed.append(f"{what} (want an error with {expect!r}, got {errors})")
        else:
            print(f"  caught: {what}: {hit[0]}")
    return missed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--overlay", required=True)
    ap.add_argument("--device", required=True, choices=["cpu", "cuda"])
    a = ap.parse_args()
    kubectl = shutil.which(a.kubectl) if a.kubectl else None
    if not kubectl:
        print(f"SKIP: kubectl not found ({a.kubectl!r})")
        return 77
    render = subprocess.run([kubectl, "kustomize", a.overlay], capture_output=True, text=True)
    if render.returncode != 0:
        print(f"FAIL: kubectl kustomize {a.overlay}:\n{render.stderr}")
        return 1
    docs = [d for d in yaml.safe_load_all(render.stdout) if d]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    print(f"rendered {a.overlay}: {len(docs)} objects: {', '.join(kinds)}")
    errors = check(docs, a.device)
    for e in errors:
        print(f"FAIL: {e}")
    if errors:
        return 1
    print("structure: OK")
    missed = self_test(docs, a.device)
    for m in missed:
        print(f"FAIL: self-test: the checks missed a broken copy: {m}")
    if missed:
        return 1
    count = len(mutations_for(docs, a.device))
    print(f"self-test: all {count} broken copies caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
