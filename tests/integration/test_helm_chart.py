"""The Helm chart charts/kernelyard with the real helm and the real cluster (ci/kubernetes/).

``helm lint`` and ``helm template`` check the chart and its values schema (bad values are
refused by name); then the chart is installed into the CI cluster with the CI-built gateway
image (ci/kubernetes/build-images.sh): the gateway pod becomes Ready, answers ``GET /api``
by pod IP (there is no kube-proxy: pods are reached by IP from the host), kernels start as
pods through it (by pod IP, and through Jupyter Server with ``--gateway-url``), and ``helm
uninstall`` leaves nothing. Namespaces: chart-gw (the release), chart-kernels (kernels).
The tests run in file order: the uninstall is last.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import socketserver
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import websocket
import yaml

from tests import realparts
from tests.gateway import SECRETS, KernelSocket
from tests.kubernetes import ROLE_RULES, kernel_objects, kernel_pods
from tests.waits import poll, wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kernelyard"
STATE = Path(os.environ.get("KY_K8S_STATE") or "/tmp/kernelyard-k8s")
BIN = Path(os.environ.get("KY_K8S_BIN") or STATE / "bin")
KUBECONFIG = STATE / "pki" / "admin.kubeconfig"
GATEWAY_IMAGE = "localhost/kernelyard/gateway:1"
KERNEL_IMAGE = "localhost/kernelyard/kernel:1"
RELEASE, GW_NS, KERNEL_NS = "ky", "chart-gw", "chart-kernels"
FULLNAME = f"{RELEASE}-kernelyard"
# The values the CI install uses: images imported into containerd, never pulled.
CI_VALUES = ["--set", "image.pullPolicy=Never", "--set", f"kubernetes.namespace={KERNEL_NS}",
             "--set", "kubernetes.imagePullPolicy=Never",
             "--set", "kubernetes.createNamespaces=true",
             "--set-json", 'kubernetes.userMap={"alice":{"uid":1001,"gid":1001}}']


def part_missing(why: str) -> NoReturn:
    """The cluster (or helm, or an image) is missing: skip by hand, fail in CI."""
    realparts.missing("kubernetes", why)


def helm_bin() -> Path:
    helm = BIN / "helm"
    if not os.access(helm, os.X_OK):
        part_missing(f"{helm} is missing: build it with `bash ci/kubernetes/build-helm.sh`")
    return helm


def helm(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    run = subprocess.run([str(helm_bin()), *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert not check or run.returncode == 0, run.stdout + run.stderr
    return run


def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([str(BIN / "kubectl"), f"--kubeconfig={KUBECONFIG}", *args],
                         capture_output=True, text=True, timeout=120)
    assert not check or run.returncode == 0, run.stdout + run.stderr
    return run


def kube_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def render(*values: str) -> list[dict[str, Any]]:
    """``helm template`` of the chart into chart-gw: the objects it would create."""
    out = helm("template", RELEASE, str(CHART), "-n", GW_NS, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def role_rules(role: dict[str, Any]) -> dict[str, set[str]]:
    """resource[.group] -> verbs of a Role, in tests/kubernetes.py's ROLE_RULES spelling."""
    rules: dict[str, set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = f"{resource}.{group}" if group else resource
                rules.setdefault(key, set()).update(rule["verbs"])
    return rules


def test_helm_lint_passes_with_the_default_and_the_ci_values() -> None:
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART), *CI_VALUES).stdout


@pytest.mark.parametrize(("values", "named"), [
    (["--set", "imageTag=2"], "additional properties 'imageTag' not allowed"),
    (["--set", "kubernetes.namespaces=x"], "additional properties 'namespaces' not allowed"),
    (["--set", "port=eighty"], "/port"),
    (["--set-json", 'kubernetes.userMap={"root":{"uid":0}}'], "/kubernetes/userMap/root/uid"),
    (["--set", "podSecurityContext.runAsUser=0"], "/podSecurityContext/runAsUser"),
    (["--set", "config.KernelyardApp.auth_token=s3cret"], "/config/KernelyardApp"),
    (["--set", "kubernetes.namespaceMode=pod"], "/kubernetes/namespaceMode"),
])
def test_helm_refuses_bad_values_naming_them(values: list[str], named: str) -> None:
    for cmd in (["template", RELEASE], ["lint"]):
        run = helm(*cmd, str(CHART), *values, check=False)
        assert run.returncode != 0, run.stdout
        assert "schema" in run.stdout + run.stderr
        assert named in run.stdout + run.stderr, run.stdout + run.stderr


