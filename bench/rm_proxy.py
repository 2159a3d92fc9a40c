"""A small counting HTTP reverse proxy, put in front of a YARN ResourceManager.

Every request is forwarded as is to the target (no redirect following, so an RM
HA standby's redirect reaches the client) and counted by method and path (the
query string left out). The benchmark reads the counts at the start and end of
a window and takes the difference.

    python bench/rm_proxy.py --target http://127.0.0.1:8088 [--port 0]

runs it alone and prints the counts on Ctrl-C. ``bench/yarn.py`` runs it in a
thread with ``CountingProxy(target).start()``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import threading
import time
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

# Headers that describe one hop, not the message (RFC 9110 7.6.1), plus the ones
# tornado sets itself.
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "content-length", "host",
               "content-encoding"}
_APP_ID = re.compile(r"application_\d+_\d+")


def path_key(method: str, path: str) -> str:
    """'GET /ws/v1/cluster/apps/{app}/state' for a request: app ids folded, query left out."""
    return f"{method} {_APP_ID.sub('{app}', path.split('?', 1)[0])}"


class CountingProxy:
    """Forwards HTTP requests to ``target``; counts them by ``path_key``."""

    def __init__(self, target: str, host: str = "127.0.0.1", port: int = 0):
        self.target = target.rstrip("/")
        self.host = host
        self.port = port
        self.counts: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[float, str]] = []  # (epoch, key) of every request
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def record(self, method: str, path: str) -> None:
        key = path_key(method, path)
        with self._lock:
            self.counts[key] += 1
            self.log.append((time.time(), key))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def requests_between(self, begin: float, end: float) -> dict[str, int]:
        """Requests by path_key whose arrival (epoch) is in [begin, end)."""
        with self._lock:
            found = collections.Counter(key for t, key in self.log if begin <= t < end)
        return dict(found)

    # ---- running in a thread ---------------------------------------------------------

    def start(self) -> CountingProxy:
        """Listen (port 0 picks a free one) in a background thread; returns self."""
        sockets = bind_sockets(self.port, self.host)
        self.port = int(sockets[0].getsockname()[1])
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sockets, ready), daemon=True,
                                        name="rm-proxy")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, sockets: list[Any], ready: threading.Event) -> None:
        asyncio.run(self._serve(sockets, ready))

    async def _serve(self, sockets: list[Any], ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = HTTPServer(self.application())
        server.add_sockets(sockets)
        ready.set()
        await self._stopped.wait()
        server.stop()

    def application(self) -> Application:
        return Application([(r"/.*", _ForwardHandler, {"proxy": self})])


class _ForwardHandler(RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD")

    def initialize(self, proxy: CountingProxy) -> None:
        self.proxy = proxy

    async def _forward(self) -> None:
        self.proxy.record(self.request.method or "GET", self.request.uri or "/")
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in HOP_HEADERS}
        body = self.request.body if self.request.method in ("POST", "PUT") else None
        request = HTTPRequest(self.proxy.target + (self.request.uri or "/"),
                              method=self.request.method or "GET", headers=headers,
                              body=body, follow_redirects=False, decompress_response=False,
                              request_timeout=60, allow_nonstandard_methods=True)
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as e:
            if e.response is None:
                self.set_status(502)
                self.finish(f"rm_proxy: {e}")
                return
            response = e.response
        self.set_status(response.code, response.reason)
        for name in ("Content-Type", "Server", "Date"):
            self.clear_header(name)
        for name, value in response.headers.get_all():
            if name.lower() not in HOP_HEADERS:
                self.add_header(name, value)
        self.finish(None if response.code in (204, 304) else response.body or b"")

    get = post = put = delete = head = _forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="the RM's web address")
    parser.add_argument("--port", type=int, default=0)
    opts = parser.parse_args()
    proxy = CountingProxy(opts.target, port=opts.port).start()
    print(f"counting proxy on {proxy.url} -> {proxy.target}; Ctrl-C prints the counts",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        print(json.dumps(proxy.snapshot(), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
