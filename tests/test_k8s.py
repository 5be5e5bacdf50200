"""The Kubernetes manifests (k8s/): one KubeRay RayService that runs configs/serve_config.yaml as it is.

There is no cluster here, so the manifests are checked by parsing: the Serve config is the shipped
one; keys come only from a Secret; every Ray process runs with the measured Serve flags; the head runs
no replicas; every container has resources; the workers hold every replica; an old cluster outlives
the longest call on it; the GCS keeps its state in the manifests' Redis, whose password is a Secret's;
and kustomize applies exactly the files that exist. (tests/test_gcs_fault_tolerance.py kills a GCS set
up this way under load.)
"""

from __future__ import annotations

import importlib.util
import re
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from serve_app.cluster import ingress_env
from serve_app.config import SIMULATOR_KEY, ModelServerArgs
from serve_app.deployment_constants import HARD_STOP_ENV, shutdown_s
from serve_app.serve_config import IMPORT_PATH, check

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SERVE_CONFIG_FILE = ROOT / "configs" / "serve_config.yaml"

# Every YAML file in k8s/ and the objects it holds; a new file needs its line here.
MANIFESTS = {
    "rayservice.yaml": [("ray.io/v1", "RayService")],
    "kustomization.yaml": [("kustomize.config.k8s.io/v1beta1", "Kustomization")],
    "redis.yaml": [("v1", "Service"), ("v1", "PersistentVolumeClaim"), ("apps/v1", "Deployment")],
    "secret.example.yaml": [("v1", "Secret"), ("v1", "Secret")],
    "workload-identity.example.yaml": [("v1", "ServiceAccount")],
}
SECRET = "serve-app-keys"
REDIS_SECRET = {"name": "serve-app-redis", "key": "password"}
# Environment variables holding secrets, by name (serve_app.serve_config applies the same rule to runtime_env).
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
DEPRECATED_FIELDS = ("serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold")
# Margin of an old cluster's life over the longest call: switching traffic is not instantaneous.
DELETION_MARGIN_S = 60


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc is not None]


RAY_SERVICE = load("rayservice.yaml")[0]
SPEC = RAY_SERVICE["spec"]
CLUSTER = SPEC["rayClusterConfig"]
KUSTOMIZATION = load("kustomization.yaml")[0]
SERVE_CONFIG = yaml.safe_load(SERVE_CONFIG_FILE.read_text())
EMBEDDED = yaml.safe_load(SPEC["serveConfigV2"])

GROUPS: dict[str, dict[str, Any]] = {
    "head": CLUSTER["headGroupSpec"],
    **{f"workers/{group['groupName']}": group for group in CLUSTER.get("workerGroupSpecs", [])},
}
WORKER_GROUPS = {name: group for name, group in GROUPS.items() if name != "head"}
# KubeRay runs Ray in the first container of each pod; any others are sidecars.
RAY_CONTAINERS = {name: group["template"]["spec"]["containers"][0] for name, group in GROUPS.items()}
ALL_CONTAINERS = {
    f"{name}/{container['name']}": container
    for name, group in GROUPS.items()
    for key in ("initContainers", "containers")
    for container in group["template"]["spec"].get(key, [])
}
REDIS_SERVICE, REDIS_VOLUME_CLAIM, REDIS = load("redis.yaml")
REDIS_POD = REDIS["spec"]["template"]["spec"]
REDIS_CONTAINER = REDIS_POD["containers"][0]
# Every container the manifests run: the Ray pods' and Redis's.
POD_CONTAINERS = {**ALL_CONTAINERS, f"redis/{REDIS_CONTAINER['name']}": REDIS_CONTAINER}


def model_servers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {app["name"]: app for app in config["applications"] if app.get("import_path") == IMPORT_PATH}


def model_server_args(config: dict[str, Any]) -> dict[str, ModelServerArgs]:
    return {name: ModelServerArgs.model_validate(app["args"]) for name, app in model_servers(config).items()}


LONGEST_CALL_S = max(args.timeouts.total_s for args in model_server_args(EMBEDDED).values())


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def cpus(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("5", "500m", 2) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def replica_slots(group: dict[str, Any]) -> float:
    """CPUs a worker pod offers Ray: its num-cpus, else its container's CPU limit (KubeRay's rule)."""
    params = group.get("rayStartParams") or {}
    if "num-cpus" in params:
        return float(params["num-cpus"])
    return cpus(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])


