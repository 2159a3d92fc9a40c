"""Request checks: a launch body, a session model, paths, kernel ids, client text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from ..identity import check_kernel_id
from .env import EnvPolicy, _checked_text, filter_client_env

MAX_SESSION_ID = 255  # it becomes a ZMQ routing id (at most 255 bytes)


@dataclass(frozen=True)
class LaunchRequest:
    """A validated ``POST /api/kernels`` body."""

    kernel_name: str | None
    path: str | None
    env: dict[str, str]
    kernel_id: str | None


def check_session_id(value: Any) -> str:
    """A websocket client's ``?session_id=``: jupyter_client sends it as ASCII in every
    message header, and jupyter_server makes it the ZMQ identity of the kernel sockets,
    so only printable ASCII of at most 255 characters passes."""
    if not isinstance(value, str) or len(value) > MAX_SESSION_ID or not (
            value.isascii() and value.isprintable()):
        raise InvalidRequest(
            f"'session_id' must be printable ASCII of at most {MAX_SESSION_ID} characters")
    return value


def check_api_path(path: Any, field: str = "path") -> str | None:
    """A notebook path may not climb out of the gateway's root directory."""
    if path is None:
        return None
    check_text(field, path)
    if any(part == ".." for part in path.replace("\\", "/").split("/")):
        raise InvalidRequest(f"{field!r} may not contain '..'")
    return path


def check_text(field: str, value: Any) -> str:
    """A client's string that reaches a kernel's env the way a path does (a session's
    path and name make ``JPY_SESSION_NAME``): at most 4096 characters, nothing
    ``unsafe_character`` refuses, no backtick. ``$`` passes, as file names may hold it."""
    return _checked_text(repr(field), value, frozenset("`"))


def check_session_model(body: Any) -> Mapping[str, Any]:
    """Validate a ``POST /api/sessions`` or ``PATCH /api/sessions/{id}`` body.

    Checks the type of every field present and the characters of those that reach
    the kernel's env; whether ``path`` and ``type`` are there is left to
    jupyter_server. ``name``, ``kernel.id`` and ``kernel.name`` may be null.
    """
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    if "type" in body:
        check_text("type", body["type"])
    if "path" in body:  # a null path is refused too: every session has one
        check_api_path(check_text("path", body["path"]))
    if body.get("name") is not None:
        check_text("name", body["name"])
    kernel = _object_field(body, "kernel")
    for name in ("id", "name"):
        if kernel.get(name) is not None:
            check_text(f"kernel.{name}", kernel[name])
    notebook = _object_field(body, "notebook")  # the old API: its path or name is the path
    for name in ("path", "name"):
        check_api_path(notebook.get(name), f"notebook.{name}")
    return body


def _object_field(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name, {})
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{name!r} must be a JSON object")
    return value


def parse_launch_request(body: Any, policy: EnvPolicy) -> LaunchRequest:
    """Validate a ``POST /api/kernels`` body (``{name, path, env}``)."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidRequest("'name' must be a non-empty string")
    if name is not None:
        check_text("name", name)  # it reaches jupyter_client's log lines
    env = filter_client_env(body.get("env"), policy)
    kernel_id = env.pop("KERNEL_ID", None)
    if kernel_id is not None:
        kernel_id = check_kernel_id(kernel_id)
    return LaunchRequest(
        kernel_name=name,
        path=check_api_path(body.get("path")),
        env=env,
        kernel_id=kernel_id,
    )
