"""The YARN backend object: RM clients, driver log tails, batched status, cancel.

One ``YarnBackend`` exists per cluster configuration (``YarnConfig``: RM URLs or the
Hadoop conf dir they are read from, RM auth and timeout, the instance tag), shared
by the kernelspecs that have it. Each application carries its kernel's tag and the
instance tag, so ONE ResourceManager query per poll interval finds all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from .backend import Backend, BackendConfig
from .status import EXITED, PENDING, RUNNING, BackendStatus
from .yarn_rm import ResourceManager, YarnApp, rm_urls_from_hadoop_conf

# An app that is not listed this long after submit is taken as never submitted.
NOT_LISTED_GRACE_MS = 120_000
ClusterKey = tuple[tuple[str, ...], str]  # (the RMs' URLs, the instance tag)


@dataclass(frozen=True, kw_only=True)
class YarnConfig(BackendConfig):
    """The ``YarnProvisioner`` settings that make one YARN backend object."""

    rm_urls: tuple[str, ...] = ()
    hadoop_conf_dir: str = ""
    rm_auth: str = "simple"
    rm_timeout: float = 10.0
    instance_tag: str = ""


class YarnBackend(Backend):
    """One YARN cluster (and gateway instance tag), as one backend object."""

    config_class: ClassVar[type[BackendConfig]] = YarnConfig
    config: YarnConfig

    def __init__(self, config: BackendConfig, logger: Any = None):
        super().__init__(config, logger)
        self._clients: dict[tuple[str, ...], ResourceManager] = {}
        self._log_tails: dict[str, str] = {}  # application id -> its driver's log tail

    async def teardown(self) -> None:
        """Close the RM clients' HTTP clients."""
        await super().teardown()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def rm_for(self, state: dict[str, Any] | None = None) -> ResourceManager:
        """The RM client of a kernel's cluster (from its state), or of this configuration."""
        urls = tuple((state or {}).get("rm_urls") or ()) or self.config.rm_urls or tuple(
            rm_urls_from_hadoop_conf(self._conf_dir()))
        client = self._clients.get(urls)
        if client is None:
            auth = _spnego_header if self.config.rm_auth == "kerberos" else None
            client = self._clients[urls] = ResourceManager(urls, self.config.rm_timeout, auth)
        return client

    def _conf_dir(self) -> str:
        if not self.config.hadoop_conf_dir:
            raise ConfigError("set YarnProvisioner.rm_urls or HADOOP_CONF_DIR "
                              "(YarnProvisioner.hadoop_conf_dir)")
        return self.config.hadoop_conf_dir

    # ---- status ----------------------------------------------------------------------

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """One RM query per cluster and instance tag (normally one) for all kernels."""
        listed = await self._list_apps(states)
        found = [_app_of(s, listed.get(_cluster_key(s), [])) for s in states]
        statuses = [_status_of(s, app) for s, app in zip(states, found, strict=True)]
        ended = {app.id: (state, app) for state, app, status in zip(states, found, statuses,
                                                                    strict=True)
                 if app is not None and status.ended and app.id not in self._log_tails}
        tails = await asyncio.gather(*(self._driver_logs(state, app)
                                       for state, app in ended.values()))
        self._log_tails.update(zip(ended, tails, strict=True))
        return [_with_tail(status, self._log_tails.get(app.id, "") if app else "")
                for status, app in zip(statuses, found, strict=True)]

    async def _list_apps(self, states: list[dict[str, Any]]) -> dict[ClusterKey, list[YarnApp]]:
        oldest: dict[ClusterKey, int] = {}
        for state in states:
            if state.get("instance_tag"):
                key = _cluster_key(state)
                oldest[key] = min(oldest.get(key, since(state)), since(state))
        lists = await asyncio.gather(*(self.rm_for({"rm_urls": key[0]}).apps(key[1], start)
                                       for key, start in oldest.items()))
        return dict(zip(oldest, lists, strict=True))

    async def _driver_logs(self, state: dict[str, Any], app: YarnApp) -> str:
        """The ends of the driver's stdout (the launcher's and kernel's lines) and stderr."""
        rm = self.rm_for(state)
        parts = []
        for name in ("stdout", "stderr"):
            text = last_lines(await rm.driver_log_tail(app, name), 15)
            if text:
                parts.append(f"last lines of the driver's {name}:\n{text}")
        return "\n".join(parts)

    # ---- cancel, release -------------------------------------------------------------

    async def cancel(self, state: dict[str, Any]) -> None:
        """Kill every active application of this kernel (found by its tag)."""
        await self.kill_apps(state, lambda app: app.active)

    async def kill_apps(self, state: dict[str, Any], which: Callable[[YarnApp], bool]) -> None:
        """Kill the kernel's applications that ``which`` picks."""
        if not state.get("tag"):
            return
        rm = self.rm_for(state)
        for app in await rm.apps(state["tag"], since(state)):
            if which(app):
                self.log.info("Killing YARN application %s (%s) of tag %s",
                              app.id, app.state, state["tag"])
                await rm.kill(app.id)

    async def release(self, state: dict[str, Any]) -> None:
        self._log_tails.pop(state.get("app_id", ""), None)


def _status_of(state: dict[str, Any], app: YarnApp | None) -> BackendStatus:
    if app is None:
        age = time.time() * 1000 - int(state.get("submitted_ms", 0))
        if "app_id" not in state or age < NOT_LISTED_GRACE_MS:
            return BackendStatus(PENDING, reason="submitting to YARN")
        return BackendStatus(EXITED, exit_code=1, reason=(
            f"YARN application {state['app_id']} is unknown to the ResourceManager"))
    if app.state == "RUNNING":
        return BackendStatus(RUNNING, app.am_host)
    if app.active:
        detail = f": {app.diagnostics}" if app.diagnostics else ""
        return BackendStatus(PENDING, app.am_host,
                             reason=f"YARN application {app.id} {app.state} in queue "
                             f"{app.queue}{detail}")
    code = 0 if app.final_status == "SUCCEEDED" else (-9 if app.state == "KILLED" else 1)
    reason = f"YARN application {app.id} {app.state} ({app.final_status})"
    if app.diagnostics:
        reason += f": {app.diagnostics}"
    return BackendStatus(EXITED, app.am_host, exit_code=code, reason=reason)


def _with_tail(status: BackendStatus, tail: str) -> BackendStatus:
    if not tail or not status.ended:
        return status
    return BackendStatus(status.phase, status.host, status.exit_code, f"{status.reason}\n{tail}")


def _cluster_key(state: dict[str, Any]) -> ClusterKey:
    return (tuple(state.get("rm_urls") or ()), state.get("instance_tag", ""))


def since(state: dict[str, Any]) -> int:
    """The startedTimeBegin that still finds the kernel's application (clock skew allowed)."""
    return max(int(state.get("submitted_ms", 0)) - 60_000, 0)


def _app_of(state: dict[str, Any], apps: list[YarnApp]) -> YarnApp | None:
    """This kernel's current application: by id once known, else the newest with its tag."""
    if state.get("app_id"):
        return next((a for a in apps if a.id == state["app_id"]), None)
    mine = [a for a in apps if state.get("tag") in a.tags
            and a.started_ms >= int(state.get("submitted_ms", 0)) - 60_000]
    return max(mine, key=lambda a: a.started_ms, default=None)


def last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def _spnego_header(host: str) -> str:
    from ..auth.spnego import negotiate_header

    return negotiate_header(host)
