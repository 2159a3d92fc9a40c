"""The Kubernetes objects of one kernel, as pure functions of settings and the launch plan.

Nothing here talks to a cluster or reads request data directly: ``PodSpecInputs`` holds
what the admin configured (image, the pod template, node selectors, tolerations) and
what the policy decided (the user's uid/gid, the resources of ``kernelyard.resources``),
and each function returns a plain dict the API takes as it is. No YAML or template
string is ever built; golden tests pin the output (tests/unit/test_kubernetes_pods.py).

The launcher reaches the pod in a ConfigMap and the kernel's secrets (its key, the
callback token and URL, CurveZMQ keys, its env) in a Secret, both mounted read-only and
owned by the pod, so the garbage collector removes them with it: any image with a
Python 3.8+ and the kernel runs (docs/kubernetes.md, "The image contract").
"""

from __future__ import annotations

import base64
import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..resources import Resources

LAUNCHER_DIR = "/opt/kernelyard/launcher"
SECRETS_DIR = "/var/run/kernelyard/secrets"
SECRETS_FILE = "secrets.json"
RUN_DIR = "/tmp/kernelyard"  # noqa: S108 - an emptyDir of the pod, not the host's /tmp
CONTAINER = "kernel"

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
INSTANCE = "kernelyard.io/instance"
KERNEL_ID = "kernelyard.io/kernel-id"
USER = "kernelyard.io/user"
KERNEL_NAME = "kernelyard.io/kernel-name"  # an annotation: kernelspec names aren't label values

# What an admin's pod_template may set: scheduling and plumbing, never the security
# context, the command or the kernel's resources (kernelyard sets those).
TEMPLATE_METADATA = frozenset({"labels", "annotations"})
TEMPLATE_SPEC = frozenset({"nodeSelector", "tolerations", "affinity", "priorityClassName",
                           "serviceAccountName", "imagePullSecrets", "volumes",
                           "runtimeClassName", "schedulerName", "dnsPolicy", "dnsConfig",
                           "topologySpreadConstraints", "hostAliases"})
TEMPLATE_CONTAINER = frozenset({"volumeMounts", "env", "workingDir"})
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?", re.ASCII)


@dataclass(frozen=True, kw_only=True)
class PodSpecInputs:
    """Everything one kernel's objects are made of."""

    kernel_id: str
    pod_name: str
    namespace: str
    instance: str
    kernel_name: str
    user: str
    uid: int
    gid: int
    image: str
    pull_policy: str = "IfNotPresent"
    python: str = "python3"
    launcher_args: tuple[str, ...] = ()  # the kernelspec's launcher options, --, the kernel argv
    resources: Resources = field(default_factory=Resources)
    default_memory_mib: int | None = None
    default_cpus: str = ""
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    pod_template: Mapping[str, Any] = field(default_factory=dict)
    read_only_root: bool = True
    grace_seconds: int = 5


def check_dns_label(value: str, what: str) -> str:
    """``value`` if it is a DNS-1123 label (namespaces, names), else ``ConfigError`` naming it."""
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
        raise ConfigError(f"{what} {value!r} is not a valid Kubernetes name (lower-case "
                          "letters, digits and '-', at most 63, starting and ending with "
                          "a letter or digit)")
    return value


def label_value(value: str) -> str:
    """``value`` as a label value, or '' when it can't be one (the label is then left out)."""
    return value if _LABEL_VALUE.fullmatch(value) else ""


def kernel_selector(instance: str) -> str:
    """The label selector of every kernel object of this gateway instance (the watch's)."""
    return f"{MANAGED_BY}=kernelyard,{INSTANCE}={instance}"


def kernel_labels(inputs: PodSpecInputs) -> dict[str, str]:
    labels = {MANAGED_BY: "kernelyard", COMPONENT: "kernel", INSTANCE: inputs.instance,
              KERNEL_ID: inputs.kernel_id}
    if label_value(inputs.user):
        labels[USER] = inputs.user
    return labels


