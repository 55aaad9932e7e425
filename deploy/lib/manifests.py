#!/usr/bin/env python3
"""Offline checks of rendered Kubernetes manifests, called by deploy/check.sh.

    manifests.py core FILE          print the documents that kubernetes-validate knows
                                    (built-in API groups) as one YAML stream
    manifests.py crds FILE          validate custom resources against deploy/schemas/
                                    (JSON Schema 2020-12); list the ones without a schema
    manifests.py policy FILE        assert what a rendered overlay must hold:
                                    security contexts, probes, drain timing, anti-affinity,
                                    migrations, PDBs, HPAs, no committed Secrets, the daily
                                    audit checks, the alert rules' metrics (each one exported
                                    by the services' code) and the NetworkPolicies
                                    (evaluated on concrete flows)

Each prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    # name: (namespace, env prefix, own database cluster)
    "population-registry": ("mps-population", "POPULATION_REGISTRY_", "population-db"),
    "civil-registry": ("moj-civilstatus", "CIVIL_REGISTRY_", "civil-db"),
}
GRPC_PORT, METRICS_PORT, OTLP_PORT, PG_PORT = 50051, 9464, 4317, 5432
EXIT_AUDIT_BROKEN = 65  # `<service> audit verify` at a broken link (both services' cli.rs)
# Metric names the services export themselves (the rest come from kube-state-metrics).
OWN_METRIC_PREFIXES = "civil_registry|population_registry|grpc_server|tls_certificate"
OWN_METRIC = re.compile(rf"\b((?:{OWN_METRIC_PREFIXES})_[a-z0-9_]+)\b")
# Suffixes Prometheus adds to histograms and summaries.
SERIES_SUFFIXES = ("_bucket", "_count", "_sum")
DEFAULT_DRAIN_MS = 10_000  # service_kit ServerConfig default
# After the drain: the civil relay's stop (population_registry.call_timeout_ms + 1 s,
# civil-registry app.rs), then the last span export (service_kit telemetry COLLECTOR_EXPORT).
DEFAULT_CALL_TIMEOUT_MS = 5_000  # civil-registry population_registry.call_timeout_ms default
TELEMETRY_FLUSH_S = 10

failures: list[str] = []


def ok(msg: str) -> None:
    print(f"  ok      {msg}")


def fail(msg: str) -> None:
    print(f"  FAILED  {msg}")
    failures.append(msg)


def check(cond: bool, msg: str) -> None:
    (ok if cond else fail)(msg)


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def group_of(doc: dict) -> str:
    api = doc.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


def is_builtin(doc: dict) -> bool:
    g = group_of(doc)
    return g == "" or "." not in g or g.endswith(".k8s.io")


def ident(doc: dict) -> str:
    md = doc.get("metadata", {})
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{ns + '/' if ns else ''}{md.get('name')}"


# ---------------------------------------------------------------- core / crds


def cmd_core(path: str) -> int:
    docs = [d for d in load(path) if is_builtin(d)]
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


def cmd_crds(path: str) -> int:
    skipped = []
    for doc in load(path):
        if is_builtin(doc):
            continue
        schema_path = SCHEMAS / doc.get("apiVersion", "?") / f"{doc.get('kind')}.json"
        if not schema_path.is_file():
            skipped.append(ident(doc))
            continue
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
        errors = sorted(Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            for e in errors:
                where = ".".join(str(p) for p in e.path) or "(root)"
                fail(f"{ident(doc)} against {schema_path.relative_to(SCHEMAS)}: {where}: {e.message}")
        else:
            ok(f"{ident(doc)} against deploy/schemas/{schema_path.relative_to(SCHEMAS)}")
    for s in skipped:
        print(f"  SKIPPED {s}: no bundled schema in deploy/schemas/")
    return 1 if failures else 0


# ---------------------------------------------------------------- policy


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def find(docs: list[dict], kind: str, ns: str, name: str) -> dict | None:
    for d in by_kind(docs, kind):
        md = d.get("metadata", {})
        if md.get("name") == name and md.get("namespace") == ns:
            return d
    return None


def selector_matches(sel: dict | None, labels: dict) -> bool:
    """A LabelSelector; an empty selector matches everything."""
    if sel is None:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


class Pod:
    def __init__(self, ns: str, labels: dict, what: str):
        self.ns, self.labels, self.what = ns, labels, what


def ns_labels(docs: list[dict], ns: str) -> dict:
    labels = {"kubernetes.io/metadata.name": ns}
    for d in by_kind(docs, "Namespace"):
        if d["metadata"]["name"] == ns:
            labels.update(d["metadata"].get("labels") or {})
    return labels


def peer_matches(docs: list[dict], policy_ns: str, peer: dict, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # the flows checked here are all pod to pod
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if ns_sel is None and not selector_matches(pod_sel, pod.labels):
        return False
    if ns_sel is None:
        return pod.ns == policy_ns
    return selector_matches(ns_sel, ns_labels(docs, pod.ns)) and selector_matches(pod_sel, pod.labels)


def port_matches(ports: list | None, port: int) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port) for p in ports)


def direction_allows(docs: list[dict], subject: Pod, other: Pod, port: int, direction: str) -> bool:
    """Whether NetworkPolicies in subject's namespace let subject send (Egress) to / receive
    (Ingress) from `other` on TCP `port`. No selecting policy of that type: allowed."""
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = []
    for np in by_kind(docs, "NetworkPolicy"):
        if np["metadata"].get("namespace") != subject.ns:
            continue
        spec = np.get("spec", {})
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if direction in types and selector_matches(spec.get("podSelector") or {}, subject.labels):
            selecting.append(spec)
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(peer_matches(docs, subject.ns, p, other) for p in peers)) and port_matches(
                rule.get("ports"), port
            ):
                return True
    return False


def flow_allowed(docs: list[dict], src: Pod, dst: Pod, port: int) -> bool:
    return direction_allows(docs, src, dst, port, "Egress") and direction_allows(docs, dst, src, port, "Ingress")


def check_flows(docs: list[dict]) -> None:
    pop = Pod("mps-population", {"app.kubernetes.io/name": "population-registry"}, "population-registry")
    civ = Pod("moj-civilstatus", {"app.kubernetes.io/name": "civil-registry"}, "civil-registry")
    pop_db = Pod("mps-population", {"cnpg.io/cluster": "population-db"}, "population-db")
    civ_db = Pod("moj-civilstatus", {"cnpg.io/cluster": "civil-db"}, "civil-db")
    gateway = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, "ingress controller")
    prom = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}, "prometheus (monitoring)")
    otel = Pod("observability", {"app.kubernetes.io/name": "otel-collector"}, "otel collector")
    stranger_civ = Pod("moj-civilstatus", {"app": "debug-shell"}, "another pod in moj-civilstatus")
    stranger_pop = Pod("mps-population", {"app": "debug-shell"}, "another pod in mps-population")
    elsewhere = Pod("default", {"app.kubernetes.io/name": "civil-registry"}, "a civil-registry look-alike in default")
    dns = Pod("kube-system", {"k8s-app": "kube-dns"}, "kube-dns")
    pop_audit = Pod("mps-population", {"app.kubernetes.io/name": "population-registry-audit"}, "population audit check")
    civ_audit = Pod("moj-civilstatus", {"app.kubernetes.io/name": "civil-registry-audit"}, "civil audit check")

    expectations = [
        (civ, pop, GRPC_PORT, True),
        (stranger_civ, pop, GRPC_PORT, False),
        (stranger_pop, pop, GRPC_PORT, False),
        (elsewhere, pop, GRPC_PORT, False),
        (gateway, pop, GRPC_PORT, False),
        (otel, pop, GRPC_PORT, False),
        (pop, civ, GRPC_PORT, False),
        (gateway, civ, GRPC_PORT, True),
        (elsewhere, civ, GRPC_PORT, False),
        (stranger_civ, civ, GRPC_PORT, False),
        (prom, pop, METRICS_PORT, True),
        (prom, civ, METRICS_PORT, True),
        (gateway, civ, METRICS_PORT, False),
        (pop, pop_db, PG_PORT, True),
        (civ, civ_db, PG_PORT, True),
        (civ, pop_db, PG_PORT, False),
        (pop, civ_db, PG_PORT, False),
        (stranger_pop, pop_db, PG_PORT, False),
        (pop, otel, OTLP_PORT, True),
        (civ, otel, OTLP_PORT, True),
        (pop, prom, METRICS_PORT, False),
        (civ, gateway, 443, False),
        (pop_audit, pop_db, PG_PORT, True),
        (civ_audit, civ_db, PG_PORT, True),
        (civ_audit, otel, OTLP_PORT, True),
        (pop_audit, civ_db, PG_PORT, False),
        (civ_audit, pop_db, PG_PORT, False),
        (civ_audit, pop, GRPC_PORT, False),
        (pop_audit, otel, OTLP_PORT, False),
    ]
    for src, dst, port, expected in expectations:
        got = flow_allowed(docs, src, dst, port)
        verdict = "allowed" if expected else "denied"
        check(got == expected, f"network: {src.what} -> {dst.what}:{port} {verdict}")
    # The receiving side alone must hold, whatever the sender's namespace allows out.
    ingress_only = [
        (civ, pop, GRPC_PORT, True),
        (stranger_civ, pop, GRPC_PORT, False),
        (stranger_pop, pop, GRPC_PORT, False),
        (elsewhere, pop, GRPC_PORT, False),
        (gateway, pop, GRPC_PORT, False),
        (gateway, civ, GRPC_PORT, True),
        (elsewhere, civ, GRPC_PORT, False),
        (stranger_civ, civ, GRPC_PORT, False),
        (civ, pop_db, PG_PORT, False),
        (stranger_pop, pop_db, PG_PORT, False),
        (pop, civ_db, PG_PORT, False),
        (stranger_civ, civ_db, PG_PORT, False),
    ]
    for src, dst, port, expected in ingress_only:
        got = direction_allows(docs, dst, src, port, "Ingress")
        verdict = "admits" if expected else "refuses"
        check(got == expected, f"network: {dst.what} ingress {verdict} {src.what} on {port}")
    for pod in (pop, civ, pop_db, civ_db, stranger_pop, stranger_civ, pop_audit, civ_audit):
        check(direction_allows(docs, pod, dns, 53, "Egress"), f"network: {pod.what} may resolve DNS")
    for ns in ("mps-population", "moj-civilstatus"):
        deny = [
            np
            for np in by_kind(docs, "NetworkPolicy")
            if np["metadata"].get("namespace") == ns
            and (np["spec"].get("podSelector") or {}) == {}
            and set(np["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
            and not np["spec"].get("ingress")
            and not np["spec"].get("egress")
        ]
        check(bool(deny), f"network: default deny (ingress and egress) in {ns}")


def container_sc_ok(c: dict, pod_sc: dict) -> list[str]:
    sc = c.get("securityContext") or {}
    problems = []
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem must be true")
    if sc.get("privileged"):
        problems.append("privileged")
    if not (sc.get("runAsNonRoot") is True or (pod_sc.get("runAsNonRoot") is True and "runAsNonRoot" not in sc)):
        problems.append("runAsNonRoot must be true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities.drop must contain ALL")
    if (sc.get("capabilities") or {}).get("add"):
        problems.append("no capabilities may be added")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        problems.append("seccompProfile must be RuntimeDefault")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problems.append(f"resources.{kind}.{r} missing")
    return problems


def config_toml(docs: list[dict], deployment: dict) -> dict:
    for v in deployment["spec"]["template"]["spec"].get("volumes") or []:
        cm = (v.get("configMap") or {}).get("name")
        if v.get("name") == "config" and cm:
            doc = find(docs, "ConfigMap", deployment["metadata"]["namespace"], cm)
            if doc:
                return tomllib.loads(doc["data"]["config.toml"])
    return {}


def check_database_tls(name: str, container: dict, pod: dict, db: str) -> None:
    """The container verifies the database's certificate against the CA CloudNativePG made
    for it (libpq's PGSSLMODE/PGSSLROOTCERT, which sqlx reads under the URL)."""
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    root = env.get("PGSSLROOTCERT") or ""
    ca_volumes = {v["name"] for v in pod.get("volumes") or [] if (v.get("secret") or {}).get("secretName") == f"{db}-ca"}
    mounted = any(
        m["name"] in ca_volumes and root.startswith(m["mountPath"].rstrip("/") + "/")
        for m in container.get("volumeMounts") or []
    )
    check(
        env.get("PGSSLMODE") == "verify-full" and mounted,
        f"{name}: {container['name']} verifies the database's certificate (PGSSLMODE verify-full, CA from Secret {db}-ca)",
    )


def files_named(cfg: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(key, path) of every absolute `*_file` path in a service's config."""
    found = []
    for key, value in cfg.items():
        if isinstance(value, dict):
            found += files_named(value, f"{prefix}{key}.")
        elif key.endswith("_file") and isinstance(value, str) and value.startswith("/"):
            found.append((prefix + key, value))
    return found


def check_files_mounted(name: str, container: dict, files: list[tuple[str, str]]) -> None:
    """Each file the config names lies under one of the container's mounts."""
    mounts = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts") or []]
    missing = [
        f"{key}={path}" for key, path in files
        if not any(path == m or path.startswith(m + "/") for m in mounts)
    ]
    check(not missing, f"{name}: {container['name']} mounts every file its config names" + (f" (missing: {', '.join(missing)})" if missing else ""))


def check_service(docs: list[dict], name: str, ns: str, prefix: str, db: str) -> None:
    d = find(docs, "Deployment", ns, name)
    if d is None:
        fail(f"{name}: Deployment {ns}/{name} present")
        return
    ok(f"{name}: Deployment present")
    spec = d["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    # The HPA (minReplicas >= 2, asserted below) owns the count: a spec.replicas would reset
    # its choice on every `kubectl apply`.
    check("replicas" not in spec, f"{name}: no spec.replicas, the HPA sets the count ({spec.get('replicas', 'unset')})")
    pod_sc = pod.get("securityContext") or {}
    check(pod_sc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    check((pod_sc.get("runAsUser") or 0) != 0, f"{name}: pod runs as a non-zero uid")
    check((pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{name}: pod seccomp RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token mounted")
    check(not pod.get("hostNetwork") and not pod.get("hostPID"), f"{name}: no host namespaces")
    # Service-link variables ({PREFIX}SERVICE_HOST, {PREFIX}PORT, ...) share the config
    # prefix and would be rejected as unknown config keys.
    check(pod.get("enableServiceLinks") is False, f"{name}: enableServiceLinks false (no {prefix}* link variables)")
    containers = pod.get("containers") or []
    inits = pod.get("initContainers") or []
    for c in containers + inits:
        problems = container_sc_ok(c, pod_sc)
        check(not problems, f"{name}: container {c['name']} hardened and sized" + (f" ({'; '.join(problems)})" if problems else ""))
    main = next((c for c in containers if c["name"] == name), None)
    if main is None:
        fail(f"{name}: container {name} present")
        return
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = main.get(probe) or {}
        check("grpc" in p and isinstance(p["grpc"].get("port"), int), f"{name}: native gRPC {probe}")
    # Liveness must not follow the database (service_kit::server::LIVENESS): a database
    # outage would otherwise restart every replica.
    liveness = ((main.get("livenessProbe") or {}).get("grpc") or {}).get("service")
    check(liveness == "liveness", f"{name}: livenessProbe asks for the 'liveness' health name, not the whole server")
    sleep = ((main.get("lifecycle") or {}).get("preStop") or {})
    pre_stop_s = (sleep.get("sleep") or {}).get("seconds", 0)
    check(bool(sleep), f"{name}: preStop pause ({pre_stop_s}s)")
    cfg = config_toml(docs, d)
    drain_ms = (cfg.get("server") or {}).get("drain_timeout_ms", DEFAULT_DRAIN_MS)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    relay_stop_s = 0.0
    if name == "civil-registry":
        call_ms = (cfg.get("population_registry") or {}).get("call_timeout_ms", DEFAULT_CALL_TIMEOUT_MS)
        relay_stop_s = call_ms / 1000 + 1
    budget = pre_stop_s + drain_ms / 1000 + relay_stop_s + TELEMETRY_FLUSH_S
    check(
        grace > budget,
        f"{name}: terminationGracePeriodSeconds {grace} > preStop {pre_stop_s}s + drain_timeout "
        f"{drain_ms / 1000:g}s + relay stop {relay_stop_s:g}s + telemetry flush {TELEMETRY_FLUSH_S}s",
    )
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []
    check(
        any(t.get("topologyKey") == "kubernetes.io/hostname" and selector_matches(t.get("labelSelector"), labels) for t in anti),
        f"{name}: required pod anti-affinity across nodes",
    )
    check(any((c.get("args") or [None])[0] == "migrate" for c in inits), f"{name}: init container runs `{name} migrate`")
    for c in [main] + [c for c in inits if (c.get("args") or [None])[0] == "migrate"]:
        env = {e["name"]: e for e in c.get("env") or []}
        db_env = env.get(f"{prefix}DATABASE__URL") or {}
        ref = (db_env.get("valueFrom") or {}).get("secretKeyRef") or {}
        check(ref.get("name") == f"{db}-app", f"{name}: {c['name']} reads {prefix}DATABASE__URL from Secret {db}-app")
        check_database_tls(name, c, pod, db)
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    check("secret" in (vols.get("tls") or {}), f"{name}: TLS material mounted from a Secret")
    check(bool(cfg), f"{name}: config file mounted from a ConfigMap with config.toml")
    # Every command starts telemetry: each container that reads the config needs the
    # collector's CA; the serving one needs every file.
    telemetry_files = files_named({"telemetry": cfg.get("telemetry") or {}})
    check_files_mounted(name, main, files_named(cfg))
    for c in inits:
        check_files_mounted(name, c, telemetry_files)
    telemetry = cfg.get("telemetry") or {}
    endpoint = telemetry.get("otlp_endpoint") or ""
    check(
        not endpoint
        or (endpoint.startswith("https://") and bool((telemetry.get("otlp_tls") or {}).get("ca_file"))),
        f"{name}: traces go to the collector over TLS with a CA to verify it ({endpoint or 'no export'})",
    )
    ann = spec["template"]["metadata"].get("annotations") or {}
    check(ann.get("prometheus.io/scrape") == "true", f"{name}: Prometheus scrape annotations")

    svc = find(docs, "Service", ns, name)
    check(svc is not None and any(p.get("port") == GRPC_PORT for p in svc["spec"]["ports"]), f"{name}: Service with the gRPC port")
    pdbs = [p for p in by_kind(docs, "PodDisruptionBudget") if p["metadata"].get("namespace") == ns and selector_matches(p["spec"].get("selector"), labels)]
    check(bool(pdbs), f"{name}: PodDisruptionBudget selects its pods")
    for p in pdbs:
        check(p["spec"].get("maxUnavailable", 0) != 0 or p["spec"].get("minAvailable", 0) != 0, f"{name}: PDB {p['metadata']['name']} bounds disruption")
    hpas = [h for h in by_kind(docs, "HorizontalPodAutoscaler") if h["metadata"].get("namespace") == ns and h["spec"]["scaleTargetRef"].get("name") == name]
    check(bool(hpas) and all(h["spec"].get("minReplicas", 1) >= 2 for h in hpas), f"{name}: HorizontalPodAutoscaler with minReplicas >= 2")
    cluster = find(docs, "Cluster", ns, db)
    check(cluster is not None and cluster["spec"].get("instances", 0) >= 1, f"{name}: CloudNativePG Cluster {db}")
    check(
        cluster is not None and any(p.get("isWALArchiver") for p in cluster["spec"].get("plugins") or []),
        f"{name}: {db} archives WAL / backs up to object storage",
    )
    check(
        any(b["spec"]["cluster"]["name"] == db for b in by_kind(docs, "ScheduledBackup") if b["metadata"].get("namespace") == ns),
        f"{name}: ScheduledBackup for {db}",
    )
    hba = (((cluster or {}).get("spec") or {}).get("postgresql") or {}).get("pg_hba") or []
    check(
        any(rule.split() == ["hostnossl", "all", "all", "all", "reject"] for rule in hba),
        f"{name}: {db} refuses clients without TLS",
    )
    # The database's CA comes from CloudNativePG and the telemetry CA's certificate is
    # created out of band; every other Secret comes from cert-manager.
    secrets_mounted = [
        v["secret"]["secretName"]
        for v in pod.get("volumes") or []
        if "secret" in v and v["secret"]["secretName"] not in (f"{db}-ca", "telemetry-ca")
    ]
    certs = {c["spec"]["secretName"] for c in by_kind(docs, "Certificate") if c["metadata"].get("namespace") == ns}
    check(bool(secrets_mounted) and all(s in certs for s in secrets_mounted), f"{name}: every mounted TLS Secret is issued by a cert-manager Certificate")


def check_audit_job(docs: list[dict], name: str, ns: str, prefix: str, db: str) -> None:
    """The daily `audit verify` CronJob: hardened, reading the service's own database, failing
    at once on a broken chain, and never selected as one of the service's serving pods."""
    job = find(docs, "CronJob", ns, f"{name}-audit-verify")
    if job is None:
        fail(f"{name}: CronJob {ns}/{name}-audit-verify present")
        return
    ok(f"{name}: daily audit check CronJob present")
    spec = job["spec"]
    check(spec.get("concurrencyPolicy") == "Forbid", f"{name}: audit checks never overlap")
    job_spec = spec["jobTemplate"]["spec"]
    pod = job_spec["template"]["spec"]
    labels = job_spec["template"]["metadata"].get("labels") or {}
    pod_sc = pod.get("securityContext") or {}
    check(pod.get("automountServiceAccountToken") is False, f"{name}: audit check mounts no service account token")
    check(pod.get("enableServiceLinks") is False, f"{name}: audit check has no {prefix}* link variables")
    containers = pod.get("containers") or []
    for c in containers:
        problems = container_sc_ok(c, pod_sc)
        check(not problems, f"{name}: audit container {c['name']} hardened and sized" + (f" ({'; '.join(problems)})" if problems else ""))
    main = next((c for c in containers if c.get("args") == ["audit", "verify"]), None)
    check(main is not None, f"{name}: audit check runs `{name} audit verify`")
    if main is not None:
        env = {e["name"]: e for e in main.get("env") or []}
        ref = ((env.get(f"{prefix}DATABASE__URL") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        check(ref.get("name") == f"{db}-app", f"{name}: audit check reads {prefix}DATABASE__URL from Secret {db}-app")
        check_database_tls(name, main, pod, db)
        service = find(docs, "Deployment", ns, name)
        cfg = config_toml(docs, service) if service else {}
        check_files_mounted(name, main, files_named({"telemetry": cfg.get("telemetry") or {}}))
        rules = (job_spec.get("podFailurePolicy") or {}).get("rules") or []
        check(
            pod.get("restartPolicy") == "Never"
            and any(
                r.get("action") == "FailJob"
                and (r.get("onExitCodes") or {}).get("containerName") == main["name"]
                and (r.get("onExitCodes") or {}).get("operator") == "In"
                and EXIT_AUDIT_BROKEN in (r.get("onExitCodes") or {}).get("values", [])
                for r in rules
            ),
            f"{name}: a broken chain (exit {EXIT_AUDIT_BROKEN}) fails the audit Job without retries",
        )
    serving = [find(docs, "Service", ns, name), find(docs, "Deployment", ns, name)]
    selectors = [(svc or {}).get("spec", {}).get("selector") for svc in serving[:1]]
    selectors += [((d or {}).get("spec", {}).get("selector")) for d in serving[1:]]
    selectors += [p["spec"].get("selector") for p in by_kind(docs, "PodDisruptionBudget") if p["metadata"].get("namespace") == ns]
    as_label_selector = [sel if "matchLabels" in (sel or {}) or "matchExpressions" in (sel or {}) else {"matchLabels": sel} for sel in selectors if sel]
    check(
        not any(selector_matches(sel, labels) for sel in as_label_selector),
        f"{name}: the audit check's pods are selected by no Service, Deployment or PDB of the service",
    )


def exported_metric_names() -> set[str]:
    """Metric names that appear as string literals in the services' and crates' Rust code."""
    names: set[str] = set()
    for path in list((REPO / "services").rglob("*.rs")) + list((REPO / "crates").rglob("*.rs")):
        names.update(re.findall(rf'"((?:{OWN_METRIC_PREFIXES})_[a-z0-9_]+)"', path.read_text()))
    return names


def check_alert_rules(docs: list[dict]) -> None:
    """Every PrometheusRule alert parses as PromQL, has a severity, a summary and a runbook,
    and reads only metrics the services export (a renamed metric would silence its alert)."""
    rules = by_kind(docs, "PrometheusRule")
    if not rules:
        return
    import promql_parser  # installed by check.sh; only the alert rules need it

    exported = exported_metric_names()
    for doc in rules:
        for group in doc["spec"].get("groups") or []:
            for rule in group.get("rules") or []:
                alert = rule.get("alert")
                if not alert:
                    continue
                labels, notes = rule.get("labels") or {}, rule.get("annotations") or {}
                check(labels.get("severity") in ("page", "ticket"), f"alert {alert}: severity page or ticket")
                check(bool(notes.get("summary")) and bool(notes.get("runbook")), f"alert {alert}: summary and runbook")
                expr = str(rule.get("expr", ""))
                try:
                    promql_parser.parse(expr)
                    ok(f"alert {alert}: expression parses")
                except ValueError as e:
                    fail(f"alert {alert}: expression does not parse: {e}")
                used = set(OWN_METRIC.findall(expr))
                missing = sorted(
                    m for m in used
                    if m not in exported and not any(m.endswith(x) and m[: -len(x)] in exported for x in SERIES_SUFFIXES)
                )
                check(not missing, f"alert {alert}: reads metrics the services export" + (f" (unknown: {', '.join(missing)})" if missing else ""))


def check_identity_issuers(docs: list[dict]) -> None:
    """mTLS identities come from an Issuer in the certificate's own namespace: the population
    registry admits minting callers by their certificate's identity, so a cluster-wide issuer
    of that CA would let any namespace obtain the civil registry's."""
    for cert in by_kind(docs, "Certificate"):
        ref = cert["spec"].get("issuerRef") or {}
        if ref.get("name") != "interministry-ca":
            continue
        ns = cert["metadata"].get("namespace")
        check(
            ref.get("kind") == "Issuer" and find(docs, "Issuer", ns, "interministry-ca") is not None,
            f"{ident(cert)}: issued by the Issuer of its own namespace {ns}",
        )
    check(
        not any(d["metadata"]["name"] == "interministry-ca" for d in by_kind(docs, "ClusterIssuer")),
        "no cluster-wide issuer of the inter-ministry CA",
    )


def cmd_policy(path: str, production: bool) -> int:
    docs = load(path)
    names = {d["metadata"]["name"] for d in by_kind(docs, "Namespace")}
    for ns in ("mps-population", "moj-civilstatus"):
        check(ns in names, f"namespace {ns}")
    check(not by_kind(docs, "Secret"), "no Secret objects committed (all are referenced only)")
    for name, (ns, prefix, db) in SERVICES.items():
        check_service(docs, name, ns, prefix, db)
        check_audit_job(docs, name, ns, prefix, db)
    check_alert_rules(docs)
    check_identity_issuers(docs)
    if production:
        for name, (ns, _prefix, db) in SERVICES.items():
            cluster = find(docs, "Cluster", ns, db)
            check(cluster is not None and cluster["spec"].get("instances") == 3, f"{name}: {db} has 3 instances")
    check_flows(docs)
    for doc in by_kind(docs, "ConfigMap"):
        for key, text in (doc.get("data") or {}).items():
            try:
                if key.endswith(".toml"):
                    tomllib.loads(text)
                elif key.endswith((".yaml", ".yml")):
                    yaml.safe_load(text)
            except Exception as e:  # noqa: BLE001 - any parse error is the finding
                fail(f"{ident(doc)}: {key} does not parse: {e}")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in ("core", "crds", "policy"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "core":
        return cmd_core(argv[2])
    if argv[1] == "crds":
        return cmd_crds(argv[2])
    return cmd_policy(argv[2], production="--production" in argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
