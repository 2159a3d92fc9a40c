"""A kernel pod's state as a ``BackendStatus``: a pure function of the pod the watch saw.

Failures a start must not wait out are told apart here, with the cluster's own words:
a pod the scheduler can't place (its ``Unschedulable`` message, after
``stuck_seconds``), an image that can't be pulled, a container that can't be created,
a kernel that exited (its last log lines: the container's termination message,
``FallbackToLogsOnError``), an OOM kill, the wall time (``activeDeadlineSeconds``),
a deleted pod.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .status import EXITED, FAILED, PENDING, RUNNING, BackendStatus

# Waiting reasons after which a container never starts without someone's help.
STUCK_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                           "InvalidImageName", "CreateContainerConfigError",
                           "CreateContainerError", "RunContainerError"})
FATAL_AT_ONCE = frozenset({"ErrImageNeverPull", "InvalidImageName"})
GONE = BackendStatus(EXITED, exit_code=-9, reason="the kernel's pod was deleted")


def pod_status(pod: Mapping[str, Any] | None, now: float, stuck_seconds: float) -> BackendStatus:
    """What ``pod`` (an API object as a dict; None: not seen) says about its kernel."""
    if pod is None:
        return BackendStatus(PENDING, reason="the pod is not in the watch yet")
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    host = str((pod.get("spec") or {}).get("nodeName") or "")
    ended = _terminated(status)
    if ended is not None:
        return _exited(ended, status, host)
    if meta.get("deletionTimestamp"):
        return BackendStatus(EXITED, host, exit_code=-9, reason="the kernel's pod was deleted")
    if status.get("phase") in ("Failed", "Succeeded"):
        return BackendStatus(EXITED, host, exit_code=1 if status["phase"] == "Failed" else 0,
                             reason=_pod_reason(status))
    if status.get("phase") == "Running" and _running(status):
        return BackendStatus(RUNNING, host)
    return _pending(meta, status, host, now, stuck_seconds)


def _pending(meta: Mapping[str, Any], status: Mapping[str, Any], host: str, now: float,
             stuck_seconds: float) -> BackendStatus:
    age = now - _timestamp(meta.get("creationTimestamp"), now)
    unschedulable = next((c for c in status.get("conditions") or []
                          if c.get("type") == "PodScheduled" and c.get("status") == "False"
                          and c.get("reason") == "Unschedulable"), None)
    if unschedulable is not None:
        reason = f"the scheduler can't place the pod: {unschedulable.get('message', '')}"
        since = now - _timestamp(unschedulable.get("lastTransitionTime"), now)
        phase = FAILED if min(age, since) >= stuck_seconds else PENDING
        return BackendStatus(phase, host, reason=reason)
    waiting = _waiting(status)
    if waiting is not None:
        why = waiting.get("reason", "")
        reason = f"{why}: {waiting.get('message', '')}".rstrip(": ")
        if why in FATAL_AT_ONCE or (why in STUCK_WAITING and age >= stuck_seconds):
            return BackendStatus(FAILED, host, reason=f"the kernel's container can't start: "
                                 f"{reason}")
        return BackendStatus(PENDING, host, reason=reason)
    return BackendStatus(PENDING, host, reason=str(status.get("phase") or "Pending"))


def _container(status: Mapping[str, Any]) -> Mapping[str, Any]:
    found = status.get("containerStatuses") or []
    return found[0] if found else {}


def _running(status: Mapping[str, Any]) -> bool:
    return "running" in (_container(status).get("state") or {})


def _waiting(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    waiting = (_container(status).get("state") or {}).get("waiting")
    return waiting if waiting else None


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    terminated = (_container(status).get("state") or {}).get("terminated")
    return terminated if terminated else None


def _exited(terminated: Mapping[str, Any], status: Mapping[str, Any], host: str) -> BackendStatus:
    code = terminated.get("exitCode")
    why = str(terminated.get("reason") or "")
    parts = []
    if why == "OOMKilled":
        parts.append("OOMKilled: the kernel's container went over its memory limit")
    elif status.get("reason") == "DeadlineExceeded":
        parts.append(f"DeadlineExceeded: {status.get('message', 'the wall time ran out')}")
    elif why and why not in ("Error", "Completed"):
        parts.append(why)
    message = str(terminated.get("message") or "").rstrip()
    if message:
        parts.append(f"last lines of the kernel's log:\n{message}")
    return BackendStatus(EXITED, host, exit_code=int(code) if code is not None else 1,
                         reason="; ".join(parts))


def _pod_reason(status: Mapping[str, Any]) -> str:
    reason, message = status.get("reason") or "", status.get("message") or ""
    return f"{reason}: {message}".strip(": ")


def _timestamp(text: Any, default: float) -> float:
    if not text:
        return default
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
