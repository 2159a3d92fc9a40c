"""Steps of a remote start that need no provisioner: what the launcher is given, and the
wait for its callback (``RemoteProvisionerBase.launch_kernel`` runs them)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..errors import KernelStartFailed
from ..kernel_env import is_gateway_secret
from ..store.base import KernelRecord
from .status import BackendStatus


def remote_env(inherited_names: Iterable[str], env: dict[str, str]) -> dict[str, str]:
    """What travels: the provisioner's ``inherited_envs``, then the env the kernel manager
    gave (``KernelyardApp.inherited_envs`` and the client's names; never the gateway's
    environment). The kernelspec's env is added by ``pre_launch``."""
    inherited = {k: os.environ[k] for k in inherited_names
                 if k in os.environ and not is_gateway_secret(k)}
    return {**inherited, **env}


def kernel_argv(kernel_spec: Any, extra: list[str]) -> list[str]:
    """The kernelspec's argv with ``{resource_dir}`` filled in, then ``extra``."""
    resource_dir = kernel_spec.resource_dir
    argv = [arg.replace("{resource_dir}", resource_dir) for arg in kernel_spec.argv]
    return argv + list(extra)


def curve_keypair(enabled: bool) -> dict[str, str]:
    """A fresh CurveZMQ keypair for one start, or none."""
    if not enabled:
        return {}
    import zmq

    public, secret = zmq.curve_keypair()
    return {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}


def launch_timeout(default: float, maximum: float, env: dict[str, str]) -> float:
    """``default``, or the client's longer KERNEL_LAUNCH_TIMEOUT up to ``maximum``."""
    timeout = float(default)
    asked = env.get("KERNEL_LAUNCH_TIMEOUT")
    with contextlib.suppress(TypeError, ValueError):
        if asked:
            timeout = max(timeout, min(float(asked), maximum))
    return timeout


async def await_callback(reported: asyncio.Future[dict[str, Any]], timeout: float,
                         interval: float, last_status: Callable[[], BackendStatus],
                         name: str) -> dict[str, Any]:
    """The launcher's report; KernelStartFailed when the backend says the kernel ended
    first (looked at every ``interval``) or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise KernelStartFailed(f"Kernel '{name}' did not start within {timeout:g} s; "
                                    f"the backend last reported: {last_status().describe()}")
        done, _ = await asyncio.wait({reported}, timeout=min(left, interval))
        if done:
            return reported.result()
        status = last_status()
        if status.ended:
            raise KernelStartFailed(f"Kernel '{name}' failed to start: {status.describe()}")


def kernel_record(kernel_id: str, km: Any, kernel_spec: Any, default_name: str) -> KernelRecord:
    """The store record of a kernel about to be submitted (its owner, its provisioner)."""
    provisioner = kernel_spec.metadata.get("kernel_provisioner", {}).get(
        "provisioner_name", default_name)
    return KernelRecord(kernel_id=kernel_id, kernel_name=km.kernel_name,
                        provisioner=provisioner, owner=getattr(km, "owner", "") or "")


async def undo_start(state: dict[str, Any],
                     *steps: Callable[[dict[str, Any]], Awaitable[None]]) -> str:
    """Run ``steps`` (cancel, release) on a failed start's state; '' or what failed.

    A step that fails ends the undo: a cancel that failed keeps what release would free.
    """
    for step in steps if state else ():
        try:
            await step(state)
        except Exception as e:
            return f"{getattr(step, '__name__', 'a step')} failed ({type(e).__name__}: {e})"
    return ""


def instance_tag() -> str:
    """The tag every kernel of this gateway (and of replicas on its store) carries on its
    backend (a YARN application tag, a pod label): derived from the store's location."""
    from ..store import StoreFactory

    digest = hashlib.sha256(StoreFactory.instance().url.encode()).hexdigest()[:12]
    return f"kernelyard-{digest}"
