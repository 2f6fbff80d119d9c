"""Deployment files: the Helm chart, docker-compose stack, Dockerfile and tool installer.

The Helm, kubernetes-validate and hadolint checks use the binaries that
``scripts/install_deploy_tools.sh`` puts under ``.tools/``; each is skipped (with the reason)
when its tool is missing. The static checks of the compose stack and the Dockerfile always run.
"""

from __future__ import annotations

import functools
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
KUBERNETES_VALIDATE = TOOLS / "venv" / "bin" / "kubernetes-validate"
HADOLINT = TOOLS / "venv" / "bin" / "hadolint"
CHART = ROOT / "helm" / "synthgen"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
INSTALL_SCRIPT = ROOT / "scripts" / "install_deploy_tools.sh"

WORKER_HEALTH = ["synthgen", "health", "--worker"]
GPU = "nvidia.com/gpu"
EXTERNAL_URL = "redis://x:6379/0"

INSTALL_HINT = "run scripts/install_deploy_tools.sh"


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _helm_works() -> bool:
    if not _runnable(HELM):
        return False
    try:
        return subprocess.run([str(HELM), "version", "--short"], capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:  # e.g. a binary for another architecture
        return False


requires_helm = pytest.mark.skipif(not _helm_works(), reason=f"no runnable helm at {HELM}: {INSTALL_HINT}")

# Value sets the chart is rendered with (helm --set arguments).
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    "external-redis": ("--set", "redis.enabled=false", "--set", f"externalRedis.url={EXTERNAL_URL}"),
    "no-gpu": ("--set", "worker.gpu.count=0"),
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
}


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
def render(*args: str) -> tuple[dict[str, Any], ...]:
    """The chart rendered with the given helm arguments, as parsed manifests (cached)."""
    out = helm("template", "t", str(CHART), "--namespace", "synthgen", *args).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, suffix: str = "") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def one(docs: tuple[dict[str, Any], ...], kind: str, suffix: str = "") -> dict[str, Any]:
    found = find(docs, kind, suffix)
    assert len(found) == 1, f"expected one {kind} named *{suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def workloads(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def checksum(docs: tuple[dict[str, Any], ...], suffix: str) -> str:
    return one(docs, "Deployment", suffix)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def configmap_data(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return one(docs, "ConfigMap")["data"]


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
    in_cluster_redis = "redis.enabled=false" not in values
    expected = {
        ("ConfigMap", "t-synthgen"),
        ("Deployment", "t-synthgen-api"),
        ("Deployment", "t-synthgen-worker"),
        ("Service", "t-synthgen-api"),
    }
    if in_cluster_redis:
        expected |= {("StatefulSet", "t-synthgen-redis"), ("Service", "t-synthgen-redis")}
    if "serviceAccount.create=false" not in values:
        expected.add(("ServiceAccount", "t-synthgen"))
    assert set(kinds) == expected
    assert len(kinds) == len(expected), f"duplicate resources: {kinds}"
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "t"
        assert labels["app.kubernetes.io/name"] == "synthgen"
    api_service = one(docs, "Service", "-api")
    assert api_service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    api = one(docs, "Deployment", "-api")
    assert api["spec"]["selector"]["matchLabels"].items() <= api["spec"]["template"]["metadata"]["labels"].items()


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
            if "worker.gpu.count=0" in values:
                assert "CPU only" in text and "-gpu" not in text, name
            else:
                assert f"1 x {GPU}" in text and "synthgen:0.1.0-gpu" in text, name
            if "redis.enabled=false" in values:
                assert "external" in text and "StatefulSet" not in text, name
            else:
                assert "appendonly yes" in text, name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# --- Helm: security and probes ---------------------------------------------------------------


@requires_helm
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_security_context_restricted(values: tuple[str, ...]) -> None:
    docs = render(*values)
    assert workloads(docs)
    for w in workloads(docs):
        pod = w["spec"]["template"]["spec"]
        where = w["metadata"]["name"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc.get("runAsUser", 1) != 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, where
        assert pod["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc.get("runAsUser", 1) != 0, where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: read-only root needs a writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], where


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
    known = {"SYNTHGEN_" + name.upper() for name in settings.Settings.model_fields} | {"REDIS_URL"}
    data = configmap_data(render())
    assert set(data) <= known, f"ConfigMap keys the service does not read: {sorted(set(data) - known)}"
    worker = container(one(render(), "Deployment", "-worker"), "worker")
    assert {e["name"] for e in worker["env"]} <= known


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
    ],
    ids=["redis-twice", "no-redis", "negative-gpu", "zero-batch", "log-level", "url-scheme", "provider", "typo"],
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


# --- kubernetes-validate -----------------------------------------------------------------------


@requires_helm
@pytest.mark.skipif(
    not _runnable(KUBERNETES_VALIDATE), reason=f"kubernetes-validate not found at {KUBERNETES_VALIDATE}: {INSTALL_HINT}"
)
@pytest.mark.parametrize("k8s_version", ["1.30.0", None], ids=["k8s-1.30", "k8s-newest"])
def test_manifests_validate_against_kubernetes_schema(tmp_path: Path, k8s_version: str | None) -> None:
    files = []
    for name, values in VALUE_SETS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(helm("template", "t", str(CHART), "--namespace", "synthgen", *values).stdout)
        files.append(str(path))
    version = ["-k", k8s_version] if k8s_version else []
    proc = subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", "--quiet", *version, *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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


# --- docker-compose and Prometheus -----------------------------------------------------------------


def test_compose_stack() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"redis", "api", "worker", "prometheus"} <= set(services)

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

    mounts = [v.split(":") for v in services["prometheus"]["volumes"]]
    config = [(COMPOSE.parent / src).resolve() for src, dst, *_ in mounts if dst == "/etc/prometheus/prometheus.yml"]
    assert config == [PROMETHEUS]
    for name, volume in ((n, v.split(":")[0]) for n, s in services.items() for v in s.get("volumes", [])):
        if not volume.startswith("."):
            assert volume in compose["volumes"], f"{name}: undeclared volume {volume}"


def test_prometheus_scrapes_api_and_workers() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose_services = yaml.safe_load(COMPOSE.read_text())["services"]
    scraped: set[str] = set()
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for sd in job.get("dns_sd_configs", []):
            assert sd["port"] == 8000
            scraped |= set(sd["names"])
    assert {"api", "worker"} <= scraped
    assert scraped <= set(compose_services)


# --- tool installer ------------------------------------------------------------------------------


def test_install_script_syntax() -> None:
    proc = subprocess.run(["bash", "-n", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert os.access(INSTALL_SCRIPT, os.X_OK)


@pytest.mark.skipif(
    not all(_runnable(p) for p in (HELM, TOOLS / "bin" / "kubectl", KUBERNETES_VALIDATE, HADOLINT)),
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
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("skipped") == 2, proc.stdout
    assert "helm v3." in proc.stdout
