"""Template tests: `helm template` with defaults and each toggle, plus schema rejections and `helm lint`."""

from __future__ import annotations

import re

import pytest
from fms_operator import __main__ as operator_main
from fms_operator import rbac

from conftest import CHART


def test_defaults_render_the_operator_objects(helm):
    out = helm.template()
    assert sorted(out.kinds()) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"]
    )
    for obj in out.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "fms"
        assert labels["app.kubernetes.io/name"] == "fms-operator"
        assert labels["helm.sh/chart"] == "fms-operator-0.1.0"


def test_deployment_is_locked_down(helm):
    out = helm.template()
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    ctr = out.container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert ctr["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert ctr["resources"]["limits"]["memory"] == "512Mi"
    # A read-only root still needs somewhere to write temp files.
    assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"]
    assert pod["serviceAccountName"] == "fms-fms-operator"


def test_probes_hit_kopf_liveness_endpoint(helm):
    ctr = helm.template("operator.healthPort=8181").container()
    assert "--liveness=http://0.0.0.0:8181/healthz" in ctr["args"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports["health"] == 8181
    for probe in ("livenessProbe", "readinessProbe"):
        assert ctr[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def _parsed(args: list[str], env: dict[str, str] | None = None):
    # The operator's own argument parser: a flag it does not know fails here, not in a crash-looping pod.
    # $(VAR) is expanded by the kubelet from the container's env before the process sees it.
    env = env or {}
    return operator_main.parse_args([re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args])


def test_cluster_wide_and_standalone_by_default(helm):
    parsed = _parsed(helm.template().container()["args"])
    assert parsed.namespace == []
    assert parsed.peering is None
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"
    assert parsed.metrics_port == 9090
    assert parsed.verbose is False


def test_watch_namespaces(helm):
    parsed = _parsed(helm.template("operator.watchNamespaces={team-a,team-b}").container()["args"])
    assert parsed.namespace == ["team-a", "team-b"]


def test_debug_log_level(helm):
    assert _parsed(helm.template("operator.logLevel=debug").container()["args"]).verbose is True


def test_metrics_port_reaches_the_operator_and_the_pod_port(helm):
    ctr = helm.template("operator.metricsPort=9400").container()
    assert _parsed(ctr["args"]).metrics_port == 9400
    assert {"name": "metrics", "containerPort": 9400, "protocol": "TCP"} in ctr["ports"]


def test_extra_args_and_env(helm):
    ctr = helm.template("operator.extraArgs={--verbose}", "operator.extraEnv[0].name=A",
                        "operator.extraEnv[0].value=b").container()
    assert ctr["args"][-1] == "--verbose"
    assert ctr["env"] == [{"name": "A", "value": "b"}]


def test_cluster_role_rules_equal_the_operators_own(helm):
    role = helm.template().one("ClusterRole")
    assert role["rules"] == rbac.cluster_role_rules()
    binding = helm.template().one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fms-fms-operator", "namespace": "fms-system"}]


def test_rbac_and_service_account_toggles(helm):
    kinds = helm.template("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops").kinds()
    assert "ClusterRole" not in kinds and "ServiceAccount" not in kinds
    pod = helm.template("serviceAccount.create=false").workload()["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default"


def test_metrics_service_selects_the_operator_pods(helm):
    out = helm.template("metrics.service.port=9300")
    svc = out.one("Service")
    pod_labels = out.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9300, "targetPort": "metrics", "protocol": "TCP"}]
    assert "Service" not in helm.template("metrics.service.enabled=false").kinds()


def test_service_monitor_toggle(helm):
    assert "ServiceMonitor" not in helm.template().kinds()
    sm = helm.template("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom").one("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["fms-system"]}
    err = helm.fails("metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false")
    assert "needs metrics.service.enabled=true" in err


def test_pod_monitor_scrapes_worker_pods(helm, sample_worker_pod):
    assert "PodMonitor" not in helm.template().kinds()
    pm = helm.template("metrics.podMonitor.enabled=true").one("PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    selector = pm["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= sample_worker_pod["metadata"]["labels"].items()
    ports = {p["name"] for p in sample_worker_pod["spec"]["containers"][0]["ports"]}
    assert "metrics" in ports
    pm = helm.template("metrics.podMonitor.enabled=true", "metrics.podMonitor.namespaces={ml}").one("PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_peering_runs_a_stateful_set_with_a_priority_per_pod(helm):
    out = helm.template("replicaCount=3", "peering.enabled=true")
    assert "Deployment" not in out.kinds()
    sts = out.one("StatefulSet")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    ctr = out.container()
    env = {e["name"]: e for e in ctr["env"]}
    # The StatefulSet controller labels each pod with its index; equal kopf priorities would pause every peer.
    assert env["FMS_OPERATOR_PRIORITY"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    parsed = _parsed(ctr["args"], {"FMS_OPERATOR_PRIORITY": "2"})
    assert parsed.peering == out.one("ClusterKopfPeering")["metadata"]["name"]
    assert parsed.priority == 2


def test_standalone_has_no_priority(helm):
    ctr = helm.template().container()
    assert not any(a.startswith("--priority") for a in ctr["args"])
    assert "env" not in ctr


def test_namespaced_peering_per_watched_namespace(helm):
    out = helm.template("peering.enabled=true", "peering.name=fms", "operator.watchNamespaces={a,b}")
    objs = [o for o in out.objects if o["kind"] == "KopfPeering"]
    assert sorted(o["metadata"]["namespace"] for o in objs) == ["a", "b"]
    assert "ClusterKopfPeering" not in out.kinds()


def test_several_replicas_without_peering_are_refused(helm):
    assert "needs peering.enabled=true" in helm.fails("replicaCount=2")


def test_peering_crds_ship_with_the_chart():
    text = (CHART / "crds" / "kopf.dev_peerings.yaml").read_text()
    assert "name: clusterkopfpeerings.kopf.dev" in text and "name: kopfpeerings.kopf.dev" in text


def test_dashboard_config_map(helm):
    assert "ConfigMap" not in helm.template().kinds()
    cm = helm.template("dashboards.enabled=true", "dashboards.namespace=monitoring").one("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["data"]["fms.json"] == (CHART / "dashboards" / "fms.json").read_text().rstrip("\n")


def test_image_tag_defaults_to_app_version(helm):
    assert helm.template().container()["image"] == "fms-operator:0.1.0"
    assert helm.template("image.repository=reg.example/fms-operator", "image.tag=dev").container()["image"] == "reg.example/fms-operator:dev"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("typo=1", "additional properties 'typo' not allowed"),
        ("operator.watchNamspaces={a}", "additional properties 'watchNamspaces' not allowed"),
        ("securityContext.readOnlyRootFileSystem=false", "additional properties 'readOnlyRootFileSystem' not allowed"),
        ("replicaCount=two", "got string, want integer"),
        ("metrics.service.port=70000", "maximum"),
        ("operator.logLevel=verbose", "value must be one of"),
        ("image.pullPolicy=Sometimes", "value must be one of"),
        ("metrics.serviceMonitor.interval=soon", "does not match pattern"),
        ("operator.watchNamespaces={Bad_NS}", "does not match pattern"),
        ("podAnnotations.a=null", "got null, want string"),
    ],
)
def test_schema_rejects_bad_values(helm, setting, message):
    err = helm.fails(setting)
    assert message in err, err


def test_helm_lint_is_clean(helm):
    proc = helm.run("lint", "--strict", str(CHART), "--kube-version", "1.34.4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
