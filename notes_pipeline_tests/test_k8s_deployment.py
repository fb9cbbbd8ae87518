"""The Kubernetes deployment (deploy/k8s, docs/SCALING.md), validated without a cluster.

* ``deploy/k8s/dagster.yaml`` loads through Dagster's own instance loader and every
  configurable class in it (``K8sRunLauncher``, ``QueuedRunCoordinator``, the dagster-postgres
  storages, ...) accepts its section under that class's own ``config_type()``;
* its run queue is ``dagster.yaml``'s: the per-CID lock (one run per ``dagster/partition``
  value) and the dequeue settings are identical, only the number of runs (pods) differs;
* ``deploy/k8s/values.yaml`` renders to that instance: each value is compared with the field the
  official chart's templates (1.13: ``helpers/instance/_run-launcher.tpl``,
  ``_run-coordinator.tpl``, ``_postgresql.tpl``, ``configmap-instance.yaml``) write it to, and
  only keys the chart's values schema allows are used;
* the ConfigMap plus the Secret's keys satisfy ``notes_pipeline.deployment`` in production, and
  no secret value is committed.
"""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes.config_class import ConfigurableClassData
from dagster_k8s import K8sRunLauncher

from notes_pipeline.deployment import ResourceSelectionError, resources_for_environment

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
RELEASE, NAMESPACE = "notes-pipeline", "notes-pipeline"

#: instance sections that name a configurable class (module, class, config)
CLASS_SECTIONS = (
    "scheduler",
    "run_storage",
    "event_log_storage",
    "schedule_storage",
    "run_launcher",
    "run_coordinator",
    "compute_logs",
)

