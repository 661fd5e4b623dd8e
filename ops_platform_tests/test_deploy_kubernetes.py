"""deploy/kubernetes: the Celery workers' manifest validated against Kubernetes' own schema
(kubernetes-validate, offline, strict: an unknown field is an error), running the same command as
the systemd worker unit; the Helm values checked against the rules the Dagster chart's
values.schema.json states for the parts they set (the schema itself is not available offline)."""

from __future__ import annotations

import yaml

from ops_platform_tests.deploy_units import DEPLOY, ENV_FILES, WORKER_UNIT, command, env_file, unit

KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30"
# From the chart's values.schema.json (dagster 1.13): the run launcher types and the keys their
# config objects allow (additionalProperties: false there).
RUN_LAUNCHER_TYPES = {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"}
K8S_RUN_LAUNCHER_KEYS = {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                         "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                         "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"}
RUN_K8S_CONFIG_KEYS = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"}
QUEUED_COORDINATOR_KEYS = {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
                           "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"}


def manifests() -> list[dict]:
    return [document for document in yaml.safe_load_all((KUBERNETES / "celery-workers.yaml").read_text())
            if document]


def values() -> dict:
    return yaml.safe_load((KUBERNETES / "values.yaml").read_text())


def test_the_worker_manifest_is_valid_kubernetes_and_runs_the_units_command():
    import kubernetes_validate

    (deployment,) = manifests()
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    systemd = command(unit(WORKER_UNIT)["ExecStart"][0], {"%": "%"}, {})
    assert container["command"] == ["celery", *systemd[1:]]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == \
        int(unit(WORKER_UNIT)["TimeoutStopSec"][0])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def test_a_bad_field_is_caught_by_the_validation():
    import kubernetes_validate
    import pytest

    (deployment,) = manifests()
    deployment["spec"]["template"]["spec"]["containers"][0]["comand"] = ["celery"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_helm_values_run_the_code_location_with_the_run_launcher_and_no_secret():
    chart = values()
    (deployment,) = chart["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "ops_platform.definitions"]
    launcher = chart["runLauncher"]
    assert launcher["type"] in RUN_LAUNCHER_TYPES and launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]) == {"k8sRunLauncher"}
    assert set(launcher["config"]["k8sRunLauncher"]) <= K8S_RUN_LAUNCHER_KEYS
    assert set(launcher["config"]["k8sRunLauncher"]["runK8sConfig"]) <= RUN_K8S_CONFIG_KEYS
    coordinator = chart["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    assert set(coordinator["config"]["queuedRunCoordinator"]) <= QUEUED_COORDINATOR_KEYS
    # the same run monitoring as the one-host instance (deploy/dagster.postgres.yaml)
    instance = yaml.safe_load((DEPLOY / "dagster.postgres.yaml").read_text())["run_monitoring"]
    monitoring = chart["dagsterDaemon"]["runMonitoring"]
    assert monitoring == {"enabled": instance["enabled"],
                          "startTimeoutSeconds": instance["start_timeout_seconds"],
                          "maxResumeRunAttempts": instance["max_resume_run_attempts"],
                          "pollIntervalSeconds": instance["poll_interval_seconds"],
                          "freeSlotsAfterRunEndSeconds": instance["free_slots_after_run_end_seconds"]}
    secrets = {entry["name"] for entry in deployment["envSecrets"]}
    assert secrets == {entry["name"] for entry in launcher["config"]["k8sRunLauncher"]["envSecrets"]}
    (worker,) = manifests()
    assert {source["secretRef"]["name"] for source in worker["spec"]["template"]["spec"]["containers"][0]["envFrom"]} \
        == secrets
    assert chart["postgresql"]["enabled"] is False and "postgresqlPassword" not in chart["postgresql"]


def test_no_secret_is_written_in_the_manifests():
    """Secrets come from Kubernetes Secrets (envFrom, secretKeyRef): no key that names a password,
    token or secret holds a value, and no value of .env.example's settings is copied in."""
    def strings(node, key=""):
        if isinstance(node, dict):
            for child_key, child in node.items():
                yield from strings(child, str(child_key))
        elif isinstance(node, list):
            for child in node:
                yield from strings(child, key)
        elif isinstance(node, str):
            yield key, node

    found = list(strings(values())) + [pair for document in manifests() for pair in strings(document)]
    assert not [(key, value) for key, value in found if key.lower().endswith(("password", "token", "secret"))]
    settings = env_file(ENV_FILES["/etc/ops_platform/ops_platform.env"])
    copied = {value for _, value in found} & {value for value in settings.values() if len(value) > 8}
    assert not copied, copied