def check_pod_template(template: Mapping[str, Any], setting: str) -> None:
    """``ConfigError`` naming ``setting`` for a template key kernelyard does not take from it."""
    if not isinstance(template, Mapping):
        raise ConfigError(f"{setting} must be a mapping (a partial pod)")
    bad = sorted(set(template) - {"metadata", "spec"})
    metadata, spec = template.get("metadata") or {}, template.get("spec") or {}
    bad += [f"metadata.{k}" for k in sorted(set(metadata) - TEMPLATE_METADATA)]
    bad += [f"spec.{k}" for k in sorted(set(spec) - TEMPLATE_SPEC - {"containers"})]
    containers = spec.get("containers") or []
    if len(containers) > 1:
        bad.append("spec.containers (at most one, the kernel's)")
    for container in containers[:1]:
        bad += [f"spec.containers[0].{k}" for k in sorted(set(container) - TEMPLATE_CONTAINER)]
    if bad:
        raise ConfigError(f"{setting}: kernelyard sets these itself or does not allow them: "
                          f"{', '.join(bad)} (allowed: metadata {sorted(TEMPLATE_METADATA)}, "
                          f"spec {sorted(TEMPLATE_SPEC)}, containers[0] "
                          f"{sorted(TEMPLATE_CONTAINER)})")


def resource_requirements(inputs: PodSpecInputs) -> dict[str, dict[str, str]]:
    """The kernel container's requests and limits, from the resource model."""
    res = inputs.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    memory = res.memory if res.memory is not None else inputs.default_memory_mib
    if memory:
        requests["memory"] = f"{memory}Mi"
        limits["memory"] = f"{res.memory_limit or memory}Mi"
    cpus = _millicores(res.cpus) or _millicores(inputs.default_cpus)
    if cpus:
        requests["cpu"] = cpus
    if res.cpus_limit:
        limits["cpu"] = _millicores(res.cpus_limit)
    if res.gpus:
        limits[inputs.gpu_resource] = str(res.gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _millicores(value: Any) -> str:
    if value in (None, "", 0):
        return ""
    if isinstance(value, str):
        value = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
    return f"{math.ceil(value * 1000)}m"


def launcher_argv(inputs: PodSpecInputs) -> list[str]:
    """The container's command: the launcher from the ConfigMap, the secrets from the Secret."""
    return [inputs.python, f"{LAUNCHER_DIR}/launcher.py",
            "--secrets-file", f"{SECRETS_DIR}/{SECRETS_FILE}",
            "--kernel-id", inputs.kernel_id, "--kernel-name", inputs.kernel_name,
            "--run-dir", RUN_DIR, "--ip", "0.0.0.0",  # noqa: S104 - the pod's own network
            *inputs.launcher_args]


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def kernel_container(inputs: PodSpecInputs, extra: Mapping[str, Any]) -> dict[str, Any]:
    security = {**container_security(), "readOnlyRootFilesystem": inputs.read_only_root}
    ours = {"HOME", "TMPDIR"}
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"},  # noqa: S108
           *[e for e in extra.get("env", []) if e.get("name") not in ours]]
    container: dict[str, Any] = {
        "name": CONTAINER, "image": inputs.image, "imagePullPolicy": inputs.pull_policy,
        "command": launcher_argv(inputs), "env": env,
        "resources": resource_requirements(inputs), "securityContext": security,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "kernelyard-launcher", "mountPath": LAUNCHER_DIR, "readOnly": True},
            {"name": "kernelyard-secrets", "mountPath": SECRETS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's emptyDir
            *extra.get("volumeMounts", [])]}
    if extra.get("workingDir"):
        container["workingDir"] = extra["workingDir"]
    return container


