"""The few Kubernetes API calls the backend makes, with its errors mapped to kernelyard's.

kubernetes_asyncio (the ``kubernetes`` extra) is imported here only, when a client
connects, so the provisioner modules import without it. Every call returns and takes
plain dicts (``_preload_content=False``: no model objects). An API server that can't be
reached is ``BackendUnavailable`` (503); a refusal (quota, admission, a namespace that
doesn't exist) is ``KernelStartFailed`` with the server's own message.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BackendUnavailable, ConfigError, KernelStartFailed


class KubeClient:
    """One API connection (a kubeconfig context, or the pod's service account)."""

    def __init__(self, in_cluster: bool, kubeconfig_path: str, context: str,
                 request_timeout: float):
        self.in_cluster = in_cluster
        self.kubeconfig_path = kubeconfig_path
        self.context = context
        self.request_timeout = request_timeout
        self.api: Any = None
        self.core: Any = None
        self.networking: Any = None

    async def connect(self) -> None:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        try:
            if self.in_cluster:
                config.load_incluster_config(client_configuration=configuration)
            else:
                await config.load_kube_config(config_file=self.kubeconfig_path or None,
                                              context=self.context or None,
                                              client_configuration=configuration,
                                              persist_config=False)
        except Exception as e:
            where = ("the pod's service account (KubernetesProvisioner.kube_config = "
                     "'in-cluster')" if self.in_cluster else
                     "KubernetesProvisioner.kubeconfig_path/context")
            raise ConfigError(f"cannot load the Kubernetes client configuration from "
                              f"{where}: {e}") from None
        self.api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api)
        self.networking = client.NetworkingV1Api(self.api)

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()
            self.api = None

    def _ready(self) -> None:
        if self.api is None:
            raise BackendUnavailable("the Kubernetes client is not connected")

    async def call(self, method: Any, *args: Any, timeout: float | None = None,
                   **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` returning the raw response (2xx), errors mapped."""
        self._ready()
        try:
            response = await method(*args, _preload_content=False,
                                    _request_timeout=timeout or self.request_timeout, **kwargs)
        except Exception as e:
            raise _unreachable(e) from None
        if response.status >= 400:
            try:
                body = await response.read()
            finally:
                response.release()
            raise _api_error(response.status, body)
        return response

    async def call_json(self, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = await self.call(method, *args, **kwargs)
        try:
            return json.loads(await response.read())  # type: ignore[no-any-return]
        finally:
            response.release()

    async def list_pods(self, namespace: str, selector: str, resource_version: str | None,
                        watch: bool) -> Any:
        """The raw response of a pod list, or of a watch from ``resource_version``."""
        if not watch:
            return await self.call(self.core.list_namespaced_pod, namespace,
                                   label_selector=selector)
        seconds = 300
        return await self.call(self.core.list_namespaced_pod, namespace,
                               label_selector=selector, watch=True,
                               resource_version=resource_version, allow_watch_bookmarks=True,
                               timeout_seconds=seconds, timeout=seconds + 30)

    async def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        method = getattr(self.core, f"create_namespaced_{_SINGULAR[kind]}")
        return await self.call_json(method, namespace, body)

    async def delete(self, kind: str, namespace: str, name: str,
                     grace_seconds: int | None = None) -> None:
        """Delete one object; a missing one is success (idempotent)."""
        method = getattr(self.core, f"delete_namespaced_{_SINGULAR[kind]}")
        kwargs: dict[str, Any] = {"propagation_policy": "Background"}
        if grace_seconds is not None:
            kwargs["grace_period_seconds"] = grace_seconds
        try:
            (await self.call(method, name, namespace, **kwargs)).release()
        except KernelStartFailed as e:
            if getattr(e, "status", None) != 404:
                raise

    async def apply_network_policy(self, manifest: dict[str, Any]) -> None:
        """Create the policy, or replace the one of that name."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            await self.call_json(self.networking.create_namespaced_network_policy,
                                 namespace, manifest)
        except KernelStartFailed as e:
            if getattr(e, "status", None) != 409:
                raise
            await self.call_json(self.networking.replace_namespaced_network_policy,
                                 name, namespace, manifest)


def own_namespace() -> str:
    """The namespace of the pod this gateway runs in (its service account's)."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the gateway pod's namespace ({e.strerror}): set "
                          "KubernetesProvisioner.gateway_namespace") from None


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_SINGULAR = {"pods": "pod", "secrets": "secret", "configmaps": "config_map"}


class KubernetesRefused(KernelStartFailed):
    """The API server refused a request; ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _unreachable(e: Exception) -> Exception:
    """A request that got no answer: ``BackendUnavailable``; anything else as it is."""
    if isinstance(e, OSError | TimeoutError) or type(e).__module__.startswith("aiohttp"):
        return BackendUnavailable(f"the Kubernetes API server can't be reached: "
                                  f"{e or type(e).__name__}")
    return e


def _api_error(status: int, body: bytes) -> KernelStartFailed:
    try:
        message = str(json.loads(body or b"{}").get("message", ""))
    except (ValueError, AttributeError):
        message = body[:500].decode(errors="replace")
    if status in (502, 503, 504):
        return BackendUnavailable(f"the Kubernetes API server is unavailable ({status}): "
                                  f"{message}")
    return KubernetesRefused(f"the Kubernetes API server refused the request ({status}): "
                             f"{message}", status)
