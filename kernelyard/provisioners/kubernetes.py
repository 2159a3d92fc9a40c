"""``kernelyard-kubernetes``: each kernel in its own pod (the ``kubernetes`` extra).

``submit`` resolves the kernel's namespace and its owner's uid/gid (the user map; uid 0
never), builds the pod with ``kubernetes_pods.pod_manifest`` from the admin's settings
and ``self.plan`` (the user, the resources), creates it, then the Secret (the launcher's
secrets, ``Delivery.KUBERNETES_SECRET``) and the ConfigMap (the launcher), both owned by
the pod. The names are persisted before anything is created, so a gateway killed at any
point leaves enough for the next one to delete all three. Status comes from the backend
object's watch of the namespace (``kubernetes_backend``); docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import secrets as secrets_mod
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, default

from ..errors import ConfigError, NotFound
from ..identity import RunAsRefused, check_kernel_id
from ..launcher import spark_startup_source
from ..resources import parse_memory_mib
from ..usermap import RunAsRules, UserIdentity, user_map_from_config
from . import command
from . import start_steps as steps
from .backend import Backend
from .base import RemoteProvisionerBase
from .kubernetes_backend import KubernetesBackend, KubernetesConfig
from .kubernetes_client import own_namespace
from .kubernetes_pods import (
    PodSpecInputs,
    check_dns_label,
    check_pod_template,
    configmap_manifest,
    network_policy_manifest,
    pod_manifest,
    secret_manifest,
)
from .launcher_link import launcher_args
from .resource_settings import UNENFORCED


class KubernetesProvisioner(RemoteProvisionerBase):
    """Starts each kernel as a pod; watches pods per namespace; deletes them by name."""

    image = Unicode("", config=True, help="The kernel image (needs a Python 3.8+ for the "
                    "launcher, which is mounted from a ConfigMap, and the kernel itself).")
    image_pull_policy = Enum(["Always", "IfNotPresent", "Never"], "IfNotPresent",
                             config=True, help="The kernel container's imagePullPolicy.")
    python = Unicode("python3", config=True, help="The Python in the image that runs the "
                     "launcher; also fills {python} in the kernelspec's argv.")
    namespace = Unicode("kernelyard-kernels", config=True,
                        help="The namespace of this kernelspec's kernel pods "
                        "(namespace_mode 'kernelspec').")
    namespace_mode = Enum(["kernelspec", "user"], "kernelspec", config=True,
                          help="'kernelspec': every kernel in `namespace`; 'user': each user's "
                          "kernels in user_namespace_prefix + the user name (the namespace "
                          "must exist, with the gateway's Role in it).")
    user_namespace_prefix = Unicode("kernelyard-", config=True,
                                    help="Prefix of the per-user namespaces.")
    kube_config = Enum(["auto", "in-cluster", "kubeconfig"], "auto", config=True,
                       help="How to reach the cluster: 'in-cluster' (the gateway pod's service "
                       "account), 'kubeconfig' (kubeconfig_path and context), 'auto' "
                       "(in-cluster when KUBERNETES_SERVICE_HOST is set).")
    kubeconfig_path = Unicode("", config=True,
                              help="The kubeconfig file ('' : $KUBECONFIG or ~/.kube/config).")
    context = Unicode("", config=True, help="The kubeconfig context of this kernelspec's "
                      "cluster ('' : the current one); one backend object per context.")
    instance = Unicode(config=True, help="The kernelyard.io/instance label of this gateway's "
                       "kernel pods (shared by replicas). Default: derived from the store.")
    user_map_source = Enum(["passwd", "static"], "passwd", config=True,
                           help="Where a user's uid/gid come from: 'passwd' (the gateway "
                           "host's user databases) or 'static' (user_map).")
    user_map = Dict(config=True, help="{'alice': {'uid': 1001, 'gid': 1001}} for "
                    "user_map_source 'static'. uid or gid 0 is always refused.")
    min_uid = Integer(1000, config=True, help="The lowest uid a kernel pod may run as.")
    network_policy = Bool(True, config=True,
                          help="Ensure a NetworkPolicy in each kernel namespace: kernel pods "
                          "accept traffic only from the gateway (gateway_pod_labels in "
                          "gateway_namespace, or gateway_cidrs). Enforced only by a CNI "
                          "that supports NetworkPolicy.")
    gateway_pod_labels = Dict(config=True, help="Labels of the gateway's pods, for the "
                              "NetworkPolicy (the chart sets them).")
    gateway_namespace = Unicode("", config=True, help="The gateway pods' namespace, for the "
                                "NetworkPolicy ('' : the pod's own, when in the cluster).")
    gateway_cidrs = List(Unicode(), config=True, help="Addresses (CIDR) the gateway reaches "
                         "kernel pods from when it runs outside the cluster, for the "
                         "NetworkPolicy, e.g. the node address ['10.244.0.1/32'].")
    pod_template = Dict(config=True, help="An admin's partial pod merged under kernelyard's "
                        "fields: metadata labels/annotations; spec nodeSelector, tolerations, "
                        "affinity, priorityClassName, serviceAccountName, volumes, ...; "
                        "containers[0] volumeMounts, env, workingDir.")
    node_selector = Dict(config=True, help="The kernel pods' nodeSelector (never from a client).")
    tolerations = List(Dict(), config=True, help="The kernel pods' tolerations.")
    default_memory = Unicode("", config=True, help="Memory request and limit of a kernel "
                             "whose client asks for none (e.g. '1g'; '' : none).")
    default_cpus = Unicode("", config=True, help="CPU request of a kernel whose client asks "
                           "for none (e.g. '0.5'; '' : none).")
    gpu_resource = Unicode("nvidia.com/gpu", config=True,
                           help="The extended resource KERNEL_GPUS asks for.")
    read_only_root_filesystem = Bool(True, config=True, help="Mount the image read-only "
                                     "(the pod gets a writable emptyDir at /tmp, HOME=/tmp).")
    stuck_pending_timeout = Float(30.0, config=True,
                                  help="Seconds a pod may stay unschedulable or unable to "
                                  "pull/create its container before its start fails with "
                                  "the cluster's message (raise it where a cluster "
                                  "autoscaler adds nodes for pending pods).")
    request_timeout = Float(30.0, config=True, help="Seconds one API request may take.")

    poll_interval = Float(1.0, config=True, help="Seconds between status rounds (answered "
                          "from the namespace watch's cache: no API request).")
    backend_class: ClassVar[type[Backend]] = KubernetesBackend
    supported_resources: ClassVar[frozenset[str]] = UNENFORCED | {"gpus", "gpus_limit",
                                                                  "walltime"}

    @default("instance")
    def _instance_default(self) -> str:
        return steps.instance_tag()

    def backend_config(self) -> KubernetesConfig:
        return KubernetesConfig(
            poll_interval=self.poll_interval, kube_config=self.kube_config,
            kubeconfig_path=self.kubeconfig_path, context=self.context,
            instance=self.instance, request_timeout=self.request_timeout,
            stuck_seconds=self.stuck_pending_timeout)

    @property
    def kube(self) -> KubernetesBackend:
        backend = self.backend
        assert isinstance(backend, KubernetesBackend)
        return backend

    def kernels_share_account(self) -> bool:
        return False  # every pod runs as its owner's uid

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        inputs = await asyncio.to_thread(self.pod_inputs, argv)  # user lookups may block (NSS)
        yield {"namespace": inputs.namespace, "pod": inputs.pod_name, "user": inputs.user}
        await self._ensure_namespace_ready(inputs.namespace)
        pod = await self.kube.client.create("pods", inputs.namespace, pod_manifest(inputs))
        uid = pod["metadata"]["uid"]
        yield {"pod_uid": uid, "created_at": time.time()}
        payload = command.secrets_payload(secrets, env)  # Delivery.KUBERNETES_SECRET
        files = {"launcher.py": command.launcher_source().decode(),
                 "launcher_spark.py": spark_startup_source().decode()}
        await asyncio.gather(
            self.kube.client.create("secrets", inputs.namespace,
                                    secret_manifest(inputs, uid, payload)),
            self.kube.client.create("configmaps", inputs.namespace,
                                    configmap_manifest(inputs, uid, files)))

    def pod_inputs(self, argv: list[str]) -> PodSpecInputs:
        """What this kernel's pod is made of (checked: a bad setting is a ConfigError)."""
        if not self.image:
            raise ConfigError("KubernetesProvisioner.image is not set for kernelspec "
                              f"{self.kernel_spec.display_name!r}")
        check_pod_template(self.pod_template, "KubernetesProvisioner.pod_template")
        identity = self._identity()
        plan = self.plan
        return PodSpecInputs(
            kernel_id=check_kernel_id(self.kernel_id),
            pod_name=f"kernel-{self.kernel_id}-{secrets_mod.token_hex(2)}",
            namespace=self._namespace(identity.name), instance=self.instance,
            kernel_name=self.km.kernel_name, user=identity.name, uid=identity.uid,
            gid=identity.gid, image=self.image, pull_policy=self.image_pull_policy,
            python=self.python,
            launcher_args=tuple(a.replace("{python}", self.python)
                                for a in launcher_args(argv)),
            resources=plan.resources,
            default_memory_mib=(parse_memory_mib(self.default_memory,
                                                 "KubernetesProvisioner.default_memory")
                                if self.default_memory else None),
            default_cpus=self.default_cpus, gpu_resource=self.gpu_resource,
            node_selector=dict(self.node_selector), tolerations=tuple(self.tolerations),
            pod_template=dict(self.pod_template),
            read_only_root=self.read_only_root_filesystem,
            grace_seconds=max(1, int(self.shutdown_grace)))

    def _identity(self) -> UserIdentity:
        user_map = user_map_from_config(self.user_map_source, self.user_map)
        try:
            return user_map.resolve(self.plan.run_as, RunAsRules(min_uid=self.min_uid))
        except NotFound as e:
            raise RunAsRefused(f"{e.message} (KubernetesProvisioner.user_map_source = "
                               f"{self.user_map_source!r})") from None
        except ConfigError as e:
            raise RunAsRefused(f"{e.message} (KubernetesProvisioner.user_map)") from None

    def _namespace(self, user: str) -> str:
        if self.namespace_mode == "kernelspec":
            return check_dns_label(self.namespace, "KubernetesProvisioner.namespace")
        try:
            return check_dns_label(self.user_namespace_prefix + user,
                                   "the per-user namespace")
        except ConfigError as e:
            raise RunAsRefused(f"user {user!r} can't have a kernel namespace: {e.message}") \
                from None

    async def _ensure_namespace_ready(self, namespace: str) -> None:
        self.kube.watch(namespace)
        if self.network_policy:
            await self.kube.ensure_network_policy(network_policy_manifest(
                namespace, self.instance, self.gateway_pod_labels,
                self._gateway_namespace(), tuple(self.gateway_cidrs)))

    def _gateway_namespace(self) -> str:
        if not self.gateway_cidrs and not self.gateway_pod_labels:
            raise ConfigError(
                "KubernetesProvisioner.network_policy is on, but neither gateway_cidrs nor "
                "gateway_pod_labels says where the gateway connects from: kernel pods would "
                "accept nobody (set one, or network_policy = False)")
        if self.gateway_namespace or not self.kube.config.in_cluster:
            return self.gateway_namespace
        return own_namespace()
