"""Deployment files: the Helm chart, Kustomize manifests, docker-compose stack, Prometheus rules,
Grafana dashboard, Dockerfile and the tool installer.

The Helm, kubectl, kubernetes-validate, hadolint, promtool and CRD-validator (node) checks use
what ``scripts/install_deploy_tools.sh`` puts under ``.tools/``; each is skipped (with the reason)
when its tool is missing. The static checks of the files always run.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the deployment manifests")

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
KUBECTL = TOOLS / "bin" / "kubectl"
KUBERNETES_VALIDATE = TOOLS / "venv" / "bin" / "kubernetes-validate"
HADOLINT = TOOLS / "venv" / "bin" / "hadolint"
NPM_DIR = TOOLS / "npm"
CHART = ROOT / "helm" / "synthgen"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts.test.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "synthgen.json"
KUSTOMIZE = DEPLOY / "kustomize"
INSTALL_SCRIPT = ROOT / "scripts" / "install_deploy_tools.sh"
SMOKE_SCRIPT = ROOT / "scripts" / "image_smoke_test.sh"

WORKER_HEALTH = ["synthgen", "health", "--worker"]
GPU = "nvidia.com/gpu"
EXTERNAL_URL = "redis://x:6379/0"
STREAMS = ["synthgen:stream:interactive", "synthgen:stream:bulk"]
CONSUMER_GROUP = "synthgen:workers"
JOBS = {"api": "synthgen-api", "worker": "synthgen-worker"}

# The service's Prometheus metrics (name -> type); the GPU ones only on hosts with NVML.
METRICS = {
    "synthgen_http_requests_total": "counter",
    "synthgen_http_request_seconds": "histogram",
    "synthgen_jobs_created_total": "counter",
    "synthgen_jobs_finished_total": "counter",
    "synthgen_queue_lag": "gauge",
    "synthgen_queue_pending": "gauge",
    "synthgen_batch_size": "histogram",
    "synthgen_batch_fill_ratio": "histogram",
    "synthgen_inference_seconds": "histogram",
    "synthgen_encode_seconds": "histogram",
    "synthgen_images_generated_total": "counter",
    "synthgen_chunks_total": "counter",
    "synthgen_redeliveries_total": "counter",
    "synthgen_result_bytes_total": "counter",
    "synthgen_worker_inflight": "gauge",
    "synthgen_gpu_utilization_ratio": "gauge",
    "synthgen_gpu_memory_used_bytes": "gauge",
}
GPU_METRICS = {"synthgen_gpu_utilization_ratio", "synthgen_gpu_memory_used_bytes"}

# Metadata keys the KEDA scalers accept (keda.sh/docs/2.16/scalers/redis-streams, .../prometheus).
REDIS_STREAMS_METADATA = {
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "stream", "consumerGroup",
    "pendingEntriesCount", "streamLength", "lagCount", "activationLagCount", "databaseIndex", "enableTLS",
    "unsafeSsl", "username", "usernameFromEnv", "password", "passwordFromEnv",
}  # fmt: skip
PROMETHEUS_METADATA = {
    "serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
    "ignoreNullValues", "unsafeSsl", "queryParameters",
}  # fmt: skip
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
    "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
# API groups of custom resources: validated against their CRD schemas, not by kubernetes-validate.
CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/")

INSTALL_HINT = "run scripts/install_deploy_tools.sh"


def _runnable(path: Path | str | None) -> bool:
    return path is not None and Path(path).is_file() and os.access(path, os.X_OK)


def _works(path: Path, *args: str) -> bool:
    if not _runnable(path):
        return False
    try:
        return subprocess.run([str(path), *args], capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:  # e.g. a binary for another architecture
        return False


def _promtool() -> Path | None:
    for candidate in (TOOLS / "bin" / "promtool", shutil.which("promtool")):
        if candidate and _works(Path(candidate), "--version"):
            return Path(candidate)
    return None


PROMTOOL = _promtool()
NODE = shutil.which("node")

requires_helm = pytest.mark.skipif(not _works(HELM, "version", "--short"), reason=f"no runnable helm at {HELM}: {INSTALL_HINT}")
requires_kubectl = pytest.mark.skipif(
    not _works(KUBECTL, "version", "--client"), reason=f"no runnable kubectl at {KUBECTL}: {INSTALL_HINT}"
)
requires_kubernetes_validate = pytest.mark.skipif(
    not _runnable(KUBERNETES_VALIDATE), reason=f"kubernetes-validate not found at {KUBERNETES_VALIDATE}: {INSTALL_HINT}"
)
requires_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason=f"promtool (Debian package prometheus) not in .tools/bin nor on PATH: {INSTALL_HINT}"
)
requires_crd_validators = pytest.mark.skipif(
    NODE is None or not (NPM_DIR / "node_modules" / "@kubernetes-models" / "keda").is_dir(),
    reason=f"node or the @kubernetes-models CRD validators in {NPM_DIR} are missing: {INSTALL_HINT}",
)

MONITORING = (
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.grafanaDashboard.enabled=true",
)

# Value sets the chart is rendered with (helm --set arguments).
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    "external-redis": ("--set", "redis.enabled=false", "--set", f"externalRedis.url={EXTERNAL_URL}"),
    "no-gpu": ("--set", "worker.gpu.count=0"),
    "external-redis-cluster": (
        "--set",
        "redis.enabled=false",
        "--set",
        f"externalRedis.url={EXTERNAL_URL}",
        "--set",
        "externalRedis.cluster=true",
        "--set",
        "externalRedis.shards=24",
    ),
    "secret-redis-cpu-ephemeral": (
        "--set",
        "redis.enabled=false",
        "--set",
        "externalRedis.existingSecret=synthgen-redis",
        "--set",
        "worker.gpu.count=0",
        "--set",
        "redis.persistence.enabled=false",
        "--set",
        "serviceAccount.create=false",
    ),
    "keda-monitoring": (
        "--set",
        "worker.keda.enabled=true",
        "--set",
        "worker.keda.redisStreams.passwordSecret.name=synthgen-redis-auth",
        *MONITORING,
    ),
    "keda-prometheus-external": (
        "--set",
        "redis.enabled=false",
        "--set",
        f"externalRedis.url={EXTERNAL_URL}",
        "--set",
        "worker.keda.enabled=true",
        "--set",
        "worker.keda.trigger=prometheus",
        "--set",
        "worker.keda.minReplicaCount=0",
        "--set",
        "worker.gpu.count=0",
    ),
    "ingress-hpa-keys": (
        "--set",
        "api.ingress.enabled=true",
        "--set",
        "api.ingress.className=nginx",
        "--set-json",
        'api.ingress.tls=[{"secretName":"synthgen-tls","hosts":["synthgen.example.com"]}]',
        "--set",
        "api.autoscaling.enabled=true",
        "--set",
        "apiKeys.keys={key-one,key-two}",
    ),
    "models-pvc": (
        "--set",
        "models.source=pvc",
        "--set",
        "models.pvc.existingClaim=synthgen-models",
        "--set",
        "models.pvc.subPath=packages",
        "--set",
        "apiKeys.existingSecret=synthgen-keys",
    ),
    "models-init": (
        "--set",
        "models.source=initContainer",
        "--set",
        "models.initContainer.url=https://models.example.com/synthgen-models.tar.gz",
    ),
}


def has(values: tuple[str, ...], setting: str) -> bool:
    return setting in values


# --- helpers -----------------------------------------------------------------------------------


def _helm_env() -> dict[str, str]:
    home = TOOLS / "helm-home"
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return env


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=_helm_env(), timeout=30, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@functools.cache
def render_text(*args: str) -> str:
    return helm("template", "t", str(CHART), "--namespace", "synthgen", *args).stdout


@functools.cache
def render(*args: str) -> tuple[dict[str, Any], ...]:
    """The chart rendered with the given helm arguments, as parsed manifests (cached)."""
    return tuple(doc for doc in yaml.safe_load_all(render_text(*args)) if doc)


@functools.cache
def kustomize(path: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(KUSTOMIZE / path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, suffix: str = "") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def one(docs: tuple[dict[str, Any], ...], kind: str, suffix: str = "") -> dict[str, Any]:
    found = find(docs, kind, suffix)
    assert len(found) == 1, f"expected one {kind} named *{suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def workloads(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def mounts_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def volumes_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(workload).get("volumes", [])}


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return match_labels.items() <= labels.items()


def checksum(docs: tuple[dict[str, Any], ...], suffix: str, key: str = "checksum/config") -> str:
    annotations: dict[str, str] = one(docs, "Deployment", suffix)["spec"]["template"]["metadata"]["annotations"]
    return annotations[key]


def configmap_data(docs: tuple[dict[str, Any], ...], suffix: str = "") -> dict[str, str]:
    cms = [d for d in find(docs, "ConfigMap", suffix) if not d["metadata"]["name"].endswith("-dashboard")]
    assert len(cms) == 1, [d["metadata"]["name"] for d in cms]
    data: dict[str, str] = cms[0]["data"]
    return data


def is_crd_object(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith(CRD_GROUPS)


# Resources a --set adds to the chart's output (a value ending in "=" matches any value).
OPTIONAL_RESOURCES: list[tuple[str, set[tuple[str, str]]]] = [
    ("worker.keda.enabled=true", {("ScaledObject", "t-synthgen-worker")}),
    ("worker.keda.redisStreams.passwordSecret.name=", {("TriggerAuthentication", "t-synthgen-worker")}),
    ("metrics.serviceMonitor.enabled=true", {("ServiceMonitor", "t-synthgen-api"), ("ServiceMonitor", "t-synthgen-worker")}),
    ("metrics.prometheusRule.enabled=true", {("PrometheusRule", "t-synthgen")}),
    ("metrics.grafanaDashboard.enabled=true", {("ConfigMap", "t-synthgen-dashboard")}),
    ("api.ingress.enabled=true", {("Ingress", "t-synthgen-api")}),
    ("api.autoscaling.enabled=true", {("HorizontalPodAutoscaler", "t-synthgen-api")}),
    ("apiKeys.keys=", {("Secret", "t-synthgen-api-keys")}),
]


def expected_resources(values: tuple[str, ...]) -> set[tuple[str, str]]:
    expected = {
        ("ConfigMap", "t-synthgen"),
        ("Deployment", "t-synthgen-api"),
        ("Deployment", "t-synthgen-worker"),
        ("Service", "t-synthgen-api"),
        ("Service", "t-synthgen-worker"),
        ("PodDisruptionBudget", "t-synthgen-api"),
        ("PodDisruptionBudget", "t-synthgen-worker"),
    }
    if not has(values, "redis.enabled=false"):
        expected |= {("StatefulSet", "t-synthgen-redis"), ("Service", "t-synthgen-redis"), ("NetworkPolicy", "t-synthgen-redis")}
    if not has(values, "serviceAccount.create=false"):
        expected.add(("ServiceAccount", "t-synthgen"))
    for setting, resources in OPTIONAL_RESOURCES:
        if any(v == setting or (setting.endswith("=") and v.startswith(setting)) for v in values):
            expected |= resources
    return expected


def assert_restricted(docs: tuple[dict[str, Any], ...]) -> None:
    """Pod Security Standard "restricted", read-only root filesystems and a writable /tmp."""
    assert workloads(docs)
    for w in workloads(docs):
        pod = pod_spec(w)
        where = w["metadata"]["name"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc.get("runAsUser", 1) != 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, where
        assert pod["automountServiceAccountToken"] is False, where
        volumes = volumes_of(w)
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc.get("runAsUser", 1) != 0, where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}/{c['name']}: read-only root needs a writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            assert "resources" in c, f"{where}/{c['name']}: no resources"


def assert_redis_network_policy(
    docs: tuple[dict[str, Any], ...], policy: dict[str, Any], extra: tuple[dict[str, Any], ...] = ()
) -> list[dict[str, Any]]:
    """The policy selects exactly the Redis pods and admits the api and worker pods (and the
    ``extra`` peers, nothing else in the namespace); returns the peers."""
    redis = one(docs, "StatefulSet", "-redis")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert selects(spec["podSelector"]["matchLabels"], pod_labels(redis))
    for d in find(docs, "Deployment"):
        assert not selects(spec["podSelector"]["matchLabels"], pod_labels(d)), d["metadata"]["name"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    assert {p["name"] for p in container(redis, "redis")["ports"]} == {"redis"}
    peers: list[dict[str, Any]] = rule["from"]
    local = [p for p in peers if set(p) == {"podSelector"} and p not in extra]
    for component in ("api", "worker"):
        deployment = one(docs, "Deployment", f"-{component}")
        assert any(selects(p["podSelector"]["matchLabels"], pod_labels(deployment)) for p in local), component
    for p in local:
        assert p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") in ("api", "worker"), p
        assert not selects(p["podSelector"]["matchLabels"], pod_labels(redis))
    return peers


# --- Helm: lint and render ---------------------------------------------------------------------


@requires_helm
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict(values: tuple[str, ...]) -> None:
    proc = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in proc.stdout


@requires_helm
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_resources(values: tuple[str, ...]) -> None:
    docs = render(*values)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    expected = expected_resources(values)
    assert set(kinds) == expected
    assert len(kinds) == len(expected), f"duplicate resources: {kinds}"
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "t"
        assert labels["app.kubernetes.io/name"] == "synthgen"
    for component in ("api", "worker"):
        service = one(docs, "Service", f"-{component}")
        deployment = one(docs, "Deployment", f"-{component}")
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == component
        assert selects(service["spec"]["selector"], pod_labels(deployment))
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        ports = {p["name"] for p in container(deployment, component)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    assert one(docs, "Service", "-worker")["spec"]["clusterIP"] == "None"


@requires_helm
def test_notes_render() -> None:
    # `helm template` skips NOTES.txt and `helm install --dry-run` wants a cluster: render the
    # notes through a copy of the chart where they are a named template inside a ConfigMap.
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    tmp = TOOLS / "notes-chart"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(CHART, tmp)
    try:
        (tmp / "templates" / "NOTES.txt").unlink()
        (tmp / "templates" / "_notes.tpl").write_text('{{- define "test.notes" -}}\n' + notes + "{{- end -}}\n")
        (tmp / "templates" / "notes.yaml").write_text(
            'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "test.notes" . | quote }}\n'
        )
        for name, values in VALUE_SETS.items():
            out = helm("template", "t", str(tmp), "--show-only", "templates/notes.yaml", *values).stdout
            text = yaml.safe_load(out)["data"]["notes"]
            assert "port-forward svc/t-synthgen-api" in text, name
            assert "<no value>" not in text, name
            if has(values, "worker.gpu.count=0"):
                assert "CPU only" in text and "-gpu" not in text, name
            else:
                assert f"1 x {GPU}" in text and "synthgen:0.1.0-gpu" in text, name
            if has(values, "redis.enabled=false"):
                assert "external" in text and "StatefulSet" not in text, name
            else:
                assert "appendonly yes" in text and "NetworkPolicy t-synthgen-redis" in text, name
            assert ("get scaledobject t-synthgen-worker" in text) == has(values, "worker.keda.enabled=true"), name
            assert ("ServiceMonitors t-synthgen-api" in text) == has(values, "metrics.serviceMonitor.enabled=true"), name
            assert ("API keys: file /etc/synthgen/api-keys/api-keys" in text) == (
                any(v.startswith(("apiKeys.keys=", "apiKeys.existingSecret=")) for v in values)
            ), name
            if has(values, "api.ingress.enabled=true"):
                assert "https://synthgen.example.com/v1" in text, name
            if has(values, "models.source=pvc"):
                assert "PVC synthgen-models (subPath packages) mounted read-only at /models" in text, name
            if has(values, "worker.keda.minReplicaCount=0"):
                assert "no worker runs while both streams are empty" in text, name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- Helm: security and probes ---------------------------------------------------------------


@requires_helm
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_security_context_restricted(values: tuple[str, ...]) -> None:
    assert_restricted(render(*values))


@requires_helm
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_probes(values: tuple[str, ...]) -> None:
    docs = render(*values)
    api = container(one(docs, "Deployment", "-api"), "api")
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": 8000}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["args"][:3] == ["serve", "--role", "api"]

    worker = container(one(docs, "Deployment", "-worker"), "worker")
    assert worker["livenessProbe"]["exec"]["command"] == WORKER_HEALTH
    assert worker["startupProbe"]["exec"]["command"] == WORKER_HEALTH
    assert worker["startupProbe"]["failureThreshold"] * worker["startupProbe"]["periodSeconds"] >= 60
    assert worker["args"][:3] == ["serve", "--role", "worker"]

    for s in find(docs, "StatefulSet", "-redis"):
        redis = container(s, "redis")
        assert "exec" in redis["readinessProbe"] and "tcpSocket" in redis["livenessProbe"]


# --- Helm: GPU scheduling -------------------------------------------------------------------------


@requires_helm
def test_worker_requests_gpu_by_default() -> None:
    worker = one(render(), "Deployment", "-worker")
    c = container(worker, "worker")
    assert c["resources"]["limits"][GPU] == 1
    assert c["resources"]["requests"][GPU] == 1
    assert c["resources"]["requests"]["memory"] == "1Gi", "GPU must be added to, not replace, the resources"
    assert c["image"] == "synthgen:0.1.0-gpu"
    api = one(render(), "Deployment", "-api")
    assert GPU not in str(api), "the api must never request GPUs"
    assert container(api, "api")["image"] == "synthgen:0.1.0"


@requires_helm
@pytest.mark.parametrize("name", ["no-gpu", "secret-redis-cpu-ephemeral"])
def test_worker_without_gpu(name: str) -> None:
    worker = one(render(*VALUE_SETS[name]), "Deployment", "-worker")
    c = container(worker, "worker")
    assert GPU not in c["resources"].get("limits", {})
    assert GPU not in c["resources"].get("requests", {})
    assert c["image"] == "synthgen:0.1.0"
    assert "runtimeClassName" not in worker["spec"]["template"]["spec"]


@requires_helm
def test_worker_gpu_scheduling_options() -> None:
    docs = render(
        "--set",
        "worker.gpu.count=2",
        "--set",
        "worker.runtimeClassName=nvidia",
        "--set",
        "image.tag=1.2.3",
        "--set-json",
        'worker.nodeSelector={"nvidia.com/gpu.present":"true"}',
        "--set-json",
        f'worker.tolerations=[{{"key":"{GPU}","operator":"Exists","effect":"NoSchedule"}}]',
    )
    spec = one(docs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    c = container(one(docs, "Deployment", "-worker"), "worker")
    assert c["resources"]["limits"][GPU] == 2 and c["resources"]["requests"][GPU] == 2
    assert c["image"] == "synthgen:1.2.3-gpu"
    api_spec = one(docs, "Deployment", "-api")["spec"]["template"]["spec"]
    assert "nodeSelector" not in api_spec and "runtimeClassName" not in api_spec


# --- Helm: configuration -----------------------------------------------------------------------


@requires_helm
def test_checksum_annotation_follows_config() -> None:
    base = render()
    assert checksum(base, "-api") == checksum(base, "-worker")
    assert re.fullmatch(r"[0-9a-f]{64}", checksum(base, "-api"))
    changed = render("--set", "config.batchSize=128")
    assert configmap_data(changed)["SYNTHGEN_BATCH_SIZE"] == "128"
    for suffix in ("-api", "-worker"):
        assert checksum(changed, suffix) != checksum(base, suffix)
    external = render(*VALUE_SETS["external-redis"])
    assert checksum(external, "-api") != checksum(base, "-api")
    # a value outside the ConfigMap does not roll the pods
    assert checksum(render("--set", "api.replicaCount=5"), "-api") == checksum(base, "-api")


@requires_helm
def test_configmap_env() -> None:
    data = configmap_data(render("--set-json", 'config.extraEnv={"SYNTHGEN_WORKER_CONCURRENCY":"8"}'))
    assert data["REDIS_URL"] == "redis://t-synthgen-redis:6379/0"
    assert data["SYNTHGEN_DEFAULT_MODEL"] == "avatars-64"
    assert data["SYNTHGEN_MODELS_DIR"] == "/app/models"
    assert data["SYNTHGEN_WORKER_CONCURRENCY"] == "8"
    assert all(isinstance(v, str) for v in data.values())
    assert configmap_data(render("--set", "config.resultTtlS=1000000"))["SYNTHGEN_RESULT_TTL_S"] == "1000000"
    for suffix in ("-api", "-worker"):
        c = container(one(render(), "Deployment", suffix), suffix[1:])
        assert c["envFrom"] == [{"configMapRef": {"name": "t-synthgen"}}]


@requires_helm
def test_configmap_keys_are_service_settings() -> None:
    settings = pytest.importorskip("service.settings", reason="service.settings is not importable")
    # REDIS_URL, and the API keys file the api reads (SYNTHGEN_API_KEYS_FILE)
    known = {"SYNTHGEN_" + name.upper() for name in settings.Settings.model_fields} | {"REDIS_URL", "SYNTHGEN_API_KEYS_FILE"}
    for values in VALUE_SETS.values():
        docs = render(*values)
        data = configmap_data(docs)
        assert set(data) <= known, f"ConfigMap keys the service does not read: {sorted(set(data) - known)}"
        for component in ("api", "worker"):
            c = container(one(docs, "Deployment", f"-{component}"), component)
            assert set(env_of(c)) <= known, sorted(set(env_of(c)) - known)


@requires_helm
def test_in_cluster_redis_uses_aof_and_pvc() -> None:
    docs = render()
    sts = one(docs, "StatefulSet", "-redis")
    args = container(sts, "redis")["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--dir") + 1] == "/data"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert sts["spec"]["serviceName"] == one(docs, "Service", "-redis")["metadata"]["name"]

    ephemeral = one(render("--set", "redis.persistence.enabled=false"), "StatefulSet", "-redis")
    assert "volumeClaimTemplates" not in ephemeral["spec"]
    volumes = {v["name"]: v for v in ephemeral["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]


@requires_helm
def test_external_redis_url() -> None:
    docs = render(*VALUE_SETS["external-redis"])
    assert not find(docs, "StatefulSet") and not find(docs, "Service", "-redis")
    assert not find(docs, "PersistentVolumeClaim")
    assert configmap_data(docs)["REDIS_URL"] == EXTERNAL_URL


@requires_helm
def test_external_redis_cluster() -> None:
    """A Redis Cluster outside the chart: every process gets the cluster client and the same shard count;
    single images and interpolations are decoded by the workers in every configuration."""
    data = configmap_data(render(*VALUE_SETS["external-redis-cluster"]))
    assert data["SYNTHGEN_REDIS_CLUSTER"] == "true" and data["SYNTHGEN_QUEUE_SHARDS"] == "24"
    assert data["REDIS_URL"] == EXTERNAL_URL
    for values in VALUE_SETS.values():
        assert configmap_data(render(*values))["SYNTHGEN_INTERACTIVE_DECODE"] == "workers"
    assert "SYNTHGEN_REDIS_CLUSTER" not in configmap_data(render())


@requires_helm
def test_external_redis_secret() -> None:
    docs = render(*VALUE_SETS["secret-redis-cpu-ephemeral"])
    assert not find(docs, "StatefulSet")
    assert "REDIS_URL" not in configmap_data(docs)
    for suffix in ("-api", "-worker"):
        env = {e["name"]: e for e in container(one(docs, "Deployment", suffix), suffix[1:])["env"]}
        ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "synthgen-redis", "key": "redis-url"}
    assert one(docs, "Deployment", "-api")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


@requires_helm
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", f"externalRedis.url={EXTERNAL_URL}"), "set redis.enabled=false"),
        (("--set", "redis.enabled=false"), "no Redis"),
        (("--set", "worker.gpu.count=-1"), "worker.gpu.count"),
        (("--set", "config.batchSize=0"), "config.batchSize"),
        (("--set", "config.logLevel=loud"), "config.logLevel"),
        (("--set", "externalRedis.url=http://x:6379"), "externalRedis.url"),
        (("--set", "worker.executionProvider=tpu"), "worker.executionProvider"),
        (("--set", "apii.replicaCount=1"), "apii"),
        (("--set", "models.source=pvc"), "existingClaim"),
        (("--set", "models.source=initContainer"), "models.initContainer.url"),
        (("--set", "models.source=s3"), "models.source"),
        (
            ("--set", "redis.enabled=false", "--set", f"externalRedis.url={EXTERNAL_URL}", "--set", "worker.keda.enabled=true"),
            "worker.keda.redisStreams.address",
        ),
        (("--set", "worker.keda.enabled=true", "--set", "worker.keda.maxReplicaCount=0"), "maxReplicaCount"),
        (("--set", "worker.keda.enabled=true", "--set", "worker.keda.minReplicaCount=11"), "maxReplicaCount"),
        (("--set", "worker.keda.trigger=cpu"), "worker.keda.trigger"),
        (("--set", "api.autoscaling.enabled=true", "--set", "api.autoscaling.minReplicas=0"), "minReplicas"),
        (("--set", "api.pdb.maxUnavailable=lots"), "maxUnavailable"),
        (("--set", "apiKeys.keys={has space}"), "apiKeys.keys"),
        (("--set", "api.ingress.enabled=true", "--set-json", "api.ingress.hosts=[]"), "hosts"),
        (("--set", "metrics.serviceMonitor.interval=often"), "interval"),
        (("--set", "externalRedis.cluster=true"), "the in-cluster Redis is a single server"),
        (
            (
                "--set",
                "redis.enabled=false",
                "--set",
                f"externalRedis.url={EXTERNAL_URL}",
                "--set",
                "externalRedis.cluster=true",
                "--set",
                "worker.keda.enabled=true",
                "--set",
                "worker.keda.redisStreams.address=r:6379",
            ),
            "set worker.keda.trigger=prometheus",
        ),
        (("--set", "config.interactiveDecode=gpu"), "config.interactiveDecode"),
    ],
    ids=[
        "redis-twice",
        "no-redis",
        "negative-gpu",
        "zero-batch",
        "log-level",
        "url-scheme",
        "provider",
        "typo",
        "pvc-without-claim",
        "init-without-url",
        "models-source",
        "keda-external-redis-without-address",
        "keda-max-zero",
        "keda-min-above-max",
        "keda-trigger",
        "hpa-min-zero",
        "pdb-value",
        "api-key-whitespace",
        "ingress-without-hosts",
        "scrape-interval",
        "cluster-with-in-cluster-redis",
        "cluster-with-stream-trigger",
        "interactive-decode",
    ],
)
def test_invalid_values_rejected(args: tuple[str, ...], message: str) -> None:
    proc = helm("template", "t", str(CHART), *args, check=False)
    assert proc.returncode != 0, f"helm template accepted {args}"
    assert message in proc.stderr


def test_values_documented() -> None:
    """Every value in values.yaml has a comment on the line above it, or is inside a map value
    documented as a whole ("# -- ..." above it, e.g. resources); section comments do not count."""
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        m = re.match(r"^( *)([A-Za-z][\w.-]*):(.*)$", line)
        if m:
            indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
            while stack and stack[-1][0] >= indent:
                stack.pop()
            comment = previous.strip()
            if rest and not rest.startswith("#") and not (comment.startswith("#") or any(d for _, d in stack)):
                undocumented.append(key)
            stack.append((indent, comment.startswith("# --")))
        previous = line
    assert undocumented == [], f"values without a comment: {undocumented}"
    yaml.safe_load((CHART / "values.yaml").read_text())


# --- Helm: autoscaling (HPA, KEDA), ingress, disruption budgets -----------------------------------


@requires_helm
def test_api_ingress_and_hpa() -> None:
    docs = render(*VALUE_SETS["ingress-hpa-keys"])
    ingress = one(docs, "Ingress", "-api")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "synthgen-tls", "hosts": ["synthgen.example.com"]}]
    (rule,) = ingress["rules"]
    assert rule["host"] == "synthgen.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/v1" and path["pathType"] == "Prefix", "only the API is exposed, not /metrics"
    service = one(docs, "Service", "-api")
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"number": service["spec"]["ports"][0]["port"]},
    }

    hpa = one(docs, "HorizontalPodAutoscaler", "-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "t-synthgen-api"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert "replicas" not in one(docs, "Deployment", "-api")["spec"], "the HPA owns the replica count"
    assert one(docs, "Deployment", "-worker")["spec"]["replicas"] == 1

    both = render("--set", "api.autoscaling.enabled=true", "--set", "api.autoscaling.targetMemoryUtilizationPercentage=80")
    assert [m["resource"]["name"] for m in one(both, "HorizontalPodAutoscaler")["spec"]["metrics"]] == ["cpu", "memory"]
    assert one(render(), "Deployment", "-api")["spec"]["replicas"] == 2


@requires_helm
def test_keda_scaled_object_on_stream_lag() -> None:
    docs = render(*VALUE_SETS["keda-monitoring"])
    worker = one(docs, "Deployment", "-worker")
    assert "replicas" not in worker["spec"], "KEDA owns the worker replica count"
    so = one(docs, "ScaledObject", "-worker")
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker["metadata"]["name"]}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 10)
    assert spec["cooldownPeriod"] == 300 and spec["pollingInterval"] == 15
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2}
    triggers = spec["triggers"]
    assert [t["metadata"]["stream"] for t in triggers] == STREAMS
    auth = one(docs, "TriggerAuthentication", "-worker")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "synthgen-redis-auth", "key": "redis-password"}]
    for t in triggers:
        meta = t["metadata"]
        assert t["type"] == "redis-streams" and t["metricType"] == "AverageValue"
        assert set(meta) <= REDIS_STREAMS_METADATA, set(meta) - REDIS_STREAMS_METADATA
        assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
        assert meta["consumerGroup"] == CONSUMER_GROUP
        assert meta["lagCount"] == "20" and "pendingEntriesCount" not in meta
        assert meta["address"] == "t-synthgen-redis.synthgen.svc:6379"
        assert t["authenticationRef"] == {"name": auth["metadata"]["name"]}

    # the KEDA operator must reach Redis through the NetworkPolicy; without KEDA it may not
    peers = assert_redis_network_policy(docs, one(docs, "NetworkPolicy"))
    keda_peers = [p for p in peers if "namespaceSelector" in p]
    assert keda_peers == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}},
        }
    ]
    assert all("namespaceSelector" not in p for p in assert_redis_network_policy(render(), one(render(), "NetworkPolicy")))

    tuned = render(
        "--set",
        "worker.keda.enabled=true",
        "--set",
        "worker.keda.minReplicaCount=0",
        "--set",
        "worker.keda.maxReplicaCount=4",
        "--set",
        "worker.keda.cooldownPeriod=900",
        "--set",
        "worker.keda.fallback.enabled=false",
        "--set",
        "worker.keda.redisStreams.lagCount=64",
        "--set-json",
        'worker.keda.behavior={"scaleDown":{"stabilizationWindowSeconds":600}}',
    )
    spec = one(tuned, "ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 4, 900)
    assert "fallback" not in spec
    assert {t["metadata"]["lagCount"] for t in spec["triggers"]} == {"64"}
    assert all("authenticationRef" not in t for t in spec["triggers"])
    assert not find(tuned, "TriggerAuthentication")
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


@requires_helm
def test_keda_prometheus_trigger_with_external_redis() -> None:
    docs = render(*VALUE_SETS["keda-prometheus-external"])
    assert not find(docs, "NetworkPolicy"), "no in-cluster Redis to protect"
    (trigger,) = one(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert set(meta) <= PROMETHEUS_METADATA
    assert meta["serverAddress"].startswith("http")
    assert "synthgen_queue_lag" in meta["query"] and 'namespace="synthgen"' in meta["query"]
    assert 'job="synthgen-api"' in meta["query"]
    assert one(docs, "ScaledObject")["spec"]["minReplicaCount"] == 0
    external = render(
        "--set",
        "redis.enabled=false",
        "--set",
        f"externalRedis.url={EXTERNAL_URL}",
        "--set",
        "worker.keda.enabled=true",
        "--set",
        "worker.keda.redisStreams.address=redis.example:6380",
    )
    assert {t["metadata"]["address"] for t in one(external, "ScaledObject")["spec"]["triggers"]} == {"redis.example:6380"}


@requires_helm
def test_pod_disruption_budgets() -> None:
    docs = render()
    for component in ("api", "worker"):
        pdb = one(docs, "PodDisruptionBudget", f"-{component}")["spec"]
        assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
        assert selects(pdb["selector"]["matchLabels"], pod_labels(one(docs, "Deployment", f"-{component}")))
        assert not selects(pdb["selector"]["matchLabels"], pod_labels(one(docs, "StatefulSet", "-redis")))
    custom = render("--set", "api.pdb.minAvailable=50%", "--set", "worker.pdb.enabled=false")
    pdb = one(custom, "PodDisruptionBudget")["spec"]
    assert pdb == {"minAvailable": "50%", "selector": pdb["selector"]}
    assert not find(render("--set", "api.pdb.enabled=false", "--set", "worker.pdb.enabled=false"), "PodDisruptionBudget")


@requires_helm
def test_network_policy_admits_only_api_and_worker_to_redis() -> None:
    docs = render()
    peers = assert_redis_network_policy(docs, one(docs, "NetworkPolicy"))
    assert len(peers) == 2
    extra = render("--set-json", 'networkPolicy.redisExtraFrom=[{"podSelector":{"matchLabels":{"app":"redis-exporter"}}}]')
    exporter = {"podSelector": {"matchLabels": {"app": "redis-exporter"}}}
    assert exporter in assert_redis_network_policy(extra, one(extra, "NetworkPolicy"), (exporter,))
    assert not find(render("--set", "networkPolicy.enabled=false"), "NetworkPolicy")


# --- Helm: API keys and model sources ----------------------------------------------------------------


@requires_helm
def test_api_keys_secret_mounted_as_file() -> None:
    docs = render(*VALUE_SETS["ingress-hpa-keys"])
    secret = one(docs, "Secret", "-api-keys")
    assert secret["type"] == "Opaque"
    assert secret["stringData"]["api-keys"].splitlines() == ["key-one", "key-two"]
    api = one(docs, "Deployment", "-api")
    c = container(api, "api")
    assert env_of(c)["SYNTHGEN_API_KEYS_FILE"]["value"] == "/etc/synthgen/api-keys/api-keys"
    mount = mounts_of(c)["/etc/synthgen/api-keys"]
    assert mount["readOnly"] is True
    volume = volumes_of(api)[mount["name"]]["secret"]
    assert volume["secretName"] == secret["metadata"]["name"]
    assert volume["items"] == [{"key": "api-keys", "path": "api-keys"}]
    assert volume["defaultMode"] & 0o007 == 0, "the keys file is not world-readable"
    worker = one(docs, "Deployment", "-worker")
    assert "SYNTHGEN_API_KEYS_FILE" not in env_of(container(worker, "worker")) and "api-keys" not in volumes_of(worker)
    assert "api-keys" not in str(configmap_data(docs)), "keys never go into the ConfigMap"
    # rotating the keys rolls the api pods
    rotated = render("--set", "apiKeys.keys={key-three}")
    assert checksum(rotated, "-api", "checksum/api-keys") != checksum(docs, "-api", "checksum/api-keys")

    existing = render(*VALUE_SETS["models-pvc"])
    assert not find(existing, "Secret")
    api = one(existing, "Deployment", "-api")
    assert volumes_of(api)["api-keys"]["secret"]["secretName"] == "synthgen-keys"
    assert "checksum/api-keys" not in api["spec"]["template"]["metadata"]["annotations"]

    open_api = container(one(render(), "Deployment", "-api"), "api")
    assert "SYNTHGEN_API_KEYS_FILE" not in env_of(open_api) and "/etc/synthgen/api-keys" not in mounts_of(open_api)


@requires_helm
@pytest.mark.parametrize("name", ["default", "models-pvc", "models-init"])
def test_model_sources(name: str) -> None:
    docs = render(*VALUE_SETS[name])
    models_dir = configmap_data(docs)["SYNTHGEN_MODELS_DIR"]
    for component in ("api", "worker"):
        deployment = one(docs, "Deployment", f"-{component}")
        c = container(deployment, component)
        init = pod_spec(deployment).get("initContainers", [])
        if name == "default":
            assert models_dir == "/app/models"
            assert "models" not in volumes_of(deployment) and not init
            continue
        assert models_dir == "/models"
        mount = mounts_of(c)["/models"]
        assert mount["readOnly"] is True
        volume = volumes_of(deployment)[mount["name"]]
        if name == "models-pvc":
            assert volume["persistentVolumeClaim"] == {"claimName": "synthgen-models", "readOnly": True}
            assert mount["subPath"] == "packages"
            assert not init
        else:
            assert volume["emptyDir"]["sizeLimit"] == "2Gi"
            (fetch,) = init
            assert fetch["name"] == "fetch-models"
            env = env_of(fetch)
            assert env["MODELS_URL"]["value"] == "https://models.example.com/synthgen-models.tar.gz"
            assert env["MODELS_DIR"]["value"] == "/models"
            assert mounts_of(fetch)["/models"].get("readOnly") is not True, "the init container writes the models"
            assert "$MODELS_URL" in " ".join(fetch["command"]) and "tar" in " ".join(fetch["command"])
    custom = render(
        "--set",
        "models.source=initContainer",
        "--set",
        "models.initContainer.image.repository=amazon/aws-cli",
        "--set-json",
        'models.initContainer.command=["aws","s3","sync","s3://bucket/models","/models"]',
    )
    (fetch,) = pod_spec(one(custom, "Deployment", "-worker"))["initContainers"]
    assert fetch["command"] == ["aws", "s3", "sync", "s3://bucket/models", "/models"]
    assert fetch["image"].startswith("amazon/aws-cli:")


# --- Helm: monitoring ------------------------------------------------------------------------------


@requires_helm
def test_service_monitors_scrape_api_and_workers() -> None:
    docs = render(
        *VALUE_SETS["keda-monitoring"], "--set-json", 'metrics.serviceMonitor.labels={"release":"kube-prometheus-stack"}'
    )
    for component in ("api", "worker"):
        sm = one(docs, "ServiceMonitor", f"-{component}")
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        service = one(docs, "Service", f"-{component}")
        assert selects(sm["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        others = [s for s in find(docs, "Service") if s is not service]
        assert not any(selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]) for s in others)
        assert sm["spec"]["namespaceSelector"] == {"matchNames": ["synthgen"]}
        (endpoint,) = sm["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        assert {"action": "replace", "targetLabel": "job", "replacement": JOBS[component]} in endpoint["relabelings"]


@requires_helm
def test_prometheus_rule_and_dashboard_follow_deploy_files() -> None:
    assert (CHART / "files" / "alerts.yml").read_text() == ALERTS.read_text(), (
        "helm/synthgen/files/alerts.yml must be a copy of deploy/prometheus/alerts.yml"
    )
    assert (CHART / "files" / "synthgen-dashboard.json").read_text() == DASHBOARD.read_text(), (
        "helm/synthgen/files/synthgen-dashboard.json must be a copy of deploy/grafana/dashboards/synthgen.json"
    )
    docs = render(*VALUE_SETS["keda-monitoring"])
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    dashboard = one(docs, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["synthgen.json"]) == json.loads(DASHBOARD.read_text())


# --- kubernetes-validate (core objects) --------------------------------------------------------------


def _write_core_objects(path: Path, docs: tuple[dict[str, Any], ...]) -> int:
    core = [d for d in docs if not is_crd_object(d)]
    path.write_text(yaml.safe_dump_all(core, sort_keys=False))
    return len(core)


def _kubernetes_validate(files: list[str], k8s_version: str | None) -> None:
    version = ["-k", k8s_version] if k8s_version else []
    proc = subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", "--quiet", *version, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@requires_helm
@requires_kubernetes_validate
@pytest.mark.parametrize("k8s_version", ["1.30.0", None], ids=["k8s-1.30", "k8s-newest"])
def test_manifests_validate_against_kubernetes_schema(tmp_path: Path, k8s_version: str | None) -> None:
    files = []
    for name, values in VALUE_SETS.items():
        path = tmp_path / f"{name}.yaml"
        assert _write_core_objects(path, render(*values)) >= 7
        files.append(str(path))
    _kubernetes_validate(files, k8s_version)


# --- custom resources against their CRD schemas ------------------------------------------------------

# Validates [name, object] pairs with the @kubernetes-models classes (schemas generated from the
# published KEDA and Prometheus Operator CRDs); prints {name: error or null} as JSON.
CRD_VALIDATOR = """
import fs from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
const models = {};
for (const m of [ScaledObject, TriggerAuthentication, ServiceMonitor, PodMonitor, PrometheusRule]) {
  models[`${m.apiVersion}/${m.kind}`] = m;
}
const results = {};
for (const [name, doc] of JSON.parse(fs.readFileSync(process.argv[1], "utf8"))) {
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) { results[name] = `no validator for ${doc.apiVersion}/${doc.kind}`; continue; }
  try { new Model(doc).validate(); results[name] = null; } catch (e) { results[name] = String(e.message); }
}
console.log(JSON.stringify(results));
"""


def validate_custom_resources(tmp_path: Path, named: list[tuple[str, dict[str, Any]]]) -> dict[str, str | None]:
    data = tmp_path / "crs.json"
    data.write_text(json.dumps(named))
    assert NODE is not None
    proc = subprocess.run(
        [NODE, "--input-type=module", "-e", CRD_VALIDATOR, str(data)],
        cwd=NPM_DIR,  # resolves the packages in .tools/npm/node_modules
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results: dict[str, str | None] = json.loads(proc.stdout)
    return results


@requires_helm
@requires_crd_validators
def test_custom_resources_validate_against_crd_schemas(tmp_path: Path) -> None:
    named = []
    for name, values in VALUE_SETS.items():
        for doc in render(*values):
            if is_crd_object(doc):
                named.append((f"{name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    kinds = {doc["kind"] for _, doc in named}
    assert kinds == {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
    # controls: the validators do reject what the API server would
    so = next(doc for _, doc in named if doc["kind"] == "ScaledObject")
    bad_so = json.loads(json.dumps(so))
    bad_so["spec"]["minReplicaCount"] = "1"
    del bad_so["spec"]["scaleTargetRef"]
    sm = next(doc for _, doc in named if doc["kind"] == "ServiceMonitor")
    bad_sm = json.loads(json.dumps(sm))
    bad_sm["spec"]["endpoints"][0]["interval"] = 30
    controls = [("control:ScaledObject", bad_so), ("control:ServiceMonitor", bad_sm)]

    results = validate_custom_resources(tmp_path, named + controls)
    failures = {k: v for k, v in results.items() if v is not None and not k.startswith("control:")}
    assert failures == {}
    assert results["control:ScaledObject"] and "minReplicaCount" in results["control:ScaledObject"]
    assert results["control:ServiceMonitor"] and "interval" in results["control:ServiceMonitor"]


# --- Kustomize ----------------------------------------------------------------------------------------

KUSTOMIZATIONS = ["base", "overlays/gpu"]


@requires_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomize_renders(path: str) -> None:
    docs = kustomize(path)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in [
        ("Deployment", "synthgen-api"),
        ("Deployment", "synthgen-worker"),
        ("Service", "synthgen-api"),
        ("Service", "synthgen-worker"),
        ("StatefulSet", "synthgen-redis"),
        ("Service", "synthgen-redis"),
        ("NetworkPolicy", "synthgen-redis"),
        ("PodDisruptionBudget", "synthgen-api"),
        ("PodDisruptionBudget", "synthgen-worker"),
        ("ServiceAccount", "synthgen"),
    ]:
        assert (kind, name) in names, (kind, name)
    assert_restricted(docs)
    assert_redis_network_policy(docs, one(docs, "NetworkPolicy"))
    for component in ("api", "worker"):
        deployment = one(docs, "Deployment", f"synthgen-{component}")
        pdb = one(docs, "PodDisruptionBudget", f"synthgen-{component}")
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        service = one(docs, "Service", f"synthgen-{component}")
        assert selects(service["spec"]["selector"], pod_labels(deployment))
        # the generated ConfigMap's hashed name: a settings change rolls the pods
        (ref,) = container(deployment, component)["envFrom"]
        assert re.fullmatch(r"synthgen-config-[a-z0-9]{10}", ref["configMapRef"]["name"])
        assert ref["configMapRef"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    api = container(one(docs, "Deployment", "synthgen-api"), "api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = container(one(docs, "Deployment", "synthgen-worker"), "worker")
    assert worker["livenessProbe"]["exec"]["command"] == WORKER_HEALTH
    data = one(docs, "ConfigMap")["data"]
    assert data["REDIS_URL"] == "redis://synthgen-redis:6379/0"
    assert api["image"] == "synthgen:0.1.0"
    if path == "base":
        assert GPU not in str(worker["resources"]) and worker["image"] == "synthgen:0.1.0"
        assert env_of(worker)["SYNTHGEN_EXECUTION_PROVIDER"]["value"] == "cpu"
    else:
        assert all(d["metadata"].get("namespace") == "synthgen" for d in docs)
        assert worker["resources"]["limits"][GPU] == 1 and worker["resources"]["requests"][GPU] == 1
        assert worker["resources"]["requests"]["memory"] == "2Gi"
        assert worker["image"] == "synthgen:0.1.0-gpu"
        assert env_of(worker)["SYNTHGEN_EXECUTION_PROVIDER"]["value"] == "cuda"
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod_spec(one(docs, "Deployment", "synthgen-worker"))[
            "tolerations"
        ]
        assert GPU not in str(one(docs, "Deployment", "synthgen-api"))
        assert env_of(api)["SYNTHGEN_API_KEYS_FILE"]["value"] == "/etc/synthgen/api-keys/api-keys"
        assert volumes_of(one(docs, "Deployment", "synthgen-api"))["api-keys"]["secret"]["secretName"] == "synthgen-api-keys"


@requires_kubectl
@requires_helm
def test_kustomize_and_chart_agree_on_settings() -> None:
    chart = configmap_data(render())
    base = one(kustomize("base"), "ConfigMap")["data"]
    assert set(base) == set(chart)
    assert {k: v for k, v in base.items() if k != "REDIS_URL"} == {k: v for k, v in chart.items() if k != "REDIS_URL"}


@requires_kubectl
@requires_kubernetes_validate
@pytest.mark.parametrize("k8s_version", ["1.30.0", None], ids=["k8s-1.30", "k8s-newest"])
def test_kustomize_validates_against_kubernetes_schema(tmp_path: Path, k8s_version: str | None) -> None:
    files = []
    for path in KUSTOMIZATIONS:
        out = tmp_path / (path.replace("/", "-") + ".yaml")
        _write_core_objects(out, kustomize(path))
        files.append(str(out))
    _kubernetes_validate(files, k8s_version)


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, line
            current = []
            stages[m.group(2) or f"stage{len(stages)}"] = current
        current.append((instruction, rest.strip()))
    return stages


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE))


@pytest.mark.parametrize(("target", "base"), [("cpu", "python:3.11-slim"), ("gpu", "nvidia/cuda:")])
def test_dockerfile_targets(target: str, base: str) -> None:
    stages = dockerfile_stages()
    assert target in stages, f"no stage {target!r} in Dockerfile: {list(stages)}"
    steps = stages[target]
    image = steps[0][1].split()[0]
    image = re.sub(r"\$\{(\w+)\}", lambda m: dockerfile_args()[m.group(1)], image)
    assert image.startswith(base)
    by: dict[str, list[str]] = {}
    for instruction, args in steps:
        by.setdefault(instruction, []).append(args)
    (user,) = by["USER"]
    assert user.split(":")[0] not in ("0", "root") and user.split(":")[0].isdigit()
    (healthcheck,) = by["HEALTHCHECK"]
    assert "urllib" in healthcheck and "/healthz" in healthcheck
    assert by["ENTRYPOINT"] == ['["synthgen"]']
    assert by["CMD"] == ['["serve", "--role", "all", "--host", "0.0.0.0"]']
    assert any(a.split()[0] == "models/" and a.split()[1] == "/app/models/" for a in by["COPY"])
    env = " ".join(by["ENV"])
    assert "SYNTHGEN_MODELS_DIR=/app/models" in env and "SYNTHGEN_DEFAULT_MODEL=avatars-64" in env
    installs = " ".join(args for stage in stages.values() for instruction, args in stage if instruction == "RUN")
    assert not re.search(r"install[^&;]*\btorch\b", installs), "the serving images must not install torch"
    if target == "gpu":
        assert "[gpu]" in installs


def test_dockerignore() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".venv", ".git", "runs", "cache", "tests", ".tools", ".env"):
        assert excluded in patterns, f"{excluded} is not excluded from the build context"
    for needed in ("models", "pyproject.toml", "service", "synthgen", "*", "*.toml", "*.onnx", "*.json"):
        assert needed not in patterns, f"{needed} must stay in the build context"


@pytest.mark.skipif(not _runnable(HADOLINT), reason=f"hadolint not found at {HADOLINT}: {INSTALL_HINT}")
def test_hadolint() -> None:
    proc = subprocess.run([str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_base_image_is_swappable() -> None:
    """Stages on ${PYTHON_IMAGE} use only `python3` and a venv, so any Debian image with
    python3.11 and python3-venv (e.g. a debootstrap'd bookworm, scripts/image_smoke_test.sh) works."""
    stages = dockerfile_stages()
    on_python = [name for name, steps in stages.items() if steps[0][1].split()[0] == "${PYTHON_IMAGE}"]
    assert {"wheel", "cpu-build", "cpu"} <= set(on_python)
    for name in on_python:
        for instruction, args in stages[name]:
            if instruction in ("RUN", "HEALTHCHECK"):
                bare = re.findall(r"(?:^|[\s;&|])(pip3?|python(?:3\.\d+)?)\s", args)
                assert not bare, f"stage {name}: {instruction} calls {bare} outside the venv: {args}"
    assert "ARG PYTHON_IMAGE=" in DOCKERFILE.read_text()


# --- docker-compose, Prometheus and Grafana ------------------------------------------------------------


def test_compose_stack() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "prometheus", "grafana"} <= set(services)

    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])

    for name, role in (("api", "api"), ("worker", "worker"), ("worker-gpu", "worker")):
        svc = services[name]
        assert svc["command"][:3] == ["serve", "--role", role], name
        assert svc["environment"]["REDIS_URL"] == "redis://redis:6379/0", name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        context = (COMPOSE.parent / svc["build"]["context"]).resolve()
        assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE, name
        assert svc["build"]["target"] in dockerfile_stages(), name
    assert services["worker"]["healthcheck"]["test"] == ["CMD", *WORKER_HEALTH]
    assert services["worker-gpu"]["build"]["target"] == "gpu"
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]

    def bind_mounts(service: str) -> dict[str, Path]:
        mounts = [v.split(":") for v in services[service]["volumes"]]
        return {dst: (COMPOSE.parent / src).resolve() for src, dst, *_ in mounts if src.startswith(".")}

    prometheus = bind_mounts("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    rule_files = yaml.safe_load(PROMETHEUS.read_text())["rule_files"]
    assert [prometheus[f] for f in rule_files] == [ALERTS]

    grafana = bind_mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "synthgen.yml").read_text())["providers"]
    assert grafana[provider["options"]["path"]] == DASHBOARD.parent
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    environment = services["grafana"]["environment"]
    home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert grafana[str(Path(home).parent)] / Path(home).name == DASHBOARD

    for name, volume in ((n, v.split(":")[0]) for n, s in services.items() for v in s.get("volumes", [])):
        if volume.startswith("."):
            assert (COMPOSE.parent / volume).exists(), f"{name}: {volume} does not exist"
        else:
            assert volume in compose["volumes"], f"{name}: undeclared volume {volume}"