def replica_cpus(app: dict[str, Any]) -> float:
    """CPUs an application's replicas reserve. An app that overrides no deployment runs the one replica
    its code declares, at Serve's default of one CPU (true of the simulator and the judge example)."""
    deployments = app.get("deployments") or [{}]
    return sum(d.get("num_replicas", 1) * (d.get("ray_actor_options") or {}).get("num_cpus", 1) for d in deployments)


def sync_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_serve_config", K8S / "sync_serve_config.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the files --------------------------------------------------------------------------------------


def test_k8s_holds_exactly_the_listed_manifests() -> None:
    found = sorted(path.name for path in K8S.iterdir() if path.suffix in (".yaml", ".yml"))
    assert found == sorted(MANIFESTS)


@pytest.mark.parametrize("name, kinds", MANIFESTS.items(), ids=MANIFESTS.keys())
def test_each_manifest_parses_to_its_kinds(name: str, kinds: list[tuple[str, str]]) -> None:
    assert [(doc.get("apiVersion"), doc.get("kind")) for doc in load(name)] == kinds


def test_kustomization_applies_the_rayservice_and_its_redis_and_names_only_files_that_exist() -> None:
    resources = KUSTOMIZATION.get("resources", [])
    generated = [env for gen in KUSTOMIZATION.get("secretGenerator", []) for env in gen.get("envs", [])]
    assert {"rayservice.yaml", "redis.yaml"} <= set(resources)
    assert [name for name in resources + generated if not (K8S / name).is_file()] == []


def test_kustomization_leaves_the_example_secret_out() -> None:
    assert "secret.example.yaml" not in KUSTOMIZATION.get("resources", [])


def test_the_workload_identity_example_is_optional_and_names_an_identity() -> None:
    account = load("workload-identity.example.yaml")[0]
    assert "workload-identity.example.yaml" not in KUSTOMIZATION.get("resources", [])
    assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
    assert "serviceAccountName: " + account["metadata"]["name"] in (K8S / "rayservice.yaml").read_text()


def test_every_container_runs_the_one_image_kustomize_retags() -> None:
    images = {container["image"] for container in ALL_CONTAINERS.values()}
    assert len(images) == 1, images
    name = re.sub(r":[^/:]+$", "", images.pop())
    assert name in [image["name"] for image in KUSTOMIZATION.get("images", [])]


def test_the_image_is_rays_own_at_the_tested_version_with_this_project_installed() -> None:
    dockerfile = (K8S / "Dockerfile").read_text()
    pinned = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert pinned and pinned.group(1) == version("ray")
    # Python 3.13: the version NeMo Gym 0.7 runs, so that its drivers can join the cluster.
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py313$", dockerfile, re.MULTILINE)
    assert re.search(r"pip install .* \.\s", dockerfile)


def test_the_cluster_runs_the_tested_ray_version() -> None:
    assert CLUSTER["rayVersion"] == version("ray")


# --- serveConfigV2 ----------------------------------------------------------------------------------


def test_serve_config_v2_is_the_shipped_serve_config() -> None:
    assert EMBEDDED == SERVE_CONFIG


def test_serve_config_v2_is_byte_for_byte_what_the_sync_script_writes() -> None:
    current = (K8S / "rayservice.yaml").read_text()
    assert sync_script().embed(current, SERVE_CONFIG_FILE.read_text()) == current, (
        "k8s/rayservice.yaml is stale: run .venv/bin/python k8s/sync_serve_config.py"
    )


def test_the_sync_script_replaces_only_the_serve_config_v2_block() -> None:
    manifest = "kind: RayService\nspec:\n  before: 1\n  serveConfigV2: |\n    old: 1\n\n    older: 2\n  after: 2\n"
    config = "# a comment\napplications:\n  - name: a\n\n    route_prefix: /a\n"
    result = yaml.safe_load(sync_script().embed(manifest, config))
    assert result["spec"] == {"before": 1, "serveConfigV2": config, "after": 2}


def test_the_embedded_serve_config_passes_check_config() -> None:
    assert check(EMBEDDED) == []


def test_every_model_server_requires_client_keys() -> None:
    args = model_server_args(EMBEDDED)
    assert args, "no model server in serveConfigV2"
    assert [name for name, a in args.items() if a.inbound_api_keys_env is None] == [], (
        "add `inbound_api_keys_env: INBOUND_API_KEYS` to these model servers' args in configs/serve_config.yaml"
    )


