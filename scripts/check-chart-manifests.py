#!/usr/bin/env python3
"""Semantic checks of manifests rendered from charts/popbridge, for scripts/check-chart.sh.

  check-chart-manifests.py render RENDERED.yaml CORE_OUT.yaml KIND,KIND,... VALUES.yaml [MORE.yaml...]
      Checks what the chart promises (one replica, Recreate, mounts, probes, security context,
      config checksum, Secret, PVC, monitoring objects, alert expressions) and writes the core
      Kubernetes objects to CORE_OUT.yaml for kubernetes-validate. The monitoring.coreos.com
      objects (ServiceMonitor, PrometheusRule) are CRDs kubernetes-validate has no schema for:
      they are checked here instead (structure, selectors, PromQL parsed, metric names known).
  check-chart-manifests.py dashboard DASHBOARD.json
      Checks the Grafana dashboard: every panel query and template variable parses as PromQL
      (Grafana's variables substituted) and names only metrics popbridge exports.
  check-chart-manifests.py notes NOTES.txt
      Checks the rendered NOTES mention readiness, dead letters and metrics.
  check-chart-manifests.py consistency ROOT
      Checks the Dockerfile and the systemd unit agree with the chart (uid, port, paths).

Needs PyYAML and promql_parser (installed by check-chart.sh). Exits 1 with every failure listed.
"""

import hashlib
import json
import re
import sys

import yaml

ERRORS = []

# The metric names popbridge exports: exactly the names registered in src/metrics.rs (the
# `consistency` command checks the two agree). Histograms also export _bucket/_sum/_count series.
KNOWN_METRICS = {
    "popbridge_messages_fetched_total",
    "popbridge_fetched_bytes_total",
    "popbridge_deliveries_total",
    "popbridge_delivery_duration_seconds",
    "popbridge_poll_duration_seconds",
    "popbridge_poll_errors_total",
    "popbridge_pending_deliveries",
    "popbridge_dead_letters",
    "popbridge_last_successful_poll_timestamp_seconds",
    "popbridge_messages_on_server",
    "popbridge_tls_certificate_expiry_timestamp_seconds",
    "popbridge_retrieval_dead_letters_total",
    "popbridge_pop3_downconverted_total",
    "popbridge_uidl_reused_total",
    "popbridge_sessions_without_quit_total",
    "popbridge_poll_backoff_seconds",
    "popbridge_poll_panics_total",
    "popbridge_fenced_writes_total",
    "popbridge_leases_held",
    "popbridge_lease_events_total",
    "popbridge_oauth2_refreshes_total",
    "popbridge_oauth2_access_token_expiry_timestamp_seconds",
    "popbridge_oauth2_relogin_needed",
    "popbridge_sasl_logins_total",
    "popbridge_sink_paused_until_timestamp_seconds",
    "popbridge_server_downloaded_bytes_today",
    "popbridge_server_download_paused_until_timestamp_seconds",
    "popbridge_build_info",
}
HISTOGRAMS = {"popbridge_delivery_duration_seconds", "popbridge_poll_duration_seconds"}
UID = 10001
PORT = 9898
CONFIG_PATH = "/etc/popbridge/config.yaml"
STATE_DIR = "/var/lib/popbridge"
PG_SECRET_DIR = "/run/secrets/popbridge-postgres"
PG_PASSWORD_FILE = PG_SECRET_DIR + "/password"


def is_postgres(values):
    return values.get("stateBackend", "sqlite") == "postgres"


def check(cond, msg):
    if not cond:
        ERRORS.append(msg)
    return cond


