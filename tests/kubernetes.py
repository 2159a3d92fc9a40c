"""The real single-node cluster of ci/kubernetes, for tests: kubectl, namespaces with the
gateway's Role, the objects a kernel left, and the gateway's API requests (audit log).

The tests' gateway runs outside the cluster as the user ``kernelyard-gateway``
(ci/kubernetes/pki.sh: a client certificate with no rights but the Role each test
namespace grants it: the least privilege the chart grants its service account too).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.realparts import env, need

KERNEL_IMAGE = "localhost/kernelyard/kernel:1"
# What the gateway may do in a kernel namespace (charts/kernelyard grants the same).
ROLE_RULES = (
    ("pods", "get,list,watch,create,delete"),
    ("secrets", "create,delete"),
    ("configmaps", "create,delete"),
    ("networkpolicies.networking.k8s.io", "get,create,update"),
)


def cluster() -> dict[str, str]:
    """ci/kubernetes' env (KUBECONFIG, KY_K8S_GATEWAY_KUBECONFIG, KY_K8S_BIN, ...)."""
    need("kubernetes")
    return env("kubernetes")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run kubectl as the cluster's admin; its stdout."""
    c = cluster()
    result = subprocess.run([f"{c['KY_K8S_BIN']}/kubectl", *args], input=stdin, text=True,
                            capture_output=True, timeout=120,
                            env={**os.environ, "KUBECONFIG": c["KUBECONFIG"]})
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def make_namespace(prefix: str) -> str:
    """A new namespace where the tests' gateway identity has the gateway's Role."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    for resource, verbs in ROLE_RULES:
        role = f"gw-{resource.split('.')[0]}"
        kubectl("-n", name, "create", "role", role, f"--verb={verbs}", f"--resource={resource}")
        kubectl("-n", name, "create", "rolebinding", role, f"--role={role}",
                "--user=kernelyard-gateway")
    return name


def delete_namespace(name: str) -> None:
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def kernel_objects(namespace: str, kernel_id: str) -> list[str]:
    """The pods, Secrets and ConfigMaps of a kernel still in the namespace (not terminating
    pods: those are on their way out)."""
    found = kubectl_json("-n", namespace, "get", "pods,secrets,configmaps",
                         "-l", f"kernelyard.io/kernel-id={kernel_id}")
    return [f"{o['kind']} {o['metadata']['name']}" for o in found["items"]]


def kernel_pods(namespace: str, kernel_id: str) -> list[dict[str, Any]]:
    return kubectl_json("-n", namespace, "get", "pods",  # type: ignore[no-any-return]
                        "-l", f"kernelyard.io/kernel-id={kernel_id}")["items"]


def gateway_requests(since: float, until: float | None = None,
                     namespace: str = "") -> list[dict[str, Any]]:
    """The API requests of the gateway identity between two times (the audit log), in
    ``namespace`` if given (other gateways of that identity work in others)."""
    path = Path(cluster()["KY_K8S_AUDIT_LOG"])
    until = until if until is not None else time.time()
    found = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") != "kernelyard-gateway":
            continue
        if namespace and event.get("objectRef", {}).get("namespace") != namespace:
            continue
        at = _parse_time(event.get("requestReceivedTimestamp", ""))
        if since <= at <= until:
            found.append(event)
    return found


def _parse_time(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def gateway_args(namespace: str, *extra: str) -> list[str]:
    """Settings of a gateway outside the cluster whose kernels run in ``namespace``: it
    listens on the node address (pods reach the host there, so the launchers' callbacks
    do), and the NetworkPolicy admits that address."""
    c = cluster()
    node = c["KY_K8S_NODE_IP"]
    return ["--ip", node, "--KubernetesProvisioner.kube_config=kubeconfig",
            f"--KubernetesProvisioner.kubeconfig_path={c['KY_K8S_GATEWAY_KUBECONFIG']}",
            f"--KubernetesProvisioner.namespace={namespace}",
            f"--KubernetesProvisioner.gateway_cidrs={node}/32",
            f"--KubernetesProvisioner.image={KERNEL_IMAGE}",
            "--KubernetesProvisioner.image_pull_policy=Never", *extra]
