"""Command lines, config files and process bookkeeping of the local control plane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from localcluster import commands, process
from localcluster.binaries import Binaries, parse_versions, stage_files
from localcluster.commands import Layout, Ports

BINS = Binaries(*(Path(f"/bin/{n}") for n in
                  ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "stages", "kubectl")))
LAY = Layout(Path("/state"))
PORTS = Ports(etcd_client=2001, etcd_peer=2002, apiserver=6443, controller_manager=7001, scheduler=7002)


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in argv[1:])


def test_apiserver_serves_on_loopback_with_rbac_node_authz_and_dra():
    f = flags(commands.apiserver_command(BINS, LAY, PORTS))
    assert f["etcd-servers"] == "http://127.0.0.1:2001"
    assert (f["bind-address"], f["secure-port"], f["advertise-address"]) == ("127.0.0.1", "6443", "127.0.0.1")
    assert f["endpoint-reconciler-type"] == "none"
    assert f["authorization-mode"] == "Node,RBAC"
    assert f["client-ca-file"] == "/state/pki/ca.crt"
    assert f["service-account-signing-key-file"] == "/state/pki/sa.key"
    assert f["service-account-key-file"] == "/state/pki/sa.pub"
    assert f["service-cluster-ip-range"] == commands.SERVICE_CIDR
    assert "resource.k8s.io/v1=true" in f["runtime-config"]


def test_controller_manager_signs_tokens_and_runs_every_controller():
    f = flags(commands.controller_manager_command(BINS, LAY, PORTS))
    assert f["service-account-private-key-file"] == "/state/pki/sa.key"
    assert f["root-ca-file"] == "/state/pki/ca.crt"
    assert f["controllers"] == "*"
    assert f["kubeconfig"] == "/state/controller-manager.kubeconfig"
    assert (f["secure-port"], f["leader-elect"]) == ("7001", "false")


def test_scheduler_and_etcd_use_the_given_ports():
    assert flags(commands.scheduler_command(BINS, LAY, PORTS))["secure-port"] == "7002"
    f = flags(commands.etcd_command(BINS, LAY, PORTS))
    assert f["listen-client-urls"] == "http://127.0.0.1:2001"
    assert f["listen-peer-urls"] == "http://127.0.0.1:2002"
    assert f["data-dir"] == "/state/etcd"


def test_kwok_gets_every_stage_and_its_config_and_manages_annotated_nodes():
    stages = [Path("/s/node-initialize.yaml"), Path("/s/pod-ready.yaml")]
    argv = commands.kwok_command(BINS, LAY, stages)
    assert [a for a in argv if a.startswith("--config=")] == [
        "--config=/s/node-initialize.yaml", "--config=/s/pod-ready.yaml", "--config=/state/kwok.yaml"]
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in argv
    opts = commands.kwok_config()["options"]
    assert opts["cidr"].startswith("127.") and opts["nodeLeaseParallelism"] > 0


def test_kubeconfig_points_at_the_server_with_client_certs():
    kc = commands.kubeconfig("https://127.0.0.1:6443", Path("/p/ca.crt"), Path("/p/a.crt"), Path("/p/a.key"))
    assert kc["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:6443", "certificate-authority": "/p/ca.crt"}
    assert kc["users"][0]["user"] == {"client-certificate": "/p/a.crt", "client-key": "/p/a.key"}
    assert kc["current-context"] == kc["contexts"][0]["name"]


def test_versions_env_parsing_skips_comments():
    assert parse_versions("# c\nKUBERNETES_VERSION=v1.34.4\n\nKWOK_VERSION=\"v0.8.0\"\n") == {
        "KUBERNETES_VERSION": "v1.34.4", "KWOK_VERSION": "v0.8.0"}


def test_stage_files_skip_kustomizations(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("kind: Kustomization\n")
    (tmp_path / "pod-ready.yaml").write_text("apiVersion: kwok.x-k8s.io/v1alpha1\nkind: Stage\n")
    assert stage_files(tmp_path) == [tmp_path / "pod-ready.yaml"]


def test_stop_kills_recorded_processes_but_not_a_recycled_pid(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    rec = process.spawn("sleeper", sleeper, tmp_path / "pids", tmp_path / "logs")
    # A stranger now holding a recorded PID: its cmdline differs, so it must survive.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "stranger"])
    try:
        (tmp_path / "pids" / "old.json").write_text(
            f'{{"name": "old", "pid": {stranger.pid}, "argv": ["etcd"], "started": 0}}')
        assert process.alive(rec)
        assert process.stop(tmp_path / "pids", grace_s=5) == ["sleeper"]
        assert not process.alive(rec)
        assert stranger.poll() is None
        assert not list((tmp_path / "pids").iterdir())
    finally:
        stranger.kill()
        stranger.wait()


def test_pki_signs_admin_into_system_masters_and_serves_loopback(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from localcluster import pki

    pki.generate(tmp_path)
    admin = x509.load_pem_x509_certificate((tmp_path / "admin.crt").read_bytes())
    groups = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["system:masters"]
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    admin.verify_directly_issued_by(ca)
    serving = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert (tmp_path / "sa.key").stat().st_mode & 0o077 == 0
