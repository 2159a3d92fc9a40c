"""The Kubernetes objects of a kernel: golden manifests and the rules they keep.

The golden files are tests/data/kubernetes/*.json; after an intended change, rewrite
them with KERNELYARD_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import base64
import json
import os
from fractions import Fraction
from pathlib import Path

import pytest

from kernelyard.errors import ConfigError
from kernelyard.provisioners.kubernetes_pods import (
    PodSpecInputs,
    check_dns_label,
    check_pod_template,
    configmap_manifest,
    network_policy_manifest,
    pod_manifest,
    secret_manifest,
)
from kernelyard.resources import Resources, parse_request

GOLDEN = Path(__file__).parent.parent / "data" / "kubernetes"
KERNEL_ID = "0f1e2d3c-4b5a-4697-8877-665544332211"
ARGV = ("--", "python3", "-m", "ipykernel_launcher", "-f", "{connection_file}")


def inputs(**changes: object) -> PodSpecInputs:
    base: dict[str, object] = dict(
        kernel_id=KERNEL_ID, pod_name=f"kernel-{KERNEL_ID}-ab12", namespace="kernels",
        instance="kernelyard-0123456789ab", kernel_name="python-k8s", user="alice",
        uid=1001, gid=1001, image="localhost/kernelyard/kernel:1", launcher_args=ARGV)
    base.update(changes)
    return PodSpecInputs(**base)  # type: ignore[arg-type]


def check_golden(name: str, manifest: dict) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if os.environ.get("KERNELYARD_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed: see {path}"


def test_a_plain_kernel_pod() -> None:
    check_golden("pod-plain", pod_manifest(inputs()))


def test_a_pod_with_resources_gpus_walltime_and_an_admin_template() -> None:
    resources = parse_request({"KERNEL_MEMORY": "1.5g", "KERNEL_MEMORY_LIMIT": "2g",
                               "KERNEL_CPUS": "500m", "KERNEL_CPUS_LIMIT": "2",
                               "KERNEL_GPUS": "1", "KERNEL_WALLTIME": "90m"})
    template = {"metadata": {"labels": {"team": "ds", "kernelyard.io/user": "mallory"}},
                "spec": {"nodeSelector": {"pool": "gpu"}, "priorityClassName": "kernels",
                         "tolerations": [{"key": "gpu", "operator": "Exists"}],
                         "volumes": [{"name": "data", "persistentVolumeClaim":
                                      {"claimName": "shared"}}],
                         "containers": [{"volumeMounts": [{"name": "data",
                                                           "mountPath": "/data"}],
                                         "env": [{"name": "HOME", "value": "/root"},
                                                 {"name": "SITE", "value": "x"}]}]}}
    manifest = pod_manifest(inputs(resources=resources, pod_template=template,
                                   node_selector={"zone": "a"},
                                   tolerations=({"key": "b", "operator": "Exists"},)))
    check_golden("pod-resources", manifest)
    container = manifest["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"memory": "1536Mi", "cpu": "500m"},
        "limits": {"memory": "2048Mi", "cpu": "2000m", "nvidia.com/gpu": "1"}}
    assert manifest["spec"]["activeDeadlineSeconds"] == 5400
    # the template can't rename the owner or move HOME off the writable emptyDir
    assert manifest["metadata"]["labels"]["kernelyard.io/user"] == "alice"
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert {"name": "HOME", "value": "/root"} not in container["env"]


def test_the_pod_is_locked_down_whatever_the_template() -> None:
    manifest = pod_manifest(inputs(pod_template={"spec": {"nodeSelector": {"a": "b"}}}))
    spec = manifest["spec"]
    assert spec["securityContext"]["runAsUser"] == 1001
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    security = spec["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # no secret travels in the pod: its command and env name files only
    text = json.dumps(manifest)
    assert "token" not in text and "key" not in text.replace("kernelyard", "")


@pytest.mark.parametrize("template, bad", [
    ({"spec": {"securityContext": {"runAsUser": 0}}}, "spec.securityContext"),
    ({"spec": {"hostNetwork": True}}, "spec.hostNetwork"),
    ({"spec": {"containers": [{"securityContext": {"privileged": True}}]}},
     "spec.containers[0].securityContext"),
    ({"spec": {"containers": [{"image": "evil"}]}}, "spec.containers[0].image"),
    ({"spec": {"containers": [{}, {}]}}, "spec.containers (at most one"),
    ({"status": {}}, "status"),
    ({"metadata": {"name": "x"}}, "metadata.name"),
])
def test_a_template_may_not_set_what_kernelyard_sets(template: dict, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"KubernetesProvisioner\.pod_template") as e:
        check_pod_template(template, "KubernetesProvisioner.pod_template")
    assert bad in e.value.message


def test_secret_and_configmap_are_owned_by_the_pod() -> None:
    payload = b'{"key": "k"}\n'
    secret = secret_manifest(inputs(), "uid-1", payload)
    configmap = configmap_manifest(inputs(), "uid-1", {"launcher.py": "print()"})
    check_golden("secret", secret)
    check_golden("configmap", configmap)
    assert base64.b64decode(secret["data"]["secrets.json"]) == payload
    for manifest in (secret, configmap):
        (owner,) = manifest["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("Pod", "uid-1")


def test_network_policy_admits_only_the_gateway() -> None:
    manifest = network_policy_manifest("kernels", "kernelyard-0123456789ab",
                                       {"app.kubernetes.io/name": "kernelyard"}, "gw",
                                       ("10.244.0.1/32",))
    check_golden("network-policy", manifest)
    assert manifest["spec"]["policyTypes"] == ["Ingress"]


def test_resources_map_exactly() -> None:
    pod = pod_manifest(inputs(resources=Resources(cpus=Fraction(1, 3)),
                              default_memory_mib=1024))
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"memory": "1024Mi", "cpu": "334m"}, "limits": {"memory": "1024Mi"}}


@pytest.mark.parametrize("name", ["", "Kernels", "a_b", "-a", "a" * 64, "a.b"])
def test_names_that_are_not_dns_labels_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"KubernetesProvisioner\.namespace"):
        check_dns_label(name, "KubernetesProvisioner.namespace")
