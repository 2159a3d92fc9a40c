"""The namespace watch: a list, then a watch from its resource version; a dropped stream is
resumed from the last version seen, and only 410 Gone lists again. The API server is a
scripted stand-in here (a real one can't be made to answer 410 on demand); the real
cluster's watch is tested in tests/integration/test_kubernetes.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kernelyard.provisioners.kubernetes_watch import NamespaceWatch


class Response:
    """A raw API response: a body, or watch event lines."""

    def __init__(self, body: Any = None, events: list[dict[str, Any]] | None = None):
        self.body = body
        self.lines = [json.dumps(e).encode() + b"\n" for e in events or []]
        self.content = self

    async def read(self) -> bytes:
        return json.dumps(self.body).encode()

    async def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""

    def release(self) -> None:
        pass


def pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}, "status": {"phase": "x"}}


async def run_watch(script: list[Any]) -> tuple[NamespaceWatch, list[tuple[Any, bool]]]:
    calls: list[tuple[Any, bool]] = []

    async def lister(namespace: str, selector: str, version: Any, watch: bool) -> Response:
        calls.append((version, watch))
        if not script:
            await asyncio.sleep(3600)
        return script.pop(0)  # type: ignore[no-any-return]

    watch = NamespaceWatch("ns", "sel", lister, retry_seconds=0.01)
    watch.start()
    for _ in range(200):
        if not script:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await watch.stop()
    return watch, calls


def test_a_dropped_watch_resumes_from_the_last_version_and_410_lists_again() -> None:
    script = [
        Response({"metadata": {"resourceVersion": "10"}, "items": [pod("a", "9")]}),
        Response(events=[{"type": "ADDED", "object": pod("b", "11")},
                         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}]),
        Response(events=[{"type": "DELETED", "object": pod("a", "16")},
                         {"type": "ERROR", "object": {"code": 410, "message": "too old"}}]),
        Response({"metadata": {"resourceVersion": "30"}, "items": [pod("b", "29")]}),
    ]
    watch, calls = asyncio.run(run_watch(script))
    assert calls[:4] == [(None, False), ("10", True), ("15", True), (None, False)]
    assert set(watch.pods) == {"b"}
    assert watch.was_deleted("a") and watch.pod("a") is not None
    assert watch.resource_version == "30"


def test_an_unreachable_server_keeps_the_cache_and_retries() -> None:
    async def scenario() -> tuple[NamespaceWatch, int]:
        attempts = 0

        async def lister(namespace: str, selector: str, version: Any, watch: bool) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                return Response({"metadata": {"resourceVersion": "5"}, "items": [pod("a", "4")]})
            raise OSError("connection refused")

        watch = NamespaceWatch("ns", "sel", lister, retry_seconds=0.01)
        watch.start()
        await asyncio.sleep(0.2)
        await watch.stop()
        return watch, attempts

    watch, attempts = asyncio.run(scenario())
    assert attempts > 3
    assert set(watch.pods) == {"a"} and watch.resource_version == "5"