# --- keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", RAY_CONTAINERS)
def test_every_key_the_serve_config_names_comes_from_the_secret(where: str) -> None:
    env = env_of(RAY_CONTAINERS[where])
    names = {a.openai_api_key_env for a in model_server_args(EMBEDDED).values()}
    names |= {a.inbound_api_keys_env for a in model_server_args(EMBEDDED).values() if a.inbound_api_keys_env}
    wrong = {
        name: env.get(name)
        for name in sorted(names)
        if (env.get(name) or {}).get("valueFrom", {}).get("secretKeyRef") != {"name": SECRET, "key": name}
    }
    assert wrong == {}


@pytest.mark.parametrize("where", POD_CONTAINERS)
def test_no_secret_is_written_into_a_container(where: str) -> None:
    container = POD_CONTAINERS[where]
    inline = [
        entry["name"]
        for entry in container.get("env", [])
        if SECRET_NAME.search(entry["name"]) and ("value" in entry or "secretKeyRef" not in entry.get("valueFrom", {}))
    ]
    assert inline == []
    assert [source for source in container.get("envFrom", []) if "configMapRef" in source] == []


def test_the_example_secret_holds_every_key_the_containers_read_and_no_real_value() -> None:
    secret = load("secret.example.yaml")[0]
    read = {
        entry["valueFrom"]["secretKeyRef"]["key"]
        for container in ALL_CONTAINERS.values()
        for entry in container.get("env", [])
        if entry.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET
    }
    assert secret["metadata"]["name"] == SECRET
    assert set(secret["stringData"]) == read
    # Only the simulator's own key, or empty: applied by mistake, the model servers refuse to start.
    assert {value for value in secret["stringData"].values()} <= {SIMULATOR_KEY, ""}


# --- the Ray cluster --------------------------------------------------------------------------------


def test_the_cluster_has_a_head_and_a_worker_group() -> None:
    assert "head" in RAY_CONTAINERS and WORKER_GROUPS


@pytest.mark.parametrize("where", RAY_CONTAINERS)
def test_every_ray_container_runs_exactly_the_measured_serve_flags(where: str) -> None:
    # What `python -m serve_app serve` starts Ray with for the same calls, hard stop included.
    env = RAY_CONTAINERS[where].get("env", [])
    serve_flags = {entry["name"]: entry.get("value") for entry in env if entry["name"].startswith("RAY_SERVE_")}
    assert serve_flags == ingress_env("haproxy", LONGEST_CALL_S)


