"""deploy/kubernetes/: the manifests validate offline against the Kubernetes schemas
(kubernetes-validate) of every version we support, the KEDA and Prometheus-operator
resources against theirs (node, deploy/kubernetes/validate), and the worker's, the
receiver's and the API's pods keep the promises of deploy/kubernetes/README.md."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped]  # no py.typed
import pytest
import yaml

from worker.cli import _parser
from worker.routing.config import load_routing

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
VALIDATE = KUBERNETES / "validate"

#: The Kubernetes versions the manifests are written for.
SUPPORTED_VERSIONS = ("1.30.0", "1.31.0")

#: Kinds that kubernetes-validate has no schema for: validated by validate/validate.mjs.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}

needs_node_modules = pytest.mark.skipif(
    shutil.which("node") is None or not (VALIDATE / "node_modules").is_dir(),
    reason="node and deploy/kubernetes/validate/node_modules are installed by .ci/run "
    "(npm ci --prefix deploy/kubernetes/validate)",
)


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return loaded


def manifest_files() -> list[Path]:
    return [KUBERNETES / name for name in kustomization()["resources"]]


def resources() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def built_in_resources() -> list[dict[str, Any]]:
    return [doc for doc in resources() if doc["kind"] not in CUSTOM_KINDS]


def resource(kind: str, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        doc for doc in resources() if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def worker_container() -> dict[str, Any]:
    listed: list[dict[str, Any]] = resource("Deployment", "flashcall-worker")["spec"]["template"]["spec"][
        "containers"
    ]
    (container,) = listed
    return container


def containers() -> list[dict[str, Any]]:
    return [
        container
        for doc in resources()
        if doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


def test_every_kustomization_resource_exists() -> None:
    for path in manifest_files():
        assert path.is_file(), path


def test_every_manifest_in_the_directory_is_in_the_kustomization() -> None:
    listed = set(kustomization()["resources"])
    present = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert present == listed


def test_every_resource_is_in_the_flashcall_namespace() -> None:
    for doc in resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "flashcall", doc["metadata"]["name"]


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_built_in_resource_validates_against_the_kubernetes_schema(version: str) -> None:
    assert version in kubernetes_validate.utils.all_versions()
    for doc in built_in_resources():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} on {version}: {error.message}")


def test_the_custom_resources_are_the_ones_the_node_validator_knows() -> None:
    assert {doc["kind"] for doc in resources()} & CUSTOM_KINDS == CUSTOM_KINDS


@needs_node_modules
def test_the_keda_and_prometheus_operator_resources_validate_against_their_schemas() -> None:
    custom = [
        str(path)
        for path in manifest_files()
        if any(doc and doc["kind"] in CUSTOM_KINDS for doc in yaml.safe_load_all(path.read_text()))
    ]
    checked = subprocess.run(
        ["node", "validate.mjs", *custom], cwd=VALIDATE, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": valid") == len(
        [doc for doc in resources() if doc["kind"] in CUSTOM_KINDS]
    ), checked.stdout


@needs_node_modules
def test_the_node_validator_rejects_a_scaled_object_without_a_target(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    scaled_object = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                     "metadata": {"name": "broken"}, "spec": {"triggers": []}}  # fmt: skip
    broken.write_text(yaml.safe_dump(scaled_object))
    checked = subprocess.run(
        ["node", "validate.mjs", str(broken)], cwd=VALIDATE, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 1
    assert "scaleTargetRef" in checked.stdout


def test_the_routing_config_map_holds_the_repository_routing_file() -> None:
    data = resource("ConfigMap", "flashcall-routing")["data"]["routing.yaml"]
    assert data == (ROOT / "routing.yaml").read_text(), "regenerate: deploy/kubernetes/README.md, Routing"


def test_the_routing_config_map_is_a_valid_routing_file(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(resource("ConfigMap", "flashcall-routing")["data"]["routing.yaml"])
    load_routing(path, environ={})


def test_the_worker_reads_routing_from_the_config_map_mounted_as_a_directory() -> None:
    container = worker_container()
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "routing"]
    assert "subPath" not in mount, "a subPath mount never sees Kubernetes' symlink swap"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["FLASHCALL_ROUTING"] == f"{mount['mountPath']}/routing.yaml"
    volumes = resource("Deployment", "flashcall-worker")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "routing"]
    assert volume["configMap"]["name"] == "flashcall-routing"


def test_the_grace_period_outlasts_the_worker_shutdown_timeout() -> None:
    args = worker_container()["args"]
    assert args[0] == "worker"
    parsed, _ = _parser().parse_known_args(args)
    grace = resource("Deployment", "flashcall-worker")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace > parsed.shutdown_timeout


def test_the_worker_probes_run_flashcall_health() -> None:
    container = worker_container()
    assert container["command"] == ["flashcall"]
    assert container["livenessProbe"]["exec"]["command"] == ["flashcall", "health"]
    assert container["readinessProbe"]["exec"]["command"] == ["flashcall", "health", "--ready"]


def test_the_worker_finds_redis_through_sentinel() -> None:
    env = {item["name"]: item.get("value") for item in worker_container()["env"]}
    assert env["REDIS_URL"].startswith("redis+sentinel://")


def test_every_container_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    for container in containers():
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]


def test_the_worker_writes_only_to_empty_dirs() -> None:
    container = worker_container()
    volumes = resource("Deployment", "flashcall-worker")["spec"]["template"]["spec"]["volumes"]
    empty_dirs = {v["name"] for v in volumes if "emptyDir" in v}
    writable = {m["mountPath"]: m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert set(writable.values()) <= empty_dirs
    env = {item["name"]: item.get("value") for item in container["env"]}
    metrics_dir = Path(env["FLASHCALL_METRICS_DIR"])
    assert "/tmp" in writable  # noqa: S108 - the container's /tmp, an emptyDir
    # A subdirectory of a mount: the worker deletes and recreates the metrics directory.
    assert str(metrics_dir) not in writable
    assert any(metrics_dir.is_relative_to(path) for path in writable)


def test_every_container_has_resource_requests_and_limits() -> None:
    for container in containers():
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), container["name"]


def test_no_secret_with_values_is_committed() -> None:
    for path in KUBERNETES.rglob("*.yaml"):
        if "node_modules" in path.parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Secret":
                assert not doc.get("data"), path
                assert not doc.get("stringData"), path


def test_the_workers_secrets_reach_them_from_the_secret_by_env_from() -> None:
    refs = [source["secretRef"]["name"] for source in worker_container()["envFrom"]]
    assert refs == ["flashcall-secrets"]


def callbacks_container() -> dict[str, Any]:
    listed: list[dict[str, Any]] = resource("Deployment", "flashcall-callbacks")["spec"]["template"]["spec"][
        "containers"
    ]
    (container,) = listed
    return container


def test_the_callback_receiver_gets_only_its_own_redis_password_logs_and_redis() -> None:
    container = callbacks_container()
    assert "envFrom" not in container
    env = {variable["name"]: variable for variable in container["env"]}
    assert set(env) == {"FLASHCALL_REDIS_CALLBACKS_PASSWORD", "REDIS_URL", "FLASHCALL_LOG_FORMAT"}
    assert env["FLASHCALL_REDIS_CALLBACKS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "flashcall-callbacks-secrets",
        "key": "FLASHCALL_REDIS_CALLBACKS_PASSWORD",
    }
    assert env["REDIS_URL"]["value"].startswith(
        "redis+sentinel://flashcall-callbacks:$(FLASHCALL_REDIS_CALLBACKS_PASSWORD)@"
    )


def test_the_callback_receiver_listens_on_every_interface_of_its_pod_with_the_default_limits() -> None:
    from worker.callbacks.app import ReceiverLimits

    args = _parser().parse_args(callbacks_container()["args"])
    assert args.host == "0.0.0.0"  # noqa: S104 - the pod's own interfaces, behind its Service
    written = ReceiverLimits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
    )
    assert written == ReceiverLimits()


def api_pod() -> dict[str, Any]:
    pod: dict[str, Any] = resource("Deployment", "flashcall-api")["spec"]["template"]["spec"]
    return pod


def api_container() -> dict[str, Any]:
    (container,) = api_pod()["containers"]
    return cast(dict[str, Any], container)


def test_the_api_gets_only_its_own_secrets() -> None:
    # Never the code secret nor the providers' keys (flashcall-secrets): the API holds one
    # Redis credential, of a user that may call only the producer functions.
    container = api_container()
    assert "envFrom" not in container
    env = {variable["name"]: variable for variable in container["env"]}
    assert set(env) == {
        "FLASHCALL_REDIS_API_PASSWORD",
        "REDIS_URL",
        "FLASHCALL_API_KEYS_FILE",
        "FLASHCALL_LOG_FORMAT",
    }
    assert env["FLASHCALL_REDIS_API_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "flashcall-api-secrets",
        "key": "FLASHCALL_REDIS_API_PASSWORD",
    }
    secrets_used = {
        volume["secret"]["secretName"] for volume in api_pod()["volumes"] if "secret" in volume
    } | {
        variable["valueFrom"]["secretKeyRef"]["name"] for variable in env.values() if "valueFrom" in variable
    }
    assert secrets_used == {"flashcall-api-secrets", "flashcall-api-keys"}


def test_the_api_connects_as_its_own_redis_user_through_sentinel() -> None:
    env = {variable["name"]: variable.get("value") for variable in api_container()["env"]}
    assert env["REDIS_URL"].startswith("redis+sentinel://flashcall-api:$(FLASHCALL_REDIS_API_PASSWORD)@")
    worker_env = {item["name"]: item.get("value") for item in worker_container()["env"]}
    # The same Redis as the workers', only the user differs.
    assert env["REDIS_URL"].partition("@")[2] == worker_env["REDIS_URL"].partition("@")[2]


def test_the_api_reads_its_hashed_keys_from_the_mounted_secret() -> None:
    container = api_container()
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    assert mount["readOnly"] is True
    assert Path(env["FLASHCALL_API_KEYS_FILE"]).parent == Path(mount["mountPath"])
    (volume,) = [v for v in api_pod()["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "flashcall-api-keys"
    # Readable by the pod's group (fsGroup), not by every user of the node's containers.
    assert volume["secret"]["defaultMode"] & 0o007 == 0
    assert api_pod()["securityContext"]["fsGroup"] == api_pod()["securityContext"]["runAsGroup"]


def test_the_api_listens_on_every_interface_of_its_pod() -> None:
    container = api_container()
    assert container["command"] == ["flashcall"]
    args = _parser().parse_args(container["args"])
    assert args.command == "api"
    assert args.host == "0.0.0.0"  # noqa: S104 - the pod's own interfaces, behind its Service
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": args.port, "metrics": args.metrics_port}


def test_the_api_is_live_on_health_and_ready_on_ready() -> None:
    container = api_container()
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}


def test_the_api_grace_period_outlasts_a_checks_wait() -> None:
    args = _parser().parse_args(api_container()["args"])
    assert api_pod()["terminationGracePeriodSeconds"] > args.check_timeout


def test_the_api_pod_runs_like_the_workers() -> None:
    worker_context = resource("Deployment", "flashcall-worker")["spec"]["template"]["spec"]["securityContext"]
    assert api_pod()["securityContext"] == worker_context
    assert api_pod()["automountServiceAccountToken"] is False
    assert api_container()["securityContext"] == worker_container()["securityContext"]


def test_the_api_service_serves_its_port_and_its_metrics() -> None:
    service = resource("Service", "flashcall-api")
    labels = resource("Deployment", "flashcall-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    args = _parser().parse_args(api_container()["args"])
    ports = {port["name"]: (port["port"], port["targetPort"]) for port in service["spec"]["ports"]}
    assert ports == {"http": (args.port, "http"), "metrics": (args.metrics_port, "metrics")}


def test_the_api_service_monitor_scrapes_the_api_services_metrics_port() -> None:
    monitor = resource("ServiceMonitor", "flashcall-api")["spec"]
    service = resource("Service", "flashcall-api")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["endpoints"]] == ["metrics"]


def test_the_disruption_budget_covers_the_api_pods() -> None:
    selector = resource("PodDisruptionBudget", "flashcall-api")["spec"]["selector"]["matchLabels"]
    labels = resource("Deployment", "flashcall-api")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_the_scaled_object_watches_the_dramatiq_verification_queue() -> None:
    from worker.core import keys

    triggers = resource("ScaledObject", "flashcall-worker")["spec"]["triggers"]
    (sentinel,) = [t for t in triggers if t["type"] == "redis-sentinel"]
    assert sentinel["metadata"]["listName"] == keys.queue(keys.VERIFY_QUEUE)
    assert sentinel["authenticationRef"]["name"] == "flashcall-redis"


def test_the_scaled_object_scales_on_the_backlog_metric() -> None:
    triggers = resource("ScaledObject", "flashcall-worker")["spec"]["triggers"]
    (prometheus,) = [t for t in triggers if t["type"] == "prometheus"]
    assert "flashcall_backlog" in prometheus["metadata"]["query"]


def test_the_scaled_object_targets_the_worker_deployment() -> None:
    target = resource("ScaledObject", "flashcall-worker")["spec"]["scaleTargetRef"]["name"]
    assert resource("Deployment", target)


def test_the_disruption_budget_covers_the_worker_pods() -> None:
    selector = resource("PodDisruptionBudget", "flashcall-worker")["spec"]["selector"]["matchLabels"]
    labels = resource("Deployment", "flashcall-worker")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
