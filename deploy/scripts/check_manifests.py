"""Validates rendered Kubernetes manifests (a multi-document YAML file per overlay).

Built-in kinds are validated strictly (unknown fields refused) against the Kubernetes OpenAPI
schemas that the PyPI package kubernetes-validate ships. That package has no schemas for custom
resources, so for those this script checks what can be checked without a cluster:

- KEDA ScaledJob: its jobTargetRef is a batch/v1 JobSpec, validated strictly as a Job;
- KEDA ScaledObject: its scaleTargetRef names a Deployment in the same render, and its triggers
  use the rabbitmq scaler over the http protocol (the AMQP mode scales pods down mid-job);
- KEDA TriggerAuthentication and every secretKeyRef: the Secret and key are the ones documented
  (reelforge-amqp: amqp-url, management-url), generated in the render when the overlay makes it;
- ServiceMonitor: its selector matches a Service in the render that has the endpoint's port name;
- worker pods: terminationGracePeriodSeconds equals REELFORGE_GRACE_S + 60, and their probes hit
  /healthz and /readyz.

Usage: python check_manifests.py KUBERNETES_VERSION RENDERED.yaml...
Exits 1 with one line per problem.
"""

import sys

import kubernetes_validate
import yaml

SECRET = "reelforge-amqp"
SECRET_KEYS = {"amqp-url", "management-url"}
GRACE_MARGIN_S = 60


def pod_specs(objects):
    """(where, pod spec, pod labels) of every pod template in the render."""
    for o in objects:
        kind, name, spec = o["kind"], o["metadata"]["name"], o.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            t = spec["template"]
            yield f"{kind}/{name}", t["spec"], t.get("metadata", {}).get("labels", {})
        elif kind == "ScaledJob":
            t = spec["jobTargetRef"]["template"]
            yield f"{kind}/{name}", t["spec"], t.get("metadata", {}).get("labels", {})


def check(version, objects):
    problems = []
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
        where = f"{o['kind']}/{o['metadata']['name']}"
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if o["apiVersion"].split("/")[0] not in ("keda.sh", "monitoring.coreos.com"):
                problems.append(f"{where}: no schema for {o['apiVersion']} (a typo in apiVersion or kind?)")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{where}: {path}: {e.message}")

    names = lambda kind: {o["metadata"]["name"]: o for o in by_kind.get(kind, [])}
    for sj in by_kind.get("ScaledJob", []):
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": sj["metadata"]["name"]},
            "spec": sj["spec"]["jobTargetRef"],
        }
        try:
            kubernetes_validate.validate(job, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"ScaledJob/{sj['metadata']['name']}: jobTargetRef.{path}: {e.message}")
    deployments = names("Deployment")
    auths = names("TriggerAuthentication")
    for so in by_kind.get("ScaledObject", []) + by_kind.get("ScaledJob", []):
        where = f"{so['kind']}/{so['metadata']['name']}"
        ref = so["spec"].get("scaleTargetRef")
        if so["kind"] == "ScaledObject" and (ref is None or ref.get("name") not in deployments):
            problems.append(f"{where}: scaleTargetRef {ref} is no Deployment of this render")
        for t in so["spec"].get("triggers", []):
            md = t.get("metadata", {})
            if t.get("type") != "rabbitmq" or md.get("protocol") != "http":
                problems.append(f"{where}: trigger must be rabbitmq over protocol http, got {t.get('type')}/{md.get('protocol')}")
            auth = t.get("authenticationRef", {}).get("name")
            if auth not in auths:
                problems.append(f"{where}: authenticationRef {auth} is no TriggerAuthentication of this render")
    for ta in by_kind.get("TriggerAuthentication", []):
        for ref in ta["spec"].get("secretTargetRef", []):
            if ref["name"] != SECRET or ref["key"] not in SECRET_KEYS:
                problems.append(f"TriggerAuthentication/{ta['metadata']['name']}: unknown secret key {ref['name']}/{ref['key']}")
    for secret in by_kind.get("Secret", []):
        if secret["metadata"]["name"] == SECRET:
            missing = SECRET_KEYS - set(secret.get("data", {})) - set(secret.get("stringData", {}))
            if missing:
                problems.append(f"Secret/{SECRET}: missing keys {sorted(missing)}")

    services = by_kind.get("Service", [])
    for sm in by_kind.get("ServiceMonitor", []):
        where = f"ServiceMonitor/{sm['metadata']['name']}"
        want = sm["spec"]["selector"].get("matchLabels", {})
        matching = [s for s in services if want.items() <= s["metadata"].get("labels", {}).items()]
        if not matching:
            problems.append(f"{where}: selector {want} matches no Service")
        for ep in sm["spec"].get("endpoints", []):
            if not any(ep.get("port") in {p.get("name") for p in s["spec"]["ports"]} for s in matching):
                problems.append(f"{where}: no matching Service has a port named {ep.get('port')}")

    config = {}
    for cm in by_kind.get("ConfigMap", []):
        config.update(cm.get("data", {}))
    for where, spec, labels in pod_specs(objects):
        for c in spec.get("containers", []):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and (ref["name"] != SECRET or ref["key"] not in SECRET_KEYS):
                    problems.append(f"{where}: env {env['name']} reads unknown secret key {ref['name']}/{ref['key']}")
            if "worker" not in c.get("args", [])[:1]:
                continue
            grace = int(config.get("REELFORGE_GRACE_S", 30))
            if spec.get("terminationGracePeriodSeconds") != grace + GRACE_MARGIN_S:
                problems.append(
                    f"{where}: terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds')} "
                    f"!= REELFORGE_GRACE_S ({grace}) + {GRACE_MARGIN_S}"
                )
            probes = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
            if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
                problems.append(f"{where}: probes {probes} (want /healthz and /readyz)")
            gpu = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            if not gpu:
                problems.append(f"{where}: worker requests no nvidia.com/gpu")
            if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
                problems.append(f"{where}: worker does not tolerate the nvidia.com/gpu taint")
    return problems


def main():
    version, files = sys.argv[1], sys.argv[2:]
    failed = False
    for f in files:
        with open(f) as fh:
            objects = [o for o in yaml.safe_load_all(fh) if o]
        problems = check(version, objects)
        for p in problems:
            print(f"{f}: {p}")
        failed |= bool(problems)
        kinds = sorted({o["kind"] for o in objects})
        print(f"{f}: {len(objects)} objects ({', '.join(kinds)}): {'FAILED' if problems else 'ok'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
