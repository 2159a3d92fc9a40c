"""The real YARN of ci/yarn, for tests: its env file, RM REST calls, waits and logs."""

from __future__ import annotations

import functools
import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import realparts
from tests.waits import wait_for

STATE = realparts.state("yarn")
KILL_TIMEOUT = 60
ACTIVE = "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING"


@pytest.fixture(scope="module")
def yarn() -> dict[str, str]:
    env = realparts.env("yarn")
    try:
        rm(env, "/ws/v1/cluster/info")
    except OSError as e:
        realparts.missing("yarn", f"the ResourceManager at {env['KY_YARN_RM_URL']} does not "
                          f"answer ({e})")
    return env


def rm(env: dict[str, str], path: str, method: str = "GET",
       body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(env["KY_YARN_RM_URL"] + path, data=data, method=method,
                                 headers={"Accept": "application/json",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        data = resp.read()
    try:
        return json.loads(data or b"null")
    except ValueError:  # a few RM calls answer in plain text ("signal success")
        return data.decode(errors="replace")


def apps(env: dict[str, str], tag: str, states: str | None = None) -> list[dict[str, Any]]:
    query = {"applicationTags": tag}
    if states:
        query["states"] = states
    listed = rm(env, "/ws/v1/cluster/apps?" + urllib.parse.urlencode(query))["apps"]
    return (listed or {}).get("app", [])


def kill(env: dict[str, str], app_id: str) -> None:
    rm(env, f"/ws/v1/cluster/apps/{app_id}/state", "PUT", {"state": "KILLED"})


@pytest.fixture
def tags(yarn: dict[str, str]) -> Iterator[Callable[[], str]]:
    """New application tags; every application still active under one is killed after."""
    made: list[str] = []

    def new() -> str:
        made.append(f"kytest-{uuid.uuid4().hex[:12]}")  # YARN lowercases tags
        return made[-1]

    yield new
    for tag in made:
        for app in apps(yarn, tag, ACTIVE):
            kill(yarn, app["id"])
        wait_for(f"applications tagged {tag} to end", KILL_TIMEOUT,
              functools.partial(none_active, yarn, tag))


def none_active(env: dict[str, str], tag: str) -> bool:
    return not apps(env, tag, ACTIVE)


def tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


def driver_log(env: dict[str, str], app_id: str, name: str) -> str:
    """A log of the driver (the AM, the app's first container) in the NM's log dir."""
    found = sorted(Path(env["KY_YARN_NM_LOG_DIR"], app_id).glob(f"container_*_000001/{name}"))
    return found[0].read_text(errors="replace") if found else f"(no {name} for {app_id})"