def pod_manifest(inputs: PodSpecInputs) -> dict[str, Any]:
    """The kernel's pod: the admin's template under kernelyard's own fields."""
    template = copy.deepcopy(dict(inputs.pod_template))
    meta, spec = template.get("metadata") or {}, template.get("spec") or {}
    extra_container = (spec.pop("containers", None) or [{}])[0]
    extra_volumes = spec.pop("volumes", [])
    spec.setdefault("nodeSelector", {}).update(inputs.node_selector)
    if not spec["nodeSelector"]:
        del spec["nodeSelector"]
    tolerations = [*spec.pop("tolerations", []), *map(dict, inputs.tolerations)]
    if tolerations:
        spec["tolerations"] = tolerations
    spec.update({
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "enableServiceLinks": False, "terminationGracePeriodSeconds": inputs.grace_seconds,
        "securityContext": {"runAsUser": inputs.uid, "runAsGroup": inputs.gid,
                            "fsGroup": inputs.gid, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [kernel_container(inputs, extra_container)],
        "volumes": [
            {"name": "kernelyard-launcher",
             "configMap": {"name": inputs.pod_name, "defaultMode": 0o444}},
            {"name": "kernelyard-secrets",
             "secret": {"secretName": inputs.pod_name, "defaultMode": 0o440}},
            {"name": "tmp", "emptyDir": {}}, *extra_volumes]})
    if inputs.resources.walltime:
        spec["activeDeadlineSeconds"] = inputs.resources.walltime
    labels = {**(meta.get("labels") or {}), **kernel_labels(inputs)}
    annotations = {**(meta.get("annotations") or {}), KERNEL_NAME: inputs.kernel_name}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": inputs.pod_name, "namespace": inputs.namespace,
                         "labels": labels, "annotations": annotations},
            "spec": spec}


def owner_reference(pod_name: str, pod_uid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid,
            "blockOwnerDeletion": False, "controller": False}


def secret_manifest(inputs: PodSpecInputs, pod_uid: str, payload: bytes) -> dict[str, Any]:
    """The kernel's secrets (``command.secrets_payload``), owned by its pod."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": _owned_metadata(inputs, pod_uid),
            "data": {SECRETS_FILE: base64.b64encode(payload).decode()}}


def configmap_manifest(inputs: PodSpecInputs, pod_uid: str,
                       files: Mapping[str, str]) -> dict[str, Any]:
    """The launcher's files (``launcher.py``, ``launcher_spark.py``), owned by the pod."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
            "metadata": _owned_metadata(inputs, pod_uid), "data": dict(files)}


def _owned_metadata(inputs: PodSpecInputs, pod_uid: str) -> dict[str, Any]:
    return {"name": inputs.pod_name, "namespace": inputs.namespace,
            "labels": kernel_labels(inputs),
            "ownerReferences": [owner_reference(inputs.pod_name, pod_uid)]}


def network_policy_manifest(namespace: str, instance: str,
                            gateway_pod_labels: Mapping[str, str], gateway_namespace: str,
                            gateway_cidrs: tuple[str, ...]) -> dict[str, Any]:
    """Kernel pods of ``instance`` accept ingress only from the gateway's pods or addresses."""
    sources: list[dict[str, Any]] = []
    if gateway_pod_labels:
        source: dict[str, Any] = {"podSelector": {"matchLabels": dict(gateway_pod_labels)}}
        if gateway_namespace:
            source["namespaceSelector"] = {
                "matchLabels": {"kubernetes.io/metadata.name": gateway_namespace}}
        sources.append(source)
    sources += [{"ipBlock": {"cidr": cidr}} for cidr in gateway_cidrs]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"kernelyard-{instance}"[:63].rstrip("-"),
                         "namespace": namespace,
                         "labels": {MANAGED_BY: "kernelyard", INSTANCE: instance}},
            "spec": {"podSelector": {"matchLabels": {MANAGED_BY: "kernelyard",
                                                     COMPONENT: "kernel", INSTANCE: instance}},
                     "policyTypes": ["Ingress"], "ingress": [{"from": sources}]}}