def test_prometheus_scrapes_api_and_workers() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose_services = yaml.safe_load(COMPOSE.read_text())["services"]
    scraped: dict[str, set[str]] = {}
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for sd in job.get("dns_sd_configs", []):
            assert sd["port"] == 8000
            scraped.setdefault(name, set()).update(sd["names"])
    # the job names the alert rules and the dashboard select on
    assert "api" in scraped[JOBS["api"]] and "worker" in scraped[JOBS["worker"]]
    assert set().union(*scraped.values()) <= set(compose_services)


@requires_promtool
def test_promtool_check_config(tmp_path: Path) -> None:
    # the config names the rules by their path in the container: point it at the file here
    config = yaml.safe_load(PROMETHEUS.read_text())
    config["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([str(PROMTOOL), "check", "config", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@requires_promtool
def test_promtool_check_rules() -> None:
    proc = subprocess.run([str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@requires_promtool
def test_promtool_unit_tests() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "test", "rules", ALERTS_TEST.name],
        cwd=ALERTS_TEST.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_alert_rules_cover_operations() -> None:
    rules = alert_rules()
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    for name in ("SynthgenQueueBacklogGrowing", "SynthgenNoWorkerAlive", "SynthgenHighErrorRate", "SynthgenHighLatencyP99"):
        assert name in alerts, name
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" in rule, name
    tested = {t["alertname"] for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for t in t.get("alert_rule_test", [])}
    assert set(alerts) <= tested, f"alerts without a promtool unit test: {sorted(set(alerts) - tested)}"
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        for name in re.findall(r"[a-z_]+:[a-z_0-9]+:[a-z_0-9]+", rule["expr"]):
            assert name in recorded, f"{name} is not recorded"


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query, Grafana variables replaced as Grafana would."""
    substitutions = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*"}
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in substitutions.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            out.append((panel["title"], expr))
    return out


def metric_names(expr: str) -> set[str]:
    """synthgen_* metric names in a PromQL expression (not recording-rule names, not label values)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    names = set(re.findall(r"(?<![:\w])synthgen_\w+(?![:\w])", expr))
    base = set()
    for name in names:
        stem = re.sub(r"_(bucket|sum|count)$", "", name)
        base.add(stem if METRICS.get(stem) == "histogram" else name)
    return base


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] == "synthgen" and dash["title"] == "synthgen"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["includeAll"] is True and variables["namespace"]["allValue"] == ".*"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("throughput", "queue", "batch fill", "latency", "gpu"):
        assert topic in titles, topic
    for p in dash["panels"]:
        assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert {t["refId"] for t in p["targets"]} == {chr(65 + i) for i in range(len(p["targets"]))}, p["title"]


def test_dashboard_and_alerts_use_known_metrics() -> None:
    used = set()
    for title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names <= set(METRICS), f"{title}: unknown metrics {names - set(METRICS)}"
        used |= names
    assert used == set(METRICS), f"metrics without a panel: {sorted(set(METRICS) - used)}"
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= set(METRICS), rule


def test_metrics_are_exported_by_the_service() -> None:
    pytest.importorskip("prometheus_client", reason="prometheus_client is not installed")
    pytest.importorskip("service.telemetry.instruments", reason="service.telemetry.instruments is not importable")
    from prometheus_client import REGISTRY, generate_latest

    exported = dict(re.findall(r"^# TYPE (synthgen_\w+) (\w+)$", generate_latest(REGISTRY).decode(), re.MULTILINE))
    for name, kind in METRICS.items():
        if name not in GPU_METRICS:
            assert exported.get(name) == kind, f"{name}: the service exports {exported.get(name)}, the dashboards expect {kind}"


@requires_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    # promtool has no "check this expression": make every query a recording rule and check those
    rules = [{"record": f"dashboard:query_{i}:check", "expr": expr} for i, (_, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


# --- scripts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [INSTALL_SCRIPT, SMOKE_SCRIPT], ids=["install", "smoke"])
def test_script_syntax(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert os.access(script, os.X_OK)


@pytest.mark.skipif(
    not all(_runnable(p) for p in (HELM, KUBECTL, KUBERNETES_VALIDATE, HADOLINT))
    or PROMTOOL is None
    or NODE is None
    or not (NPM_DIR / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir(),
    reason=f"deploy tools not all installed: {INSTALL_HINT}",
)
def test_install_script_is_idempotent() -> None:
    # with everything present the script must not download anything
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PIP_NO_INDEX": "1", "npm_config_offline": "true"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("skipped") == 4, proc.stdout
    assert "helm v3." in proc.stdout
