"""The Helm chart charts/kernelyard with the real helm and the real cluster (ci/kubernetes/).

``helm lint`` and ``helm template`` check the chart and its values schema (bad values are
refused by name); then the chart is installed into the CI cluster with the CI-built gateway
image (ci/kubernetes/build-images.sh): the gateway pod becomes Ready, answers ``GET /api``
by pod IP (there is no kube-proxy: pods are reached by IP from the host), and ``helm
uninstall`` leaves nothing. Namespaces: chart-gw (the release), chart-kernels (kernels).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from tests import realparts
from tests.gateway import SECRETS
from tests.kubernetes import ROLE_RULES
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
    if "kubernetes" in realparts.PARTS:
        realparts.missing("kubernetes", why)
    reason = (f"real part 'kubernetes' unavailable: {why}; start it (as root) with "
              "`bash ci/kubernetes/start.sh` (tests/realparts.py has no 'kubernetes' entry yet)")
    if realparts.required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


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

def cluster_up() -> None:
    """Skip (CI: fail) unless the cluster answers and the CI-built images are in containerd."""
    if "kubernetes" in realparts.PARTS:
        realparts.need("kubernetes")
    if not KUBECONFIG.is_file():
        part_missing(f"{KUBECONFIG} is missing")
    ready = kubectl("get", "--raw", "/readyz", check=False)
    if ready.returncode != 0:
        part_missing(f"the API server does not answer: {ready.stderr.strip()[-200:]}")
    ctr = subprocess.run(["ctr", "--address", str(STATE / "run" / "containerd.sock"), "-n",
                          "k8s.io", "images", "ls", "-q"], capture_output=True, text=True)
    for image in (GATEWAY_IMAGE, KERNEL_IMAGE):
        if image not in ctr.stdout.split():
            part_missing(f"the image {image} is not in the cluster's containerd: build it with "
                         "`bash ci/kubernetes/build-images.sh --import`")


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
    cluster_up()
    token = secrets.token_urlsafe(24)
    SECRETS.add_secret(token, "the in-cluster gateway's token")
    helm("uninstall", RELEASE, "-n", GW_NS, "--ignore-not-found", check=False)
    helm("install", RELEASE, str(CHART), "-n", GW_NS, "--create-namespace", *CI_VALUES,
         "--set", f"auth.token={token}")
    try:
        yield {"token": token}
    finally:
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


def test_uninstall_leaves_nothing(release: dict[str, Any]) -> None:
    gateway_pod()
    assert leftovers(), "the release's objects should be there before the uninstall"
    helm("uninstall", RELEASE, "-n", GW_NS, "--wait")
    wait_for("the release's objects to go", 120, lambda: not leftovers())
