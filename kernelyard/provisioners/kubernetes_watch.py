"""One watch per namespace for all of a gateway's kernel pods, and its cache.

``NamespaceWatch`` lists the pods of the gateway's instance once (label selector), then
watches from that list's resource version, applying every event to a cache of pod
dicts; a dropped stream is resumed from the last resource version seen (bookmarks keep
it fresh), and only a ``410 Gone`` makes it list again. Status questions are answered
from the cache, so the API server's load does not grow with the number of kernels
(one list, then one long request per ``watch_seconds``).

``synced_at`` says since when the cache is complete: a pod created before it and
missing from the cache is gone (deleted while nobody watched).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

#: (namespace, selector, resource_version or None, watch) -> the raw aiohttp response
Lister = Callable[..., Awaitable[Any]]
TOMBSTONE_SECONDS = 600.0  # a deleted pod's last state, for status questions after it


class WatchGone(Exception):
    """The server no longer has the resource version (410): list again."""


class NamespaceWatch:
    """The cached pods of one namespace, kept current by one watch."""

    def __init__(self, namespace: str, selector: str, lister: Lister,
                 watch_seconds: int = 300, retry_seconds: float = 2.0):
        self.namespace = namespace
        self.selector = selector
        self.lister = lister
        self.watch_seconds = watch_seconds
        self.retry_seconds = retry_seconds
        self.pods: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, tuple[float, dict[str, Any]]] = {}
        self.synced_at = 0.0  # 0: not listed yet (or lost the server since)
        self.resource_version: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def pod(self, name: str) -> dict[str, Any] | None:
        """The pod's last state: the cached one, else its last before deletion."""
        found = self.pods.get(name)
        if found is None and name in self.deleted:
            found = self.deleted[name][1]
        return found

    def was_deleted(self, name: str) -> bool:
        return name in self.deleted

    async def _run(self) -> None:
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except WatchGone:
                self.resource_version = None
            except Exception as e:  # the API server is away: try again, keep the cache
                if getattr(e, "status", None) == 410:  # refused at the request: list again
                    self.resource_version = None
                    continue
                log.warning("Kubernetes watch of namespace %s: %s; retrying in %.0f s",
                            self.namespace, e or type(e).__name__, self.retry_seconds)
                await asyncio.sleep(self.retry_seconds)

    async def _list(self) -> None:
        started = time.time()
        body = await _read_json(await self.lister(self.namespace, self.selector, None, False))
        pods = {p["metadata"]["name"]: p for p in body.get("items") or []}
        for name in set(self.pods) - set(pods):
            self._forget(name, self.pods[name])
        self.pods = pods
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion")
        self.synced_at = started

    async def _watch(self) -> None:
        response = await self.lister(self.namespace, self.selector, self.resource_version, True)
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return  # the server ended the watch (watch_seconds): resume
                self._apply(json.loads(line))
        finally:
            response.release()

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchGone(obj.get("message", "410 Gone"))
            raise RuntimeError(f"watch error: {obj.get('message', obj)}")
        meta = obj.get("metadata") or {}
        self.resource_version = meta.get("resourceVersion") or self.resource_version
        if kind == "BOOKMARK":
            return
        name = meta.get("name", "")
        if kind == "DELETED":
            self.pods.pop(name, None)
            self._forget(name, obj)
        else:
            self.pods[name] = obj

    def _forget(self, name: str, last: dict[str, Any]) -> None:
        now = time.time()
        self.deleted[name] = (now, last)
        for old in [n for n, (t, _) in self.deleted.items() if now - t > TOMBSTONE_SECONDS]:
            del self.deleted[old]


async def _read_json(response: Any) -> dict[str, Any]:
    try:
        return json.loads(await response.read())  # type: ignore[no-any-return]
    finally:
        response.release()
