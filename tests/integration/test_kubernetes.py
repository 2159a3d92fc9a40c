"""The Kubernetes backend on the real single-node cluster of ci/kubernetes.

The gateway runs outside the cluster (a kubeconfig of the ``kernelyard-gateway``
identity, which has only the Role of each test namespace) and listens on the node
address, where pods reach the host. Kernel pods run the image ci/kubernetes builds
(``localhost/kernelyard/kernel:1``: Debian's python3 with ipykernel from PyPI in
/opt/venv, nothing of kernelyard); the launcher reaches them in a ConfigMap, the secrets
in a Secret.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract import (
    SLOW_CALLBACK_OPTIONS,
    ContractBackend,
    ContractSuite,
    write_contract_specs,
    write_launcher_spec,
)
from tests.gateway import Gateway, start_gateway
from tests.kubernetes import (
    cluster,
    delete_namespace,
    gateway_args,
    gateway_requests,
    kernel_objects,
    kernel_pods,
    kubectl,
    kubectl_json,
    make_namespace,
)
from tests.procs import process_table
from tests.waits import wait_for

PY_KERNEL = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
PROVISIONER = "kernelyard-kubernetes"
USER = "alice"


def k8s_backend(namespace: str) -> ContractBackend:
    return ContractBackend(
        name="kubernetes",
        write_specs=lambda folder: write_contract_specs(folder, PROVISIONER, PY_KERNEL),
        leftovers=lambda kernel_id: kernel_objects(namespace, kernel_id),
        gateway_args=[*gateway_args(namespace), f"--SharedTokenAuthenticator.user={USER}"],
        execute_timeout=120, cleanup_timeout=120, kill_kernel=kill_kernel_in_pod)


def kill_kernel_in_pod(kernel_id: str, pid_in_pod: int) -> None:
    """kill -9 of the kernel process of a pod: the container's processes are this host's,
    found by the kernel id on their command line (the pid they report is the pod's own)."""
    (pid,) = [p.pid for p in process_table().values()
              if any(kernel_id in arg for arg in p.cmdline)
              and "ipykernel_launcher" in p.cmdline
              and not any(arg.endswith("/launcher.py") for arg in p.cmdline)]
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = make_namespace("kernels")
    yield name
    delete_namespace(name)


@pytest.mark.timeout(1800)
class TestKubernetesContract(ContractSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Iterator[ContractBackend]:
        name = make_namespace("contract")  # its own: the tests below count what's left
        yield k8s_backend(name)
        delete_namespace(name)


def write_specs(folder: Path) -> None:
    """The kernelspecs of the tests below, each a way to fail (or not)."""
    write_launcher_spec(folder, "pod", PROVISIONER, PY_KERNEL)
    write_launcher_spec(folder, "no_image", PROVISIONER, PY_KERNEL,
                        image="localhost/kernelyard/no-such-image:1",
                        image_pull_policy="IfNotPresent", stuck_pending_timeout=3)
    write_launcher_spec(folder, "exits", PROVISIONER,
                        ["python3", "-c", "import sys; print('kernel-boom-7'); sys.exit(3)"])
    write_launcher_spec(folder, "small", PROVISIONER, PY_KERNEL, default_memory="96m")
    write_launcher_spec(folder, "root", PROVISIONER, PY_KERNEL, user_map_source="static",
                        user_map={USER: {"uid": 0, "gid": 0}})
    write_launcher_spec(folder, "never_calls_back", PROVISIONER, PY_KERNEL,
                        SLOW_CALLBACK_OPTIONS, launch_timeout=8)
    write_launcher_spec(folder, "gpus", PROVISIONER, PY_KERNEL, stuck_pending_timeout=2,
                        resource_limits={"KERNEL_GPUS": 2})


@pytest.fixture(scope="module")
def gw(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("k8s")
    write_specs(root / "jupyter")
    gateway = start_gateway(root, *gateway_args(namespace),
                            f"--SharedTokenAuthenticator.user={USER}",
                            env={"JUPYTER_PATH": str(root / "jupyter")})
    yield gateway
    gateway.stop()


def start_fails(gw: Gateway, name: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    status, body, _ = gw.request("POST", "/api/kernels", {"name": name, "env": env or {}})
    assert status >= 400, body
    return status, str(body.get("message", body))


def no_pods_of_spec_left(namespace: str) -> list[str]:
    pods = kubectl_json("-n", namespace, "get", "pods,secrets,configmaps",
                        "-l", "app.kubernetes.io/managed-by=kernelyard")["items"]
    return [o["metadata"]["name"] for o in pods
            if not o["metadata"].get("deletionTimestamp")]


def test_a_kernel_pod_runs_as_its_owner_locked_down(gw: Gateway, namespace: str) -> None:
    kernel_id = gw.start_kernel("pod")
    out = gw.run(kernel_id, "import os; print(os.getuid(), os.getgid(), 6*7)", check=True)
    uid = pwd.getpwnam(USER)
    assert out["stdout"].split() == [str(uid.pw_uid), str(uid.pw_gid), "42"]
    (pod,) = kernel_pods(namespace, kernel_id)
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    text = json.dumps(pod)
    assert gw.token not in text
    # the read-only root filesystem holds: the kernel can write only /tmp
    out = gw.run(kernel_id, "try:\n open('/x','w')\nexcept OSError as e:\n"
                            " print('refused', e.errno)", check=True)
    assert out["stdout"].startswith("refused"), out
    # its bytecode is valid as built: a read-only root can't cache a fresh one, so stale
    # files would be compiled again at every start (207 of 387 were, before mkimage's -f)
    out = gw.run(kernel_id, STALE_BYTECODE, check=True)
    assert out["stdout"].strip() == "0", out
    assert gw.request("DELETE", f"/api/kernels/{kernel_id}")[0] == 204
    assert objects_go(namespace, kernel_id)


STALE_BYTECODE = ("import subprocess, sys\n"
                  "r = subprocess.run([sys.executable, '-v', '-c', 'import ipykernel.kernelapp'],"
                  " capture_output=True, text=True)\n"
                  "print(r.stderr.count('bytecode is stale'))")


def test_a_network_policy_admits_only_the_gateway(gw: Gateway, namespace: str) -> None:
    kernel_id = gw.start_kernel("pod")
    (pod,) = kernel_pods(namespace, kernel_id)
    instance = pod["metadata"]["labels"]["kernelyard.io/instance"]
    (policy,) = kubectl_json("-n", namespace, "get", "networkpolicies",
                             "-l", f"kernelyard.io/instance={instance}")["items"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    sources = policy["spec"]["ingress"][0]["from"]
    assert sources == [{"ipBlock": {"cidr": "10.244.0.1/32"}}]
    gw.request("DELETE", f"/api/kernels/{kernel_id}")


def test_a_kernelspec_mapping_the_user_to_uid_0_is_refused(gw: Gateway, namespace: str) -> None:
    status, message = start_fails(gw, "root")
    assert status == 403 and "root" in message, message


def test_a_gpu_request_on_a_node_without_gpus_fails_with_the_schedulers_message(
        gw: Gateway, namespace: str) -> None:
    _, message = start_fails(gw, "gpus", {"KERNEL_GPUS": "1"})
    assert "Insufficient nvidia.com/gpu" in message, message
    assert wait_for("no kernel object left", 60, lambda: not no_pods_of_spec_left(namespace))


def test_an_image_that_does_not_exist_fails_the_start(gw: Gateway, namespace: str) -> None:
    _, message = start_fails(gw, "no_image")
    assert "no-such-image" in message and ("Err" in message or "BackOff" in message), message
    assert wait_for("no kernel object left", 60, lambda: not no_pods_of_spec_left(namespace))


def test_a_kernel_that_exits_at_once_fails_with_its_last_log_lines(
        gw: Gateway, namespace: str) -> None:
    _, message = start_fails(gw, "exits")
    assert "kernel-boom-7" in message, message
    assert wait_for("no kernel object left", 60, lambda: not no_pods_of_spec_left(namespace))


def test_a_launch_timeout_leaves_nothing(gw: Gateway, namespace: str) -> None:
    _, message = start_fails(gw, "never_calls_back")
    assert "8" in message and "call" in message, message
    assert wait_for("no kernel object left", 60, lambda: not no_pods_of_spec_left(namespace))


def test_an_oom_killed_kernel_is_reported_dead_with_the_reason(
        gw: Gateway, namespace: str) -> None:
    kernel_id = gw.start_kernel("small")
    ks = gw.connect(kernel_id)
    try:
        ks.submit("x = bytearray(400 * 2**20); x[::4096] = b'1' * len(x[::4096])")
    finally:
        ks.close()
    model = wait_dead_model(gw, kernel_id)
    assert "OOMKilled" in model.get("reason", ""), model
    gw.request("DELETE", f"/api/kernels/{kernel_id}")


def test_a_deleted_pod_is_reported_dead(gw: Gateway, namespace: str) -> None:
    kernel_id = gw.start_kernel("pod")
    (pod,) = kernel_pods(namespace, kernel_id)
    kubectl("-n", namespace, "delete", "pod", pod["metadata"]["name"], "--wait=false")
    model = wait_dead_model(gw, kernel_id)
    assert "deleted" in model.get("reason", ""), model
    gw.request("DELETE", f"/api/kernels/{kernel_id}")
    assert objects_go(namespace, kernel_id)


def test_a_namespace_quota_refusal_reaches_the_client(
        tmp_path: Path) -> None:
    namespace = make_namespace("quota")
    try:
        kubectl("-n", namespace, "create", "quota", "no-pods", "--hard=pods=0")
        write_specs(tmp_path / "jupyter")
        gw = start_gateway(tmp_path, *gateway_args(namespace),
                           f"--SharedTokenAuthenticator.user={USER}",
                           env={"JUPYTER_PATH": str(tmp_path / "jupyter")})
        try:
            _, message = start_fails(gw, "pod")
            assert "exceeded quota" in message, message
        finally:
            gw.stop()
    finally:
        delete_namespace(namespace)


def test_an_unreachable_api_server_is_a_503(tmp_path: Path, namespace: str) -> None:
    config = Path(cluster()["KY_K8S_GATEWAY_KUBECONFIG"]).read_text()
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(config.replace("https://127.0.0.1:6443", "https://127.0.0.1:9"))
    write_specs(tmp_path / "jupyter")
    args = [a for a in gateway_args(namespace) if "kubeconfig_path" not in a]
    gw = start_gateway(tmp_path, *args, f"--KubernetesProvisioner.kubeconfig_path={dead}",
                       f"--SharedTokenAuthenticator.user={USER}",
                       env={"JUPYTER_PATH": str(tmp_path / "jupyter")})
    try:
        status, message = start_fails(gw, "pod")
        assert status == 503 and "can't be reached" in message, message
    finally:
        gw.stop()


def test_ten_kernels_cost_the_api_server_no_requests_while_idle(
        gw: Gateway, namespace: str) -> None:
    kernels = [gw.start_kernel("pod") for _ in range(10)]
    try:
        time.sleep(5)
        since = time.time()
        time.sleep(30)
        requests = gateway_requests(since, namespace=namespace)
        # one watch may be resumed in that time (watch_seconds), nothing per kernel
        assert len(requests) <= 2, [(r["verb"], r["requestURI"]) for r in requests]
    finally:
        for kernel_id in kernels:
            gw.request("DELETE", f"/api/kernels/{kernel_id}")


def objects_go(namespace: str, kernel_id: str) -> bool:
    return wait_for("the kernel's objects to go", 60,
                    lambda: not kernel_objects(namespace, kernel_id))


def wait_dead_model(gw: Gateway, kernel_id: str, timeout: float = 120) -> dict[str, Any]:
    def dead() -> dict[str, Any]:
        status, model, _ = gw.request("GET", f"/api/kernels/{kernel_id}")
        return model if status == 200 and model.get("execution_state") == "dead" else {}
    return wait_for(f"kernel {kernel_id} reported dead", timeout, dead)