def test_template_objects_are_least_privilege_and_keep_secrets_out_of_sight() -> None:
    token = secrets.token_urlsafe(24)
    docs = render(*CI_VALUES, "--set", f"auth.token={token}")
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "Role",
                     "RoleBinding", "Secret", "Service", "ServiceAccount"]
    # the token is only in the Secret, base64-encoded: not in the ConfigMap, args or env values
    plain = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    assert token not in plain
    (secret,) = of_kind(docs, "Secret")
    assert secret["data"]["auth-token"]
    # RBAC only in the kernel namespace, nothing cluster-wide
    assert {r["metadata"]["namespace"] for r in of_kind(docs, "Role")} == {KERNEL_NS}
    (role,) = of_kind(docs, "Role")
    assert role_rules(role) == {r: set(v.split(",")) for r, v in ROLE_RULES
                                if r != "networkpolicies.networking.k8s.io"}
    (deploy,) = of_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "--CallbackRegistry.callback_url=http://$(POD_IP):8888/" in ctr["args"]
    env = {e["name"]: e for e in ctr["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["KERNELYARD_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "auth-token"
    assert all("value" not in e for name, e in env.items() if name.startswith("KERNELYARD_"))


def test_cluster_wide_rbac_only_when_asked() -> None:
    docs = render("--set", "rbac.clusterWide=true", "--set", "kubernetes.namespaceMode=user")
    assert of_kind(docs, "Role") == [] and of_kind(docs, "NetworkPolicy") == []
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert role_rules(cluster_role) == {r: set(v.split(",")) for r, v in ROLE_RULES}
    (config_map,) = of_kind(docs, "ConfigMap")
    config = json.loads(config_map["data"]["kernelyard_config.json"])
    assert config["KubernetesProvisioner"]["network_policy"] is True
    # per-user namespaces of the user map, without cluster-wide rights: a Role in each
    docs = render("--set", "kubernetes.namespaceMode=user",
                  "--set-json", 'kubernetes.userMap={"alice":{"uid":1001},"bob":{"uid":1002}}')
    assert of_kind(docs, "ClusterRole") == []
    assert {r["metadata"]["namespace"] for r in of_kind(docs, "Role")} == {
        "kernelyard-kernels", "kernelyard-alice", "kernelyard-bob"}


def test_the_rendered_config_names_only_existing_settings() -> None:
    """Each Class.setting of kernelyard_config.json is a configurable trait of that class."""
    from jupyter_client.kernelspec import KernelSpecManager

    from kernelyard.app import KernelyardApp
    from kernelyard.manager import GatewayMappingKernelManager
    from kernelyard.store import StoreFactory

    classes: dict[str, Any] = {c.__name__: c for c in (KernelyardApp, StoreFactory,
                                                       GatewayMappingKernelManager)}
    classes["KernelSpecManager"] = KernelSpecManager
    try:
        from kernelyard.provisioners.kubernetes import KubernetesProvisioner
        classes["KubernetesProvisioner"] = KubernetesProvisioner
    except ImportError:  # the provisioner is not in this tree yet: its settings unchecked
        pass
    docs = render(*CI_VALUES, "--set", "quotas.maxKernelsPerUser=2",
                  "--set-json", 'quotas.groupResourceLimits={"*":{"KERNEL_MEMORY":"2g"}}')
    (config_map,) = of_kind(docs, "ConfigMap")
    config = json.loads(config_map["data"]["kernelyard_config.json"])
    unknown = [f"{cls}.{name}" for cls, settings in config.items() if cls in classes
               for name in settings if name not in classes[cls].class_traits(config=True)]
    assert unknown == []
    assert config["KernelyardApp"]["max_kernels_per_user"] == 2
    spec = json.loads(config_map["data"]["kernelspec-python-k8s.json"])
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "kernelyard-kubernetes"
    assert spec["metadata"]["kernel_provisioner"]["config"]["image"] == KERNEL_IMAGE


# --- installed into the real cluster ------------------------------------------------------

def cluster_up() -> dict[str, str]:
    """ci/kubernetes' env; skip (CI: fail) unless the cluster answers and the CI-built
    images are in its containerd."""
    cluster = realparts.env("kubernetes")
    ready = kubectl("get", "--raw", "/readyz", check=False)
    if ready.returncode != 0:
        part_missing(f"the API server does not answer: {ready.stderr.strip()[-200:]}")
    ctr = subprocess.run(["ctr", "--address", str(STATE / "run" / "containerd.sock"), "-n",
                          "k8s.io", "images", "ls", "-q"], capture_output=True, text=True)
    for image in (GATEWAY_IMAGE, KERNEL_IMAGE):
        if image not in ctr.stdout.split():
            part_missing(f"the image {image} is not in the cluster's containerd: build it with "
                         "`bash ci/kubernetes/build-images.sh --import`")
    return cluster


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Forward(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with socket.create_connection(("127.0.0.1", 6443), timeout=10) as upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
            back.start()
            _pipe(self.request, upstream)
            back.join()


class ApiForwarder(socketserver.ThreadingTCPServer):
    """The API server (127.0.0.1:6443) on a port of the node IP, for the gateway pod: the
    CI cluster has no kube-proxy, so the ``kubernetes`` Service IP leads nowhere; its
    serving certificate names the node IP (chart value ``kubernetes.apiServer``)."""

    daemon_threads = True

    def __init__(self, node_ip: str):
        super().__init__((node_ip, 0), _Forward)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def leftovers() -> list[str]:
    """What of the release is still in the cluster (objects labelled with its instance)."""
    found = []
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for ns in (GW_NS, KERNEL_NS):
        kinds = "all,configmaps,secrets,serviceaccounts,roles,rolebindings,networkpolicies,pvc"
        out = kubectl("get", kinds, "-n", ns, "-l", selector, "-o", "name", check=False)
        found += [f"{ns}/{name}" for name in out.stdout.split()]
    out = kubectl("get", "namespace", KERNEL_NS, "-o", "name", "--ignore-not-found", check=False)
    found += out.stdout.split()
    return found


@pytest.fixture(scope="module")
def release() -> Iterator[dict[str, Any]]:
    """The chart installed into chart-gw, kernels in chart-kernels; uninstalled at the end."""
    node_ip = cluster_up()["KY_K8S_NODE_IP"]
    token = secrets.token_urlsafe(24)
    SECRETS.add_secret(token, "the in-cluster gateway's token")
    forwarder = ApiForwarder(node_ip)
    helm("uninstall", RELEASE, "-n", GW_NS, "--ignore-not-found", check=False)
    helm("install", RELEASE, str(CHART), "-n", GW_NS, "--create-namespace", *CI_VALUES,
         "--set", f"auth.token={token}", "--set", f"kubernetes.apiServer.host={node_ip}",
         "--set", f"kubernetes.apiServer.port={forwarder.port}")
    try:
        yield {"token": token}
    finally:
        forwarder.shutdown()
        forwarder.server_close()
        if helm("status", RELEASE, "-n", GW_NS, check=False).returncode == 0:
            logs = kubectl("logs", "-n", GW_NS, f"deploy/{FULLNAME}", "--tail=200", check=False)
            print(logs.stdout[-4000:])
            helm("uninstall", RELEASE, "-n", GW_NS, "--wait", check=False)
        kubectl("delete", "namespace", GW_NS, "--ignore-not-found", "--wait=false", check=False)


def gateway_pod() -> dict[str, Any]:
    """The Ready gateway pod of the release."""
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=kernelyard"

    def ready() -> dict[str, Any] | None:
        for pod in kube_json("get", "pods", "-n", GW_NS, "-l", selector)["items"]:
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conditions.get("Ready") == "True" and pod["status"].get("podIP"):
                return pod
        return None

    pod = poll(ready, 180, 1)
    if not pod:
        events = kubectl("get", "events", "-n", GW_NS, check=False).stdout
        logs = kubectl("logs", "-n", GW_NS, f"deploy/{FULLNAME}", "--tail=50", check=False)
        raise AssertionError(f"the gateway pod is not Ready:\n{events}\n{logs.stdout}{logs.stderr}")
    return pod


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_installed_gateway_is_ready_and_answers_by_pod_ip(release: dict[str, Any]) -> None:
    pod = gateway_pod()
    spec = pod["spec"]
    assert spec["securityContext"]["runAsUser"] == 10001
    (ctr,) = spec["containers"]
    assert ctr["image"] == GATEWAY_IMAGE and ctr["securityContext"]["readOnlyRootFilesystem"]
    base = f"http://{pod['status']['podIP']}:8888"
    status, body = get(f"{base}/api", release["token"])
    assert status == 200, body
    assert body["gateway_version"]
    assert get(f"{base}/api")[0] == 401  # no token, no answer
    status, specs = get(f"{base}/api/kernelspecs", release["token"])
    assert status == 200 and specs["default"] == "python-k8s", specs
    # the RBAC the chart gives the gateway's ServiceAccount: pods in the kernel namespace, not
    # in its own namespace, nothing cluster-wide
    sa = f"system:serviceaccount:{GW_NS}:{FULLNAME}"
    can = lambda *a: kubectl("auth", "can-i", *a, f"--as={sa}", check=False).stdout.strip()  # noqa: E731
    assert can("create", "pods", "-n", KERNEL_NS) == "yes"
    assert can("create", "secrets", "-n", KERNEL_NS) == "yes"
    assert can("create", "pods", "-n", GW_NS) == "no"
    assert can("list", "pods", "--all-namespaces") == "no"
    assert can("create", "namespaces") == "no"


@dataclass
class InCluster:
    """A client of the gateway pod, by its IP (``url``) and the release's token."""

    url: str
    token: str

    def request(self, method: str, path: str, body: Any = None,
                timeout: float = 180) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        return status, json.loads(raw) if raw else None

    def connect(self, kernel_id: str) -> KernelSocket:
        ws = websocket.create_connection(
            f"ws{self.url[len('http'):]}/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {self.token}"], timeout=60)
        return KernelSocket(ws, v1=False, session_id=uuid.uuid4().hex)


@pytest.fixture(scope="module")
def in_cluster(release: dict[str, Any]) -> InCluster:
    pod = gateway_pod()
    return InCluster(f"http://{pod['status']['podIP']}:8888", release["token"])


def pod_of(kernel_id: str) -> dict[str, Any]:
    """The one running pod of a kernel (a restarted kernel's old pod may still be going)."""
    def live() -> dict[str, Any] | None:
        pods = [p for p in kernel_pods(KERNEL_NS, kernel_id)
                if not p["metadata"].get("deletionTimestamp")
                and p["status"].get("phase") in ("Pending", "Running")]
        return pods[0] if len(pods) == 1 else None
    return wait_for(f"one pod of kernel {kernel_id}", 60, live)


def wait_for_stdout(ks: KernelSocket, msg_id: str, text: str, timeout: float = 60) -> None:
    """Read the kernel's messages until the cell ``msg_id`` has printed ``text``."""
    seen = ""
    while text not in seen:
        msg = ks.recv(timeout)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            seen += msg["content"]["text"]


@pytest.mark.timeout(900)
def test_a_kernel_from_the_in_cluster_gateway_runs_is_interrupted_restarted_and_shut_down(
        in_cluster: InCluster) -> None:
    """From ``helm install`` to a working notebook: the kernel is a pod in chart-kernels,
    runs as alice's uid, keeps its variables over an interrupt, gets a new pod (same kernel
    id) on restart, and leaves no pod, Secret or ConfigMap after shutdown."""
    status, model = in_cluster.request("POST", "/api/kernels", {
        "name": "python-k8s", "env": {"KERNEL_USERNAME": "alice"}})
    assert status == 201, model
    kernel_id = model["id"]
    try:
        first = pod_of(kernel_id)
        assert first["spec"]["securityContext"]["runAsUser"] == 1001
        ks = in_cluster.connect(kernel_id)
        try:
            out = ks.execute("import os; x = 6*7; print(os.getuid(), os.getgid(), x)")
            assert out["error"] is None and out["stdout"].split() == ["1001", "1001", "42"], out
            msg_id = ks.submit("import time; print('sleeping', flush=True); time.sleep(600)")
            wait_for_stdout(ks, msg_id, "sleeping")  # interrupt the cell, not the idle kernel
            status, _ = in_cluster.request("POST", f"/api/kernels/{kernel_id}/interrupt")
            assert status == 204
            error = ks.wait_idle(msg_id, timeout=60)
            assert error is not None and error["ename"] == "KeyboardInterrupt", error
            out = ks.execute("print(x)")
            assert out["stdout"].strip() == "42", out  # the interrupt kept the variables
        finally:
            ks.close()
        status, model = in_cluster.request("POST", f"/api/kernels/{kernel_id}/restart")
        assert status == 200 and model["id"] == kernel_id, model
        second = wait_for("a new pod", 60, lambda: (
            p := pod_of(kernel_id))["metadata"]["uid"] != first["metadata"]["uid"] and p)
        assert second["metadata"]["name"] != first["metadata"]["name"]
        ks = in_cluster.connect(kernel_id)
        try:
            out = ks.execute("print('x' in dir(), 6*7)")
            assert out["stdout"].split() == ["False", "42"], out
        finally:
            ks.close()
    finally:
        status, _ = in_cluster.request("DELETE", f"/api/kernels/{kernel_id}")
    assert status == 204
    assert wait_for("the kernel's pod, Secret and ConfigMap to go", 90,
                    lambda: not kernel_objects(KERNEL_NS, kernel_id))


@pytest.mark.timeout(900)
def test_jupyter_server_with_gateway_url_runs_a_notebook_on_the_in_cluster_gateway(
        in_cluster: InCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path every JupyterLab user takes: Jupyter Server --gateway-url=<gateway pod>."""
    from tests.e2e.clients import diagnostics, require_jupyterlab, start_jupyter

    require_jupyterlab()
    # Jupyter Server sends its own user as KERNEL_USERNAME (root here): name alice instead
    monkeypatch.setenv("KERNEL_USERNAME", "alice")
    jp = start_jupyter(tmp_path, in_cluster)  # type: ignore[arg-type]  # needs url, token
    kernel_id = ""
    try:
        status, specs = jp.request("GET", "/api/kernelspecs")
        assert status == 200 and "python-k8s" in specs["kernelspecs"], specs
        status, session = jp.request("POST", "/api/sessions", {
            "path": "k8s.ipynb", "name": "k8s.ipynb", "type": "notebook",
            "kernel": {"name": "python-k8s"}}, timeout=180)
        assert status == 201, (session, diagnostics(jp))
        kernel_id = session["kernel"]["id"]
        assert pod_of(kernel_id)["spec"]["securityContext"]["runAsUser"] == 1001
        ks = jp.connect(kernel_id)
        try:
            out = ks.execute("print(6*7)", timeout=120)
            assert out["stdout"].strip() == "42", out
        finally:
            ks.close()
        status, _ = jp.request("DELETE", f"/api/sessions/{session['id']}")
        assert status == 204
    finally:
        jp.stop()
    assert kernel_id
    assert wait_for("the kernel's pod, Secret and ConfigMap to go", 90,
                    lambda: not kernel_objects(KERNEL_NS, kernel_id))


def test_uninstall_leaves_nothing(release: dict[str, Any]) -> None:
    gateway_pod()
    assert leftovers(), "the release's objects should be there before the uninstall"
    helm("uninstall", RELEASE, "-n", GW_NS, "--wait")
    wait_for("the release's objects to go", 120, lambda: not leftovers())