def finish(what):
    if ERRORS:
        for e in ERRORS:
            print(f"FAIL {what}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"ok   {what}")


def one(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    return found[0] if len(found) == 1 else None


def container_of(dep):
    return dep["spec"]["template"]["spec"]["containers"][0]


def check_deployment(dep, docs, values):
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pg = is_postgres(values)
    check(spec.get("replicas") == values.get("replicaCount", 1), f"replicas is {spec.get('replicas')}")
    if pg:
        # Several replicas share the PostgreSQL state; a rolling update replaces them one by one.
        check(spec.get("strategy", {}).get("type") == "RollingUpdate",
              f"strategy is {spec.get('strategy')}, not RollingUpdate")
        check(spec.get("strategy", {}).get("rollingUpdate") == values["postgres"]["rollingUpdate"],
              "strategy.rollingUpdate is not postgres.rollingUpdate")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        state = values["config"]["state"]
        timeout = duration_seconds(state.get("timeout", "10s"))
        check(grace >= 30 and grace > 2 * timeout,
              f"terminationGracePeriodSeconds {grace}: too short to finish a poll and release the leases")
    else:
        check(spec.get("replicas") in (0, 1), "more than one replica")
        check(spec.get("strategy") == {"type": "Recreate"}, f"strategy is {spec.get('strategy')}, not Recreate")
    sel = spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in sel.items()), "pod labels do not match the selector")

    check(len(pod["containers"]) == 1, "expected one container")
    c = container_of(dep)
    args = c.get("args", [])
    check(args[:3] == ["run", "-c", CONFIG_PATH], f"args start {args[:3]}")
    check("--log-format" in args, "no --log-format")
    check(not c.get("command"), "command overrides the image's ENTRYPOINT")

    ports = {p["name"]: p for p in c.get("ports", [])}
    check("http" in ports and ports["http"]["containerPort"] == PORT, f"no container port http/{PORT}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") in ("http", PORT), f"{probe} is not GET {path} on http")

    # Security context: pod level and container level.
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "pod runAsNonRoot")
    for k in ("runAsUser", "runAsGroup", "fsGroup"):
        check(psc.get(k) == UID, f"pod {k} is {psc.get(k)}, not {UID}")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    check(csc.get("runAsNonRoot") is True, "container runAsNonRoot")
    check(csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "container seccompProfile")
    check(pod.get("automountServiceAccountToken") is False, "service account token mounted")
    res = c.get("resources", {})
    check("requests" in res and "memory" in res.get("limits", {}), "resources: requests and a memory limit")

    # Volumes and mounts.
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    cm = one(docs, "ConfigMap")
    for path in ("/etc/popbridge", STATE_DIR, "/tmp"):
        check(path in mounts, f"nothing mounted at {path}")
    if "/etc/popbridge" in mounts:
        v = vols.get(mounts["/etc/popbridge"]["name"], {})
        check(mounts["/etc/popbridge"].get("readOnly") is True, "config mount not read-only")
        check(cm is not None and v.get("configMap", {}).get("name") == cm["metadata"]["name"],
              "/etc/popbridge is not the chart's ConfigMap")
    if "/tmp" in mounts:
        check("emptyDir" in vols.get(mounts["/tmp"]["name"], {}), "/tmp is not an emptyDir")
    if STATE_DIR in mounts:
        v = vols.get(mounts[STATE_DIR]["name"], {})
        p = values["persistence"]
        if pg:
            check(v.get("emptyDir") == {"sizeLimit": values["postgres"]["spoolSizeLimit"]},
                  f"{STATE_DIR} should be an emptyDir of postgres.spoolSizeLimit in postgres mode, is {v}")
        elif not p["enabled"]:
            check("emptyDir" in v, f"{STATE_DIR} should be an emptyDir with persistence disabled")
        elif p.get("existingClaim"):
            check(v.get("persistentVolumeClaim", {}).get("claimName") == p["existingClaim"],
                  f"{STATE_DIR} is not the existing claim {p['existingClaim']}")
        else:
            pvc = one(docs, "PersistentVolumeClaim")
            check(pvc is not None and v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"],
                  f"{STATE_DIR} is not the chart's PVC")

    # Credentials: the existing Secret, as environment variables.
    env_from = c.get("envFrom", [])
    if values.get("existingSecret"):
        check(env_from == [{"secretRef": {"name": values["existingSecret"]}}], f"envFrom is {env_from}")
    else:
        check(not env_from, "envFrom without existingSecret")

    # PostgreSQL: the password from postgres.existingSecret, as a file and as PG_PASSWORD.
    env = {e["name"]: e for e in c.get("env") or []}
    if pg:
        secret, key = values["postgres"]["existingSecret"], values["postgres"]["passwordKey"]
        check(bool(secret), "postgres mode without postgres.existingSecret")
        want = {"secretKeyRef": {"name": secret, "key": key}}
        check(env.get("PG_PASSWORD", {}).get("valueFrom") == want, f"PG_PASSWORD is not {want}")
        m = mounts.get(PG_SECRET_DIR)
        if check(m is not None, f"nothing mounted at {PG_SECRET_DIR}"):
            check(m.get("readOnly") is True, f"{PG_SECRET_DIR} is not read-only")
            sv = vols.get(m["name"], {}).get("secret", {})
            check(sv.get("secretName") == secret and sv.get("items") == [{"key": key, "path": "password"}],
                  f"{PG_SECRET_DIR} is not key {key} of Secret {secret}: {sv}")
        check(one(docs, "PersistentVolumeClaim") is None, "a PersistentVolumeClaim in postgres mode")
        check(not any("persistentVolumeClaim" in v for v in pod.get("volumes", [])), "a claim mounted in postgres mode")
    else:
        check("PG_PASSWORD" not in env and PG_SECRET_DIR not in mounts, "PostgreSQL secret wiring in sqlite mode")
    tsc = values.get("topologySpreadConstraints") or []
    check((pod.get("topologySpreadConstraints") or []) == tsc, "topologySpreadConstraints")

    # The checksum annotation is the hash of exactly the config file in the ConfigMap.
    ann = spec["template"]["metadata"].get("annotations") or {}
    if check("checksum/config" in ann, "no checksum/config annotation") and cm is not None:
        text = cm["data"]["config.yaml"]
        digests = {hashlib.sha256(t.encode()).hexdigest() for t in (text, text.rstrip("\n"))}
        check(ann["checksum/config"] in digests, "checksum/config is not the hash of the ConfigMap's config.yaml")

    sa = one(docs, "ServiceAccount")
    if values["serviceAccount"]["create"]:
        check(sa is not None and pod.get("serviceAccountName") == sa["metadata"]["name"], "ServiceAccount not used")


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d)", str(text))
    check(bool(parts) and "".join(n + u for n, u in parts) == str(text), f"bad duration {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def check_config(cm, values):
    text = cm["data"]["config.yaml"]
    check("${" in text or not values["config"].get("mailboxes"), "mailboxes without ${VAR} secrets?")
    cfg = yaml.safe_load(text)
    check(cfg == values["config"], "config.yaml in the ConfigMap differs from .Values.config")
    state = cfg["state"]
    if is_postgres(values):
        url = str(state.get("url", ""))
        check(re.match(r"^postgres(ql)?://", url) is not None, f"state.url {url!r} is not a postgres:// URL")
        m = re.match(r"^postgres(ql)?://([^@/]*)@", url)
        userinfo = m.group(2) if m else ""
        check(":" not in userinfo or re.fullmatch(r"[^:]*:\$\{[A-Za-z_][A-Za-z0-9_]*\}", userinfo) is not None,
              "state.url: a literal password in the ConfigMap")
        check(state.get("password_file") == PG_PASSWORD_FILE or "${" in userinfo,
              f"state: the password is neither password_file {PG_PASSWORD_FILE} nor ${{VAR}} in the URL")
        spool = state.get("spool_dir") or (str(state["path"]).rsplit("/", 1)[0] + "/spool" if state.get("path") else "")
        check(spool.startswith(STATE_DIR + "/"), f"spool {spool!r} is not on the emptyDir at {STATE_DIR}")
    else:
        check("url" not in state and "password_file" not in state, "PostgreSQL settings in sqlite mode")
        check(str(state["path"]).startswith(STATE_DIR + "/"), f"state.path {state['path']} off the volume")
    check(str(cfg["http"]["listen"]).endswith(f":{PORT}"), f"http.listen {cfg['http']['listen']}")
    for sink in cfg.get("sinks") or []:
        if sink.get("type") == "maildir" and not is_postgres(values):
            check(str(sink.get("path", "")).startswith(STATE_DIR + "/"),
                  f"maildir sink {sink.get('name')} writes off the volume (read-only root filesystem)")
        elif sink.get("type") == "maildir":
            # /var/lib/popbridge is per-pod scratch in postgres mode: a Maildir needs a shared volume.
            mounts = [m["mountPath"].rstrip("/") + "/" for m in values.get("extraVolumeMounts") or []]
            check(any(str(sink.get("path", "")).startswith(mp) for mp in mounts),
                  f"maildir sink {sink.get('name')} is not on an extraVolumeMount (postgres mode)")
    for mb in cfg.get("mailboxes") or []:
        pw = (mb.get("pop3") or {}).get("password")
        if pw is not None:
            check(re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", str(pw)) is not None,
                  f"mailbox {mb.get('name')}: a literal password in the ConfigMap")


def check_pdb(pdb, dep, values):
    check(pdb["apiVersion"] == "policy/v1", f"PodDisruptionBudget apiVersion {pdb['apiVersion']}")
    spec = pdb["spec"]
    check(spec.get("selector", {}).get("matchLabels") == dep["spec"]["selector"]["matchLabels"],
          "PodDisruptionBudget selector != Deployment selector")
    want = values["postgres"]["podDisruptionBudget"]
    if str(want.get("minAvailable", "")) != "":
        check(spec.get("minAvailable") == want["minAvailable"] and "maxUnavailable" not in spec,
              f"PodDisruptionBudget {spec}: expected minAvailable {want['minAvailable']}")
        if isinstance(want["minAvailable"], int):
            check(want["minAvailable"] < values["replicaCount"] or values["replicaCount"] == 0,
                  "PodDisruptionBudget minAvailable >= replicaCount blocks every node drain")
    else:
        check(spec.get("maxUnavailable") == want["maxUnavailable"] and "minAvailable" not in spec,
              f"PodDisruptionBudget {spec}: expected maxUnavailable {want['maxUnavailable']}")


def check_service(svc, dep):
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    check("http" in ports and ports["http"].get("targetPort") in ("http", PORT), "Service has no port http")
    check(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], "Service selector != Deployment selector")