def test_the_head_runs_no_replicas() -> None:
    assert CLUSTER["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


@pytest.mark.parametrize("where", GROUPS)
def test_ray_start_params_are_strings(where: str) -> None:
    params = GROUPS[where].get("rayStartParams") or {}
    assert {key: value for key, value in params.items() if not isinstance(value, str)} == {}


@pytest.mark.parametrize("where", POD_CONTAINERS)
def test_every_container_requests_and_limits_cpu_and_memory(where: str) -> None:
    resources = POD_CONTAINERS[where].get("resources", {})
    missing = [
        f"{kind}.{name}"
        for kind in ("requests", "limits")
        for name in ("cpu", "memory")
        if name not in resources.get(kind, {})
    ]
    assert missing == []


def test_the_autoscaler_sidecar_requests_and_limits_cpu_and_memory() -> None:
    if not CLUSTER.get("enableInTreeAutoscaling"):
        pytest.skip("no autoscaler")
    resources = CLUSTER["autoscalerOptions"]["resources"]
    assert all(name in resources.get(kind, {}) for kind in ("requests", "limits") for name in ("cpu", "memory"))


def test_the_fewest_workers_hold_every_replica_and_a_model_server_restart() -> None:
    apps = EMBEDDED["applications"]
    needed = sum(replica_cpus(app) for app in apps)
    # An in-place restart starts new replicas while the old ones drain (graceful_shutdown_timeout_s).
    restart = max(replica_cpus(app) for app in model_servers(EMBEDDED).values())
    capacity = sum(group["minReplicas"] * replica_slots(group) for group in WORKER_GROUPS.values())
    assert capacity >= needed + restart, f"{capacity} CPUs for {needed} in replicas plus {restart} to restart one"


@pytest.mark.parametrize("where", WORKER_GROUPS)
def test_worker_pods_keep_a_core_for_haproxy_beyond_their_replica_slots(where: str) -> None:
    group = WORKER_GROUPS[where]
    limit = cpus(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert limit >= replica_slots(group) + 1


@pytest.mark.parametrize("where", WORKER_GROUPS)
def test_worker_group_bounds_are_consistent(where: str) -> None:
    group = WORKER_GROUPS[where]
    assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_serve_port_is_the_serve_configs_http_port() -> None:
    ports = {
        where: [p["containerPort"] for p in c.get("ports", []) if p.get("name") == "serve"]
        for where, c in RAY_CONTAINERS.items()
    }
    assert ports["head"] == [EMBEDDED["http_options"]["port"]]  # KubeRay's Serve Service takes it from the head
    assert all(found in ([], ports["head"]) for found in ports.values())


# --- upgrades ---------------------------------------------------------------------------------------


def test_an_old_cluster_outlives_the_longest_call_on_it() -> None:
    drain = max(
        d.get("graceful_shutdown_timeout_s", 20)
        for app in model_servers(EMBEDDED).values()
        for d in app.get("deployments", [])
    )
    delay = SPEC["rayClusterDeletionDelaySeconds"]
    assert delay >= LONGEST_CALL_S + DELETION_MARGIN_S and delay >= drain


def test_a_replica_drains_for_the_longest_call_and_its_margin() -> None:
    drains = [
        d.get("graceful_shutdown_timeout_s", 20) for app in model_servers(EMBEDDED).values() for d in app["deployments"]
    ]
    assert drains and min(drains) >= shutdown_s(LONGEST_CALL_S)


@pytest.mark.parametrize("where", RAY_CONTAINERS)
def test_haproxy_reloads_do_not_cut_the_longest_call(where: str) -> None:
    hard_stop = float(env_of(RAY_CONTAINERS[where])[HARD_STOP_ENV]["value"])
    assert hard_stop > LONGEST_CALL_S
    assert check(EMBEDDED, hard_stop_after_s=hard_stop) == []


def test_an_upgrade_builds_a_new_cluster_beside_the_old() -> None:
    assert SPEC["upgradeStrategy"]["type"] == "NewCluster"


def test_no_deprecated_rayservice_field_is_used() -> None:
    assert [field for field in DEPRECATED_FIELDS if field in SPEC] == []


# --- head failure: GCS fault tolerance ----------------------------------------------------------------


def test_the_gcs_keeps_its_state_in_the_redis_of_the_manifests() -> None:
    options = CLUSTER["gcsFaultToleranceOptions"]
    port = REDIS_SERVICE["spec"]["ports"][0]["port"]
    assert options["redisAddress"] == f"redis://{REDIS_SERVICE['metadata']['name']}:{port}"
    assert REDIS_SERVICE["spec"]["selector"] == REDIS["spec"]["template"]["metadata"]["labels"]


def test_the_gcs_and_redis_read_one_password_from_one_secret() -> None:
    assert CLUSTER["gcsFaultToleranceOptions"]["redisPassword"] == {"valueFrom": {"secretKeyRef": REDIS_SECRET}}
    assert env_of(REDIS_CONTAINER)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == REDIS_SECRET
    example = load("secret.example.yaml")[1]
    assert example["metadata"]["name"] == REDIS_SECRET["name"]
    assert example["stringData"] == {REDIS_SECRET["key"]: ""}


def test_redis_refuses_to_start_without_a_password_and_never_takes_it_on_its_command_line() -> None:
    script = " ".join(REDIS_CONTAINER["command"] + REDIS_CONTAINER["args"])
    assert 'test -n "$REDIS_PASSWORD" ||' in script
    assert "--requirepass" not in script and "$(REDIS_PASSWORD)" not in script


def test_redis_keeps_the_gcs_state_on_its_volume_across_its_own_restarts() -> None:
    args = " ".join(REDIS_CONTAINER["args"])
    mounts = {m["name"]: m["mountPath"] for m in REDIS_CONTAINER["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in REDIS_POD["volumes"]}
    assert "--appendonly yes" in args and f"--dir {mounts['data']}" in args
    assert claims["data"] == REDIS_VOLUME_CLAIM["metadata"]["name"]
    # One pod at a time on the volume; a single-shard Redis is what KubeRay supports.
    assert REDIS["spec"]["replicas"] == 1 and REDIS["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("where", GROUPS)
def test_nothing_beside_gcs_fault_tolerance_options_configures_the_gcs_storage(where: str) -> None:
    # KubeRay derives these from gcsFaultToleranceOptions, and rejects a cluster that sets both; a fixed
    # storage namespace would have an old and a new cluster of an upgrade share one GCS state.
    params = GROUPS[where].get("rayStartParams") or {}
    env = env_of(RAY_CONTAINERS[where])
    assert "redis-password" not in params
    assert [n for n in ("RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "RAY_external_storage_namespace") if n in env] == []
    assert "externalStorageNamespace" not in CLUSTER["gcsFaultToleranceOptions"]
