"""The Kubernetes backend object: one per cluster (kubeconfig context) and gateway instance.

It holds the API client, one ``NamespaceWatch`` per kernel namespace (label selector on
the instance), the NetworkPolicy it ensured in each, and answers ``status`` for every
kernel from the watches' caches: no API request per kernel or per poll. ``cancel``
deletes the pod, its Secret and its ConfigMap by the names in the stored state (404 is
success), so it is idempotent and works after a gateway restart.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from .backend import Backend, BackendConfig
from .kubernetes_client import KubeClient
from .kubernetes_pods import kernel_selector
from .kubernetes_status import GONE, pod_status
from .kubernetes_watch import NamespaceWatch
from .status import PENDING, BackendStatus

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


@dataclass(frozen=True, kw_only=True)
class KubernetesConfig(BackendConfig):
    """The settings that make one Kubernetes backend object."""

    kube_config: str = "auto"
    kubeconfig_path: str = ""
    context: str = ""
    instance: str = "kernelyard"
    request_timeout: float = 30.0
    stuck_seconds: float = 30.0
    watch_seconds: int = 300

    @property
    def in_cluster(self) -> bool:
        if self.kube_config == "auto":
            return bool(os.environ.get(IN_CLUSTER_ENV))
        return self.kube_config == "in-cluster"


class KubernetesBackend(Backend):
    """One cluster: the client, the watches, status from their caches, cancel by name."""

    config_class: ClassVar[type[BackendConfig]] = KubernetesConfig
    config: KubernetesConfig

    def __init__(self, config: BackendConfig, logger: Any = None):
        super().__init__(config, logger)
        self.client = KubeClient(self.config.in_cluster, self.config.kubeconfig_path,
                                 self.config.context, self.config.request_timeout)
        self.watches: dict[str, NamespaceWatch] = {}
        self.policies: set[str] = set()

    async def setup(self) -> None:
        await self.client.connect()

    async def teardown(self) -> None:
        await super().teardown()
        for watch in self.watches.values():
            await watch.stop()
        self.watches = {}
        await self.client.close()

    def watch(self, namespace: str) -> NamespaceWatch:
        """The namespace's watch, started on first use."""
        watch = self.watches.get(namespace)
        if watch is None:
            watch = self.watches[namespace] = NamespaceWatch(
                namespace, kernel_selector(self.config.instance), self.client.list_pods,
                self.config.watch_seconds)
            watch.start()
        return watch

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """From the watches' caches: no API request."""
        now = time.time()
        return [self._status_of(state, now) for state in states]

    def _status_of(self, state: dict[str, Any], now: float) -> BackendStatus:
        namespace, name = state.get("namespace"), state.get("pod")
        if not namespace or not name:
            return BackendStatus(PENDING, reason="no pod yet")
        watch = self.watch(str(namespace))
        pod = watch.pod(str(name))
        if pod is None and watch.synced_at > float(state.get("created_at") or now):
            return GONE  # created before the list that doesn't have it
        status = pod_status(pod, now, self.config.stuck_seconds)
        if watch.was_deleted(str(name)) and not status.ended:
            return GONE
        return status

    async def cancel(self, state: dict[str, Any]) -> None:
        """Delete the pod, its Secret and ConfigMap (each 404 is fine)."""
        namespace, name = state.get("namespace"), state.get("pod")
        if not namespace or not name:
            return
        await asyncio.gather(self.client.delete("pods", namespace, name, grace_seconds=0),
                             self.client.delete("secrets", namespace, name),
                             self.client.delete("configmaps", namespace, name))

    async def release(self, state: dict[str, Any]) -> None:
        """A kernel that ended (or was shut down through its launcher) leaves a finished
        pod: delete it and its objects as ``cancel`` does."""
        await self.cancel(state)

    async def ensure_network_policy(self, manifest: dict[str, Any]) -> None:
        """Create or update the namespace's NetworkPolicy, once per backend object."""
        namespace = manifest["metadata"]["namespace"]
        if namespace in self.policies:
            return
        await self.client.apply_network_policy(manifest)
        self.policies.add(namespace)
