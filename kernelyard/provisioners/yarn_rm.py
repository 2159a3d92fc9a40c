"""The YARN ResourceManager's REST API, asynchronous, with failover between RMs.

Only what the YARN backend needs: applications by tag, kill, the scheduler's
queues, and the tail of a driver container's log (from its NodeManager).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..errors import BackendUnavailable, ConfigError

ACTIVE_STATES = frozenset({"NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING"})
_CONTAINER_LOGS = re.compile(r"^(https?://[^/]+)/node/containerlogs/(container_[0-9_e]+)/")


@dataclass(frozen=True)
class YarnApp:
    """One application as the RM reports it."""

    id: str
    state: str
    final_status: str
    user: str
    queue: str
    tags: frozenset[str]
    diagnostics: str
    started_ms: int
    launched_ms: int
    am_host: str
    am_container_logs: str

    @classmethod
    def from_json(cls, app: dict[str, Any]) -> YarnApp:
        tags = str(app.get("applicationTags") or "")
        return cls(
            id=str(app.get("id", "")), state=str(app.get("state", "")),
            final_status=str(app.get("finalStatus", "")), user=str(app.get("user", "")),
            queue=str(app.get("queue", "")),
            tags=frozenset(t for t in tags.split(",") if t),
            diagnostics=str(app.get("diagnostics") or "").strip(),
            started_ms=int(app.get("startedTime") or 0),
            launched_ms=int(app.get("launchTime") or 0),
            am_host=str(app.get("amHostHttpAddress") or "").rsplit(":", 1)[0],
            am_container_logs=str(app.get("amContainerLogs") or ""),
        )

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class ResourceManager:
    """A client of one YARN cluster's RM REST API.

    ``urls`` are the RMs' web addresses; a request goes to the last one that
    answered and fails over to the others when it is down or standby (which
    answers with a redirect). ``auth_header(host)``, if given, makes the
    ``Authorization`` header of each request (SPNEGO). ``requests`` counts the
    requests sent to RMs, for tests and benchmarks.
    """

    def __init__(self, urls: Iterable[str], timeout: float = 10.0,
                 auth_header: Callable[[str], str] | None = None):
        self.urls = [u.rstrip("/") for u in urls]
        if not self.urls:
            raise ConfigError("no YARN ResourceManager address is configured "
                              "(YarnProvisioner.rm_urls, or yarn-site.xml in HADOOP_CONF_DIR)")
        self.timeout = timeout
        self.auth_header = auth_header
        self.requests = 0
        self._active = 0
        self._http: AsyncHTTPClient | None = None

    def close(self) -> None:
        """Close this client's HTTP client (a later request makes a new one)."""
        http, self._http = self._http, None
        if http is not None:
            http.close()

    async def apps(self, tag: str, started_after_ms: int = 0) -> list[YarnApp]:
        """Applications carrying ``tag`` (one request, whatever their number)."""
        query = {"applicationTags": tag}
        if started_after_ms > 0:
            query["startedTimeBegin"] = str(started_after_ms)
        body = await self._rm_request("/ws/v1/cluster/apps?" + urllib.parse.urlencode(query))
        apps = (body.get("apps") or {}).get("app") or []
        return [YarnApp.from_json(app) for app in apps]

    async def kill(self, app_id: str) -> None:
        """Ask the RM to kill an application; an app that already ended is left alone."""
        if not re.fullmatch(r"application_\d+_\d+", app_id):
            raise ValueError(f"not a YARN application id: {app_id!r}")
        body = json.dumps({"state": "KILLED"})
        await self._rm_request(f"/ws/v1/cluster/apps/{app_id}/state", method="PUT",
                               body=body, ok_codes=(400, 404))

    async def leaf_queues(self) -> set[str]:
        """Leaf queue names and full paths (``analytics`` and ``root.analytics``)."""
        body = await self._rm_request("/ws/v1/cluster/scheduler")
        info = (body.get("scheduler") or {}).get("schedulerInfo") or {}
        names: set[str] = set()
        _collect_leaves(info, "root", names)
        return names

    async def driver_log_tail(self, app: YarnApp, name: str, size: int = 4096) -> str:
        """The end of a driver (AM) container log, from its NodeManager; '' if gone.

        Java stack frames are left out: the lines above them say what failed.
        """
        found = _CONTAINER_LOGS.match(app.am_container_logs)
        if not found:
            return ""
        nm, container = found.groups()
        url = f"{nm}/ws/v1/node/containerlogs/{container}/{name}?size=-{size}"
        try:
            response = await self._fetch(url, "GET", None, accept="text/plain")
        except (HTTPClientError, OSError):
            return ""
        return _log_contents(response.body.decode(errors="replace"))

    # ---- transport ---------------------------------------------------------------

    async def _rm_request(self, path: str, method: str = "GET", body: str | None = None,
                          ok_codes: tuple[int, ...] = ()) -> dict[str, Any]:
        errors: list[str] = []
        for offset in range(len(self.urls)):
            index = (self._active + offset) % len(self.urls)
            url = self.urls[index]
            self.requests += 1
            try:
                response = await self._fetch(url + path, method, body)
            except HTTPClientError as e:
                if e.code in ok_codes:
                    self._active = index
                    return {}
                if e.code < 500 and e.code not in (301, 302, 303, 307, 308, 599):
                    self._active = index
                    raise BackendUnavailable(
                        f"the YARN ResourceManager at {url} refused {method} {path.split('?')[0]}"
                        f" ({e.code} {_reason(e)})") from None
                errors.append(f"{url}: {_describe(e)}")
                continue
            except OSError as e:
                errors.append(f"{url}: {e.strerror or e}")
                continue
            self._active = index
            return json.loads(response.body or b"{}") if response.body else {}
        raise BackendUnavailable("the YARN ResourceManager is unreachable: " + "; ".join(errors))

    async def _fetch(self, url: str, method: str, body: str | None,
                     accept: str = "application/json") -> Any:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.auth_header is not None:  # SPNEGO may block on the KDC: not on the event loop
            host = urllib.parse.urlsplit(url).hostname or ""
            headers["Authorization"] = await asyncio.to_thread(self.auth_header, host)
        request = HTTPRequest(url, method=method, body=body, headers=headers,
                              follow_redirects=False, connect_timeout=self.timeout,
                              request_timeout=self.timeout)
        if self._http is None:
            self._http = AsyncHTTPClient(force_instance=True)
        return await self._http.fetch(request)


