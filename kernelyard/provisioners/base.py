"""The shared lifecycle of every remote kernel; backends implement a few hooks.

Who calls what:

- jupyter_client's ``KernelManager`` calls ``pre_launch``, ``launch_kernel``,
  ``poll``, ``send_signal``, ``terminate``/``kill``, ``cleanup`` and
  ``get/load_provisioner_info`` (the latter when kernelyard re-adopts kernels
  from its store after a restart).
- This base calls the backend hooks:

  ``submit(argv, env, secrets)``  once per start; an async generator that yields
      JSON-able checkpoints (host, pid, job id). Each is merged into ``state`` and
      persisted before the next step, so a crash mid-start can still be cleaned
      up. ``secrets`` (key, token, callback_url) must travel only over the
      backend's protected channel (ssh stdin, the resource manager's env API).
  ``status(states)``  about every ``poll_interval``, for ALL kernels of the
      backend in one call (one ssh command per host, one squeue, one YARN query);
      returns a ``BackendStatus`` per state, in order.
  ``cancel(state)``  to stop a kernel; idempotent, works from persisted state
      alone (after a gateway restart).
  ``release(state)``  optional: free staging dirs once the kernel is gone.
  ``signal(state, signum)``  optional native signal; return False to fall back
      to the launcher's signed control endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets as secrets_mod
import signal as signals
import time
from collections.abc import AsyncIterator
from typing import Any, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Float, List, Unicode

from ..callbacks import CallbackRegistry
from ..errors import KernelStartFailed
from ..policy import is_gateway_secret
from ..store import StoreFactory
from ..store.base import KernelRecord
from .status import BackendStatus, StatusPoller

KERNEL_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
LAUNCHER_NAME = "kernelyard-launcher"


def launcher_args(argv: list[str]) -> list[str]:
    """The launcher's arguments for a kernelspec argv, to follow the backend's own options.

    An argv that starts with ``kernelyard-launcher`` carries launcher options of its
    own (``kernelyard-launcher --spark-session lazy -- python -m ...``); any other
    argv is the kernel command itself.
    """
    if argv and argv[0] == LAUNCHER_NAME:
        return argv[1:]
    return ["--", *argv]


class RemoteProvisionerBase(KernelProvisionerBase):  # type: ignore[misc]
    """Launch through a backend, wait for the launcher's callback, watch, stop."""

    launch_timeout = Float(
        120.0,
        config=True,
        help="Seconds from submit until the launcher calls back. A kernelspec may set "
        "metadata.kernel_provisioner.config.launch_timeout; a client may ask for more with "
        "KERNEL_LAUNCH_TIMEOUT, up to max_launch_timeout (a shorter KERNEL_LAUNCH_TIMEOUT "
        "ends the whole start at that deadline: GatewayMappingKernelManager.launch).",
    )
    max_launch_timeout = Float(
        600.0, config=True, help="The most a client's KERNEL_LAUNCH_TIMEOUT may ask for."
    )
    poll_interval = Float(
        2.0,
        config=True,
        help="Seconds between status queries to the backend (one query for all its kernels).",
    )
    shutdown_grace = Float(
        5.0, config=True, help="Seconds a kernel has to exit after SIGTERM before SIGKILL."
    )
    curve_encryption = Bool(
        False, config=True,
        help="Encrypt the kernel's ZMQ channels with CurveZMQ: the gateway makes a keypair "
        "per kernel start and sends it with the other secrets. Needs a kernel that reads "
        "curve_publickey/curve_secretkey from its connection file (ipykernel >= 7.4).",
    )
    inherited_envs = List(
        Unicode(),
        config=True,
        help="Names of the gateway's env variables passed to this provisioner's kernels "
        "(besides KernelyardApp.inherited_envs). KERNELYARD_* names and the gateway's "
        "secrets never pass.",
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.state: dict[str, Any] = {}
        self.connection_info: KernelConnectionInfo = {}
        self._exit_code: int | None = None
        self._curve: dict[str, str] = {}

    # ---- backend hooks ---------------------------------------------------------

    def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        raise NotImplementedError

    async def cancel(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    async def release(self, state: dict[str, Any]) -> None:
        """Free what the kernel left on the backend (optional)."""

    async def signal(self, state: dict[str, Any], signum: int) -> bool:
        """Deliver a signal natively; False means 'use the launcher' (the default)."""
        return False

    # ---- whom kernels run as --------------------------------------------------------

    def kernels_share_account(self) -> bool:
        """Whether kernels of different users would run under one OS or cluster account.

        Asked at startup for every kernelspec (``kernelyard.startup_checks``): a
        backend that runs every kernel as one account lets one user's kernel read
        another's connection file and run code in it. True unless a backend says
        otherwise (it runs each kernel as its owner).
        """
        return True

    def run_as_owner_setting(self) -> str:
        """The setting that makes this backend run each kernel as its owner ('' if none)."""
        return ""

    # ---- jupyter_client's provisioner interface ------------------------------

    @property
    def km(self) -> Any:
        """The KernelManager of this kernel."""
        return self.parent

    @property
    def has_process(self) -> bool:
        return bool(self.state) and self._exit_code is None

    @property
    def poller(self) -> StatusPoller:
        return StatusPoller.for_backend(type(self), self.poll_interval)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.km
        km.session.key = secrets_mod.token_hex(32).encode()
        client_env = self._remote_env(kwargs.get("env") or {})
        kwargs = await super().pre_launch(**{**kwargs, "env": client_env})
        kwargs["cmd"] = self._kernel_argv(kwargs.pop("extra_arguments", []))
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env = kwargs.get("env", {})
        registry = CallbackRegistry.instance()
        token, reported = registry.expect(self.kernel_id)
        secrets = {"key": self.km.session.key.decode(), "token": token,
                   "callback_url": registry.url_for(self.kernel_id), **self._curve_keypair()}
        self._exit_code = None
        self.state = {}
        try:
            await self._record_new_kernel()
            async for checkpoint in self.submit(cmd, env, secrets):
                await self._checkpoint(checkpoint)
            self.poller.register(self)
            submitted = time.time()
            report = await self._await_callback(reported, self._launch_timeout(env))
            self.log.info("Kernel %s: the launcher on %s called back %.2f s after submit "
                          "(at %.3f)", self.kernel_id, report.get("hostname"),
                          time.time() - submitted, time.time())
        except BaseException as e:
            registry.forget(self.kernel_id)
            problem = await self._abandon_start()
            if problem and isinstance(e, KernelStartFailed):  # the client learns of both
                raise type(e)(f"{e.message}; {problem}") from e
            raise
        self.connection_info = self._connection_from(report)
        await self._store().update(self.kernel_id, state=self.state,
                                   connection=self.connection_info)
        return self.connection_info.copy()

    async def poll(self) -> int | None:
        if self._exit_code is not None or not self.state:
            return self._exit_code if self.state else 0
        status = self.poller.latest(self.kernel_id)
        if status is not None and status.ended:
            self._exit_code = status.exit_code if status.exit_code is not None else 1
        return self._exit_code

    async def wait(self) -> int | None:
        while await self.poll() is None:
            await self.poller.next_round()
        return self._exit_code

    async def send_signal(self, signum: int) -> None:
        if signum == 0:
            return
        if not await self.signal(self.state, signum):
            await self._control("signal", signum=int(signum))

    async def terminate(self, restart: bool = False) -> None:
        """Ask the launcher to stop the kernel; if it is gone, cancel through the backend."""
        try:
            await self._control("shutdown", grace=self.shutdown_grace)
        except KernelStartFailed as e:
            self.log.info("Kernel %s: %s; cancelling through the backend", self.kernel_id, e)
            await self.cancel(self.state)

    async def kill(self, restart: bool = False) -> None:
        with contextlib.suppress(Exception):
            await self._control("signal", signum=int(signals.SIGKILL))
        await self.cancel(self.state)
        self._exit_code = self._exit_code if self._exit_code is not None else -9

    async def cleanup(self, restart: bool = False) -> None:
        self.poller.unregister(self.kernel_id)
        CallbackRegistry.instance().forget(self.kernel_id)
        if self.state:
            await self.release(self.state)
        if not restart:
            await self._store().delete(self.kernel_id)
        self.state = {}
        self.connection_info = {}

    def log_tail(self) -> str:
        """What the backend last said about the kernel (its log tail, once it ended)."""
        status = self.poller.latest(self.kernel_id)
        return status.reason if status else ""

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, self.shutdown_grace + self.poll_interval)

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(state=self.state, connection_info=self._public_connection())
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.state = dict(provisioner_info.get("state") or {})
        self.connection_info = cast(KernelConnectionInfo,
                                    dict(provisioner_info.get("connection_info") or {}))
        if self.state:
            self.poller.register(self)

    # ---- the lifecycle ----------------------------------------------------------

    async def _await_callback(
        self, reported: asyncio.Future[dict[str, Any]], timeout: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise KernelStartFailed(
                    f"Kernel '{self.kernel_spec.display_name}' did not start within "
                    f"{timeout:g} s; the backend last reported: {self._last_status().describe()}"
                )
            done, _ = await asyncio.wait({reported}, timeout=min(left, self.poll_interval))
            if done:
                return reported.result()
            status = self._last_status()
            if status.ended:
                raise KernelStartFailed(
                    f"Kernel '{self.kernel_spec.display_name}' failed to start: "
                    f"{status.describe()}"
                )

    def _last_status(self) -> BackendStatus:
        return self.poller.latest(self.kernel_id) or BackendStatus(
            "pending", host=str(self.state.get("host", "")), reason="no status yet"
        )

    async def discard_unfinished_start(self) -> None:
        """Cancel and forget a kernel whose start never finished (its gateway stopped
        before the callback): from the persisted state alone, as after a restart."""
        await self._abandon_start()

    async def _abandon_start(self) -> str:
        """Cancel whatever a failed start submitted, and forget it.

        The store record goes in any case; returns '' or what could not be cleaned up
        (the state is logged, so that an operator can finish by hand).
        """
        self.poller.unregister(self.kernel_id)
        problems = []
        for step in (self.cancel, self.release) if self.state else ():
            try:
                await step(self.state)
            except Exception as e:  # a cancel that failed keeps what release would free
                problems.append(f"{step.__name__} failed ({type(e).__name__}: {e})")
                break
        await self._store().delete(self.kernel_id)
        self._exit_code = 1
        if not problems:
            return ""
        self.log.error("Kernel %s: cleaning up its start failed; the backend may still hold "
                       "it (state %s): %s", self.kernel_id, json.dumps(self.state),
                       "; ".join(problems))
        return "cleaning it up failed too: " + "; ".join(problems)

    async def _record_new_kernel(self) -> None:
        record = KernelRecord(
            kernel_id=self.kernel_id,
            kernel_name=self.km.kernel_name,
            provisioner=self.kernel_spec.metadata.get("kernel_provisioner", {}).get(
                "provisioner_name", type(self).__name__),
            owner=getattr(self.km, "owner", "") or "",
        )
        await self._store().put(record)

    async def _checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.state.update(checkpoint)
        await self._store().update(self.kernel_id, state=self.state)

    def _store(self) -> Any:
        return StoreFactory.instance().store

    def _launch_timeout(self, env: dict[str, str]) -> float:
        timeout = float(self.launch_timeout)
        asked = env.get("KERNEL_LAUNCH_TIMEOUT")
        with contextlib.suppress(TypeError, ValueError):
            if asked:
                timeout = max(timeout, min(float(asked), self.max_launch_timeout))
        return timeout

    def _remote_env(self, env: dict[str, str]) -> dict[str, str]:
        """What travels: this provisioner's ``inherited_envs``, then the env the kernel
        manager gave (``KernelyardApp.inherited_envs`` and the client's names; never
        the gateway's environment). The kernelspec's env is added by ``pre_launch``."""
        inherited = {k: os.environ[k] for k in self.inherited_envs
                     if k in os.environ and not is_gateway_secret(k)}
        return {**inherited, **env}

    def _kernel_argv(self, extra: list[str]) -> list[str]:
        resource_dir = self.kernel_spec.resource_dir
        argv = [arg.replace("{resource_dir}", resource_dir) for arg in self.kernel_spec.argv]
        return argv + list(extra)

    def _curve_keypair(self) -> dict[str, str]:
        """A fresh CurveZMQ keypair for this start (kept until the callback), or none."""
        self._curve = {}
        if self.curve_encryption:
            import zmq

            public, secret = zmq.curve_keypair()
            self._curve = {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}
        return dict(self._curve)

    def _connection_from(self, report: dict[str, Any]) -> KernelConnectionInfo:
        info: dict[str, Any] = {name: report[name] for name in KERNEL_PORT_NAMES}
        info.update(ip=report["ip"], key=self.km.session.key, transport="tcp",
                    signature_scheme="hmac-sha256", kernel_name=self.km.kernel_name,
                    **self._curve)
        self.state.update(hostname=report["hostname"], ip=report["ip"], pid=report["pid"],
                          pgid=report["pgid"], launcher_port=report["launcher_port"])
        return cast(KernelConnectionInfo, info)

    def _public_connection(self) -> dict[str, Any]:
        return {k: v for k, v in self.connection_info.items()
                if k not in ("key", "curve_secretkey")}

    async def _control(self, action: str, **fields: Any) -> dict[str, Any]:
        """A signed request to the launcher's control endpoint."""
        from ..launcher import control_request_body, sign

        ip, port = self.state.get("ip"), self.state.get("launcher_port")
        if not ip or not port:
            raise KernelStartFailed(f"kernel {self.kernel_id} has no launcher to control")
        body = control_request_body(action, **fields)
        key = self.km.session.key
        try:
            response = await AsyncHTTPClient().fetch(
                f"http://{ip}:{port}/control", method="POST", body=body,
                headers={"X-Kernelyard-Signature": sign(key, body),
                         "Content-Type": "application/json"},
                request_timeout=10,
            )
        except HTTPClientError as e:
            raise KernelStartFailed(
                f"launcher of kernel {self.kernel_id} refused {action}: {e}") from None
        except OSError as e:
            raise KernelStartFailed(
                f"launcher of kernel {self.kernel_id} unreachable: {e}") from None
        return json.loads(response.body or b"{}")