def check_servicemonitor(sm, svc):
    spec = sm["spec"]
    ml = spec["selector"]["matchLabels"]
    check(all(svc["metadata"]["labels"].get(k) == v for k, v in ml.items()), "ServiceMonitor selects no Service")
    check(spec["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]], "ServiceMonitor namespace")
    eps = spec["endpoints"]
    names = {p["name"] for p in svc["spec"]["ports"]}
    check(len(eps) == 1 and eps[0]["port"] in names and eps[0]["path"] == "/metrics", f"endpoints {eps}")


DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def promtool_check_rules(groups):
    """`promtool check rules` parses every expression and every annotation template the way
    Prometheus will. promtool comes with Debian's prometheus package (scripts/test.sh installs it);
    it may be missing only when CI is explicitly false."""
    import os
    import shutil
    import subprocess
    import tempfile

    if shutil.which("promtool") is None:
        check(os.environ.get("CI", "true") == "false", "promtool not found (Debian package prometheus)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
        f.flush()
        out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    check(out.returncode == 0, f"promtool check rules: {out.stdout}{out.stderr}")


def check_prometheusrule(pr, values):
    import promql_parser

    groups = pr["spec"]["groups"]
    check(len(groups) >= 1, "no rule group")
    alerts = []
    for g in groups:
        check(bool(g.get("name")), "group without a name")
        for r in g["rules"]:
            name = r.get("alert") or r.get("record")
            if not check(name and "expr" in r, f"rule without alert/record or expr: {r}"):
                continue
            alerts.append(name)
            expr = str(r["expr"])
            try:
                promql_parser.parse(expr)
            except Exception as e:  # the binding raises ValueError on a syntax error
                check(False, f"{name}: PromQL does not parse ({e}): {expr}")
            for m in re.findall(r"\bpopbridge_[a-z0-9_]+", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", m) if m.endswith(("_bucket", "_sum", "_count")) else m
                check(m in KNOWN_METRICS or (base in HISTOGRAMS and base != m),
                      f"{name}: unknown metric {m}")
            if "for" in r:
                check(DURATION.match(str(r["for"])) is not None, f"{name}: bad for: {r['for']}")
            if "alert" in r:
                check((r.get("labels") or {}).get("severity") in ("critical", "warning", "info"), f"{name}: severity")
                for k, v in (r.get("annotations") or {}).items():
                    check(str(v).count("{{") == str(v).count("}}"), f"{name}: unbalanced template in {k}")
                for k, v in values["prometheusRule"].get("alertLabels", {}).items():
                    if r in values["prometheusRule"].get("extraRules", []):
                        continue
                    check((r.get("labels") or {}).get(k) == v, f"{name}: alert label {k} missing")
    check(len(alerts) == len(set(alerts)), "duplicate alert names")
    promtool_check_rules(groups)
    for required in ("PopbridgePollStale", "PopbridgeDeadLetters", "PopbridgeDeadLettersGrowing",
                     "PopbridgeTLSCertificateExpiring", "PopbridgePollErrors", "PopbridgeAuthFailing",
                     "PopbridgePollPanicked"):
        check(required in alerts, f"alert {required} missing")
    lease_alerts = ("PopbridgeFencedWrites", "PopbridgeLeasesLost", "PopbridgeMailboxesUnowned")
    if is_postgres(values):
        expected = values["prometheusRule"].get("expectedMailboxes", 0) or len(values["config"].get("mailboxes") or [])
        for required in lease_alerts:
            if required == "PopbridgeMailboxesUnowned" and expected <= 0:
                check(required not in alerts, f"{required} without a number of mailboxes")
                continue
            check(required in alerts, f"alert {required} missing in postgres mode")
        rules = {r.get("alert"): r for g in groups for r in g["rules"]}
        if expected > 0 and "PopbridgeMailboxesUnowned" in rules:
            check(str(rules["PopbridgeMailboxesUnowned"]["expr"]).rstrip().endswith(f"< {expected}"),
                  f"PopbridgeMailboxesUnowned does not compare with {expected} mailboxes")
    else:
        for a in lease_alerts:
            check(a not in alerts, f"lease alert {a} in sqlite mode")


def merge(base, over):
    """Helm's coalescing of values files: maps merge, anything else replaces, null deletes."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def cmd_render(rendered, core_out, expect_kinds, values_files):
    values = {}
    for vf in values_files:
        with open(vf) as f:
            values = merge(values, yaml.safe_load(f) or {})
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = sorted(d["kind"] for d in docs)
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    gd = values.get("grafanaDashboard", {})
    check(len(dashboards) == (1 if gd.get("enabled") else 0), f"{len(dashboards)} dashboard ConfigMaps")
    for d in dashboards:
        lb = d["metadata"].get("labels", {})
        check(all(lb.get(k) == v for k, v in gd["labels"].items()), "dashboard ConfigMap lacks the sidecar labels")
        check(d["metadata"].get("namespace") == (gd.get("namespace") or d["metadata"]["namespace"]),
              "dashboard namespace")
        with open(DASHBOARD) as f:
            check(json.loads(d["data"]["popbridge.json"]) == json.load(f),
                  "the dashboard ConfigMap is not dashboards/popbridge.json")
    docs = [d for d in docs if d not in dashboards]
    check(kinds == sorted(expect_kinds), f"kinds {kinds}, expected {sorted(expect_kinds)}")
    for d in docs:
        md = d.get("metadata", {})
        check(bool(md.get("name")) and bool(md.get("namespace")), f"{d['kind']} without name/namespace")
        lb = md.get("labels", {})
        check(lb.get("app.kubernetes.io/name") and lb.get("app.kubernetes.io/instance"), f"{d['kind']} labels")
    dep, cm, svc = one(docs, "Deployment"), one(docs, "ConfigMap"), one(docs, "Service")
    if check(dep is not None and cm is not None and svc is not None, "Deployment, ConfigMap and Service expected"):
        check_deployment(dep, docs, values)
        check_config(cm, values)
        check_service(svc, dep)
    pdb = one(docs, "PodDisruptionBudget")
    if is_postgres(values) and values["postgres"]["podDisruptionBudget"]["enabled"]:
        if check(pdb is not None, "no PodDisruptionBudget in postgres mode") and dep is not None:
            check_pdb(pdb, dep, values)
    else:
        check(pdb is None, "a PodDisruptionBudget outside postgres mode (or disabled)")
    pvc = one(docs, "PersistentVolumeClaim")
    if pvc is not None:
        keep = pvc["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
        check(keep == values["persistence"]["keep"], "PVC resource-policy keep")
    sm = one(docs, "ServiceMonitor")
    if sm is not None and svc is not None:
        check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
        check_servicemonitor(sm, svc)
    pr = one(docs, "PrometheusRule")
    if pr is not None:
        check(pr["apiVersion"] == "monitoring.coreos.com/v1", "PrometheusRule apiVersion")
        check_prometheusrule(pr, values)
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    finish(f"manifests {rendered}: {', '.join(kinds)}")


DASHBOARD = __file__.rsplit("/", 2)[0] + "/charts/popbridge/dashboards/popbridge.json"
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def check_promql(where, expr):
    import promql_parser

    for k, v in GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    # Template variables ($namespace, ${mailbox}) stand inside label values: any string parses.
    expr = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "x", expr)
    try:
        promql_parser.parse(expr)
    except Exception as e:
        check(False, f"{where}: PromQL does not parse ({e}): {expr}")
    names = re.findall(r"\bpopbridge_[a-z0-9_]+", expr)
    check(bool(names), f"{where}: names no popbridge metric: {expr}")
    for m in names:
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        check(m in KNOWN_METRICS or (base in HISTOGRAMS and base != m), f"{where}: unknown metric {m}")


def cmd_dashboard(path):
    with open(path) as f:
        dash = json.load(f)
    check(dash.get("uid") and dash.get("title") and isinstance(dash.get("schemaVersion"), int), "uid/title/schemaVersion")
    panels = dash.get("panels") or []
    check(len(panels) >= 8, "too few panels")
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)), "duplicate panel ids")
    seen = set()
    for p in panels:
        targets = p.get("targets") or []
        check(bool(targets), f"panel {p.get('title')!r} has no query")
        check(p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p.get('title')!r}: datasource")
        for t in targets:
            check_promql(f"panel {p.get('title')!r} {t.get('refId')}", t["expr"])
            seen.update(re.findall(r"\bpopbridge_[a-z0-9_]+", t["expr"]))
    names = set()
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*([a-z_]+)\)", q)
        if check(m is not None, f"variable {v['name']}: not label_values(selector, label): {q}"):
            check_promql(f"variable {v['name']}", m.group(1))
        names.add(v["name"])
    check({"namespace", "job", "mailbox"} <= names, f"variables {sorted(names)}")
    base = {re.sub(r"_(bucket|sum|count)$", "", m) for m in seen}
    # Every exported metric appears on some panel.
    check(base >= KNOWN_METRICS, f"metrics on no panel: {sorted(KNOWN_METRICS - base)}")
    finish(f"dashboard {path}: {len(panels)} panels")


def cmd_notes(path):
    with open(path) as f:
        text = f.read()
    for needle in ("rollout status", "/readyz", "popbridge dlq list -c /etc/popbridge/config.yaml",
                   "/metrics", "kubectl", "exec"):
        check(needle in text, f"NOTES do not mention {needle!r}")
    check("{{" not in text and "<no value>" not in text, "NOTES contain unrendered template text")
    finish(f"NOTES {path}")


def cmd_consistency(root):
    # The known metric names are exactly those src/metrics.rs registers.
    with open(f"{root}/src/metrics.rs") as f:
        rs = f.read()
    build = rs[rs.index("fn build()"):]
    build = build[:build.index("\n}\n")]
    registered = set(re.findall(r'"(popbridge_[a-z0-9_]+)"', build))
    check(registered == KNOWN_METRICS,
          f"KNOWN_METRICS != src/metrics.rs: missing {sorted(registered - KNOWN_METRICS)}, "
          f"stale {sorted(KNOWN_METRICS - registered)}")
    hist = set(re.findall(r'histogram\(\s*"(popbridge_[a-z0-9_]+)"', build))
    check(hist == HISTOGRAMS, f"HISTOGRAMS != the histograms of src/metrics.rs: {sorted(hist)}")
    with open(f"{root}/Dockerfile") as f:
        df = f.read()
    lines = [ln.strip() for ln in df.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    check(len(froms) == 2 and froms[0].startswith("rust:1.95") and froms[1] == "debian:bookworm-slim",
          f"Dockerfile stages {froms}")
    check(f"USER {UID}:{UID}" in lines, f"Dockerfile: no USER {UID}:{UID}")
    check(f"--uid {UID}" in df and f"--gid {UID}" in df, f"Dockerfile: user not created with uid/gid {UID}")
    check(f"EXPOSE {PORT}" in lines, f"Dockerfile: no EXPOSE {PORT}")
    check(f"VOLUME {STATE_DIR}" in lines, f"Dockerfile: no VOLUME {STATE_DIR}")
    check('ENTRYPOINT ["popbridge"]' in lines, "Dockerfile: ENTRYPOINT")
    cmd = [ln for ln in lines if ln.startswith("CMD ")]
    check(len(cmd) == 1 and json.loads(cmd[0][4:]) == ["run", "-c", CONFIG_PATH, "--log-format", "json"],
          f"Dockerfile: CMD {cmd}")
    check("cargo build --release --locked" in df, "Dockerfile: cargo build --release --locked")
    with open(f"{root}/.dockerignore") as f:
        ign = f.read().split()
    check("target/" in ign and ".git" in ign, ".dockerignore must exclude target/ and .git")

    with open(f"{root}/charts/popbridge/values.yaml") as f:
        values = yaml.safe_load(f)
    for k in ("runAsUser", "runAsGroup", "fsGroup"):
        check(values["podSecurityContext"][k] == UID, f"values podSecurityContext.{k}")
    check(values["config"]["http"]["listen"].endswith(f":{PORT}"), "values config.http.listen")
    with open(f"{root}/charts/popbridge/Chart.yaml") as f:
        chart = yaml.safe_load(f)
    check(f'org.opencontainers.image.version="{chart["appVersion"]}"' in df, "Dockerfile version label != appVersion")

    with open(f"{root}/packaging/systemd/popbridge.service") as f:
        unit = f.read()
    ulines = [ln.strip() for ln in unit.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for want in (f"ExecStart=/usr/local/bin/popbridge run -c {CONFIG_PATH}", "StateDirectory=popbridge",
                 "EnvironmentFile=-/etc/popbridge/env", "Type=simple", "Restart=on-failure",
                 "KillSignal=SIGTERM", "TimeoutStopSec=60", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"):
        check(want in ulines, f"systemd unit: no {want!r}")
    finish("Dockerfile, systemd unit and chart agree")


def main(argv):
    if len(argv) >= 6 and argv[1] == "render":
        cmd_render(argv[2], argv[3], [k for k in argv[4].split(",") if k], argv[5:])
    elif len(argv) == 3 and argv[1] == "dashboard":
        cmd_dashboard(argv[2])
    elif len(argv) == 3 and argv[1] == "notes":
        cmd_notes(argv[2])
    elif len(argv) == 3 and argv[1] == "consistency":
        cmd_consistency(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