#: keys the chart's values schema allows (schema/charts/dagster/subschema: run_launcher.py
#: K8sRunLauncherConfig and RunK8sConfig, daemon.py QueuedRunCoordinatorConfig; both
#: ``extra = forbid``, so Helm rejects any other key)
K8S_RUN_LAUNCHER_KEYS = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "resources",
    "schedulerName",
    "securityContext",
    "runK8sConfig",
}
RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}
QUEUED_RUN_COORDINATOR_KEYS = {
    "maxConcurrentRuns": "max_concurrent_runs",
    "tagConcurrencyLimits": "tag_concurrency_limits",
    "dequeueIntervalSeconds": "dequeue_interval_seconds",
    "dequeueUseThreads": "dequeue_use_threads",
    "dequeueNumWorkers": "dequeue_num_workers",
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def k8s_instance() -> dict:
    return load(K8S / "dagster.yaml")


@pytest.fixture(scope="module")
def values() -> dict:
    return load(K8S / "values.yaml")


@pytest.fixture
def pg_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Secret-provided variable the instance reads (a dummy: nothing connects)."""
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")


def validate_class_section(section: dict) -> tuple[type, dict]:
    """Resolve ``module``/``class`` and process ``config`` with the class's own schema.

    Returns (class, processed config); raises DagsterInvalidConfigError naming the errors.
    """
    # the same module-name normalisation as the instance (dagster.core -> dagster._core)
    where = ConfigurableClassData(section["module"], section["class"], "{}")
    klass = getattr(importlib.import_module(where.module_name), where.class_name)
    result = process_config(klass.config_type(), section.get("config") or {})
    if not result.success:
        raise DagsterInvalidConfigError(
            f"{section['module']}.{section['class']}: invalid config", result.errors, section
        )
    return klass, dict(result.value)


# ------------------------------------------------------------------ the instance config
def test_k8s_instance_config_passes_dagsters_instance_schema(k8s_instance, pg_password):
    config, custom_instance_class = dagster_instance_config(str(K8S), "dagster.yaml")
    assert custom_instance_class is None
    assert set(CLASS_SECTIONS) <= set(config)
    assert "storage" not in config  # the chart renders the three storages, never `storage`


@pytest.mark.parametrize("section", CLASS_SECTIONS)
def test_each_class_section_passes_its_class_config_schema(k8s_instance, section, pg_password):
    klass, processed = validate_class_section(k8s_instance[section])
    assert processed is not None, klass


def test_the_run_launcher_is_k8s_one_pod_per_run(k8s_instance, pg_password):
    klass, processed = validate_class_section(k8s_instance["run_launcher"])
    assert klass is K8sRunLauncher
    assert processed["env_secrets"] == ["notes-pipeline-env"]
    assert processed["env_config_maps"] == ["notes-pipeline-config"]
    assert processed["fail_pod_on_run_failure"] is True
    # no part of notes_pipeline.instance (the prefork zygote, the pooled storage) on k8s
    modules = [k8s_instance[s]["module"] for s in CLASS_SECTIONS]
    assert not [m for m in modules if m.startswith("notes_pipeline")], modules


def test_the_run_coordinator_is_instantiated_from_its_config(k8s_instance):
    section = k8s_instance["run_coordinator"]
    klass, processed = validate_class_section(section)
    coordinator = klass.from_config_value(
        ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(processed)),
        processed,
    )
    assert isinstance(coordinator, QueuedRunCoordinator)
    assert coordinator.get_run_queue_config().max_concurrent_runs == 16


@pytest.mark.parametrize(
    ("section", "path", "bad"),
    [
        ("run_launcher", ("fail_pod_on_run_failures",), True),  # misspelt key
        ("run_launcher", ("image_pull_policy",), 3),  # wrong type
        ("run_coordinator", ("max_concurrent_runs",), "sixteen"),
        ("run_coordinator", ("tag_concurrency_limits", 0, "limits"), 1),
        ("run_storage", ("postgres_db", "scheme_name"), "postgresql+psycopg2"),
    ],
)
def test_the_validation_rejects_a_broken_section(k8s_instance, section, path, bad, pg_password):
    broken = copy.deepcopy(k8s_instance[section])
    target = broken["config"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    with pytest.raises(DagsterInvalidConfigError):
        validate_class_section(broken)


# ------------------------------------------------------------------ agreement with dagster.yaml
def test_the_queue_keeps_dagster_yaml_per_cid_lock_and_timing(k8s_instance):
    local = load(ROOT / "dagster.yaml")
    here, there = k8s_instance["run_coordinator"], local["run_coordinator"]
    assert here["class"] == there["class"] == "QueuedRunCoordinator"
    assert here["config"]["tag_concurrency_limits"] == there["config"]["tag_concurrency_limits"]
    assert here["config"]["tag_concurrency_limits"] == [
        {"key": tag, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        for tag in ("dagster/partition", "dagster/asset_partition_range_start")
    ]
    for key in ("dequeue_interval_seconds", "dequeue_use_threads"):
        assert here["config"][key] == there["config"][key], key
    # the only deliberate difference: N pods instead of 4 runs on 2 cores
    assert here["config"]["max_concurrent_runs"] >= there["config"]["max_concurrent_runs"]
    for section in ("backfills", "python_logs", "telemetry"):
        assert k8s_instance[section] == local[section], section
    assert k8s_instance["run_monitoring"]["enabled"] is local["run_monitoring"]["enabled"] is True
    assert (
        k8s_instance["run_monitoring"]["poll_interval_seconds"]
        == local["run_monitoring"]["poll_interval_seconds"]
    )
    storage = local["storage"]["custom"]["config"]["postgres_db"]
    for section in ("run_storage", "event_log_storage", "schedule_storage"):
        assert k8s_instance[section]["config"]["postgres_db"]["scheme"] == storage["scheme"]


# ------------------------------------------------------------------ Helm values -> instance
def names(refs: list[dict]) -> list[str]:
    return [ref["name"] for ref in refs if ref.get("name")]


def test_values_use_only_keys_the_chart_schema_allows(values):
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(launcher) <= K8S_RUN_LAUNCHER_KEYS, set(launcher) - K8S_RUN_LAUNCHER_KEYS
    assert set(launcher.get("runK8sConfig", {})) <= set(RUN_K8S_CONFIG_KEYS)
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert set(queued) <= set(QUEUED_RUN_COORDINATOR_KEYS), set(queued)


def test_helm_run_launcher_renders_to_the_instance(values, k8s_instance):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    v = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_launcher = k8s_instance["run_launcher"]
    assert (run_launcher["module"], run_launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    cfg = run_launcher["config"]
    rendered = {
        "load_incluster_config": v["loadInclusterConfig"],
        "job_namespace": v.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": v["imagePullPolicy"],
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": "/opt/dagster/dagster_home",  # the chart's global.dagsterHome default
        "instance_config_map": f"{RELEASE}-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": names(v["envConfigMaps"]),
        "env_secrets": names(v["envSecrets"]),
        "labels": v["labels"],
        "resources": v["resources"],
        "fail_pod_on_run_failure": v["failPodOnRunFailure"],
        "run_k8s_config": {RUN_K8S_CONFIG_KEYS[k]: c for k, c in v["runK8sConfig"].items()},
    }
    assert cfg == rendered


def test_helm_run_queue_renders_to_the_instance(values, k8s_instance):
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] and daemon["runCoordinator"]["enabled"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    rendered = {QUEUED_RUN_COORDINATOR_KEYS[k]: v for k, v in queued.items()}
    assert k8s_instance["run_coordinator"]["config"] == rendered
    monitoring = daemon["runMonitoring"]
    assert k8s_instance["run_monitoring"] == {
        "enabled": monitoring["enabled"],
        "start_timeout_seconds": monitoring["startTimeoutSeconds"],
        "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
    }


def test_helm_postgresql_renders_to_the_instance_without_a_password(values, k8s_instance):
    pg = values["postgresql"]
    assert pg["enabled"] is False  # an external database, not the chart's bundled one
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in pg
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    rendered = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg["postgresqlParams"],
        "scheme": pg["postgresqlScheme"],
    }
    for section in ("run_storage", "event_log_storage", "schedule_storage"):
        assert k8s_instance[section]["config"]["postgres_db"] == rendered, section


def test_helm_remaining_instance_settings_render_to_the_instance(values, k8s_instance):
    assert k8s_instance["python_logs"] == {
        "python_log_level": values["pythonLogs"]["pythonLogLevel"]
    }
    assert k8s_instance["telemetry"] == values["telemetry"]
    for key, section in values["additionalInstanceConfig"].items():
        assert k8s_instance[key] == section, key


# ------------------------------------------------------------------ environment and secrets
def secret_keys() -> list[str]:
    lines = (K8S / "secret-keys.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def k8s_environ() -> dict[str, str]:
    """What a run pod sees: the ConfigMap's data plus every Secret key (dummy values)."""
    config = load(K8S / "notes-pipeline-config.yaml")
    return {**config["data"], **{key: f"secret-{key.lower()}" for key in secret_keys()}}


def test_the_pods_environment_satisfies_the_production_deployment():
    environ = k8s_environ()
    assert environ["NOTES_PIPELINE_ENV"] == "production"
    resources = resources_for_environment(environ, check=True)
    assert type(resources["identity"]).__name__ == "HttpIdentityDirectory"


@pytest.mark.parametrize(
    "missing", ["NOTES_PIPELINE_MONGO_URI", "NOTES_PIPELINE_CRM_DSN", "NOTES_PIPELINE_IDENTITY_URL"]
)
def test_a_missing_variable_would_fail_the_code_location(missing):
    environ = k8s_environ()
    del environ[missing]
    with pytest.raises(ResourceSelectionError) as info:
        resources_for_environment(environ, check=True)
    assert missing in info.value.missing


def test_no_secret_is_committed_and_secrets_come_from_kubernetes_secrets(values):
    config = load(K8S / "notes-pipeline-config.yaml")
    secretish = re.compile(r"(PASSWORD|TOKEN|SECRET|DSN|URI|ROUTING_KEY|ACCESS_KEY)")
    assert not [key for key in config["data"] if secretish.search(key)]
    assert not set(config["data"]) & set(secret_keys())
    for refs in (
        values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"],
        values["dagsterDaemon"]["envSecrets"],
        values["dagsterWebserver"]["envSecrets"],
        values["dagster-user-deployments"]["deployments"][0]["envSecrets"],
    ):
        assert names(refs) == ["notes-pipeline-env"]
    # every password the instance reads is an environment variable, never a literal
    passwords = list(find_keys(load(K8S / "dagster.yaml"), "password"))
    assert passwords and all(p == {"env": "DAGSTER_PG_PASSWORD"} for p in passwords)
    assert not [k for k, _ in walk(values) if re.search(r"(?i)password$", k)]


def walk(node, key: str = ""):
    """(key, value) of every mapping entry in a parsed YAML document, depth first."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def find_keys(node, name: str):
    return (v for k, v in walk(node) if k == name)