def _log_contents(text: str) -> str:
    """The log's own lines from the NM's answer (which wraps them in a header and footer)."""
    if "LogContents:\n" in text:
        text = text.split("LogContents:\n", 1)[1]
    text = text.split("\nEnd of LogType:", 1)[0]
    lines = [line for line in text.splitlines() if not line.startswith("\tat ")]
    return "\n".join(lines).strip()


def _collect_leaves(queue: dict[str, Any], path: str, names: set[str]) -> None:
    """Walk the CapacityScheduler's (``queues``) or FairScheduler's (``childQueues``) tree."""
    queue = queue.get("rootQueue") or queue
    children = _child_queues(queue)
    if not children:
        names.update({path.rsplit(".", 1)[-1], path})
        return
    for child in children:
        name = str(child.get("queueName", "")).rsplit(".", 1)[-1]
        if name:
            _collect_leaves(child, f"{path}.{name}", names)


def _child_queues(queue: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("queues", "childQueues"):
        group = queue.get(key)
        if isinstance(group, dict):
            group = group.get("queue")
        if group:
            return group if isinstance(group, list) else [group]
    return []


def _reason(e: HTTPClientError) -> str:
    body = getattr(e.response, "body", None) or b""
    try:
        message = json.loads(body).get("RemoteException", {}).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return str(message or e.message)[:300]


def _describe(e: HTTPClientError) -> str:
    if e.code in (301, 302, 303, 307, 308):
        return "standby (redirects to the active RM)"
    if e.code == 599:
        return str(e.message or "timeout")
    return f"{e.code} {e.message}"


def rm_urls_from_hadoop_conf(conf_dir: str) -> list[str]:
    """The RMs' web addresses from ``yarn-site.xml`` (with RM HA: one per rm-id)."""
    path = Path(conf_dir, "yarn-site.xml")
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - the operator's own Hadoop config
    except (OSError, ET.ParseError) as e:
        raise ConfigError(f"cannot read {path} for the ResourceManager address: {e}") from None
    props = {p.findtext("name", ""): p.findtext("value", "") for p in root.iter("property")}
    https = props.get("yarn.http.policy", "HTTP_ONLY") == "HTTPS_ONLY"
    key = "yarn.resourcemanager.webapp.https.address" if https else (
        "yarn.resourcemanager.webapp.address")
    scheme = "https" if https else "http"
    ids = [i.strip() for i in props.get("yarn.resourcemanager.ha.rm-ids", "").split(",") if i]
    suffixes = [f".{i}" for i in ids] or [""]
    urls = []
    for suffix in suffixes:
        address = props.get(key + suffix) or _default_address(props, suffix, https)
        if address:
            urls.append(f"{scheme}://{address}")
    return urls


def _default_address(props: dict[str, str], suffix: str, https: bool) -> str:
    host = props.get("yarn.resourcemanager.hostname" + suffix, "")
    return f"{host}:{8090 if https else 8088}" if host else ""
