"""A pod's status as the kernel's: the fields the real cluster sets in each case
(tests/integration/test_kubernetes.py sees every case on the real one)."""

from __future__ import annotations

from typing import Any

from kernelyard.provisioners.kubernetes_status import pod_status
from kernelyard.provisioners.status import EXITED, FAILED, PENDING, RUNNING

NOW = 1_800_000_000.0
CREATED = "2027-01-15T08:00:00Z"  # NOW - 0 s


def pod(phase: str, state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    containers = [{"name": "kernel", "state": state}] if state else []
    return {"metadata": {"name": "p", "creationTimestamp": CREATED},
            "spec": {"nodeName": "n1"},
            "status": {"phase": phase, "containerStatuses": containers, **status}}


def at(seconds_after_creation: float) -> float:
    import datetime

    created = datetime.datetime.fromisoformat(CREATED.replace("Z", "+00:00")).timestamp()
    return created + seconds_after_creation


def test_running_and_pending() -> None:
    assert pod_status(pod("Running", {"running": {}}), at(1), 10).phase == RUNNING
    assert pod_status(pod("Pending"), at(1), 10).phase == PENDING
    assert pod_status(None, at(1), 10).phase == PENDING


def test_unschedulable_fails_only_once_stuck_with_the_schedulers_message() -> None:
    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    p = pod("Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                    "reason": "Unschedulable", "message": message,
                                    "lastTransitionTime": CREATED}])
    assert pod_status(p, at(2), 10).phase == PENDING
    late = pod_status(p, at(11), 10)
    assert late.phase == FAILED and message in late.reason


def test_image_pull_errors() -> None:
    pulling = pod("Pending", {"waiting": {"reason": "ErrImagePull", "message": "not found"}})
    assert pod_status(pulling, at(1), 10).phase == PENDING
    assert pod_status(pulling, at(10), 10).phase == FAILED
    never = pod("Pending", {"waiting": {"reason": "ErrImageNeverPull", "message": "x"}})
    assert pod_status(never, at(0), 10).phase == FAILED


def test_oom_kill_and_exit_with_log_lines() -> None:
    oom = pod("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    status = pod_status(oom, at(5), 10)
    assert (status.phase, status.exit_code) == (EXITED, 137) and "OOMKilled" in status.reason
    crashed = pod("Failed", {"terminated": {"exitCode": 3, "reason": "Error",
                                            "message": "Traceback...\nboom"}})
    status = pod_status(crashed, at(5), 10)
    assert status.exit_code == 3 and status.reason.endswith("boom")


def test_wall_time_and_deletion() -> None:
    deadline = pod("Failed", {"terminated": {"exitCode": 137, "reason": "Error"}},
                   reason="DeadlineExceeded", message="Pod was active on the node longer "
                   "than the specified deadline")
    assert "DeadlineExceeded" in pod_status(deadline, at(5), 10).reason
    deleted = pod("Running", {"running": {}})
    deleted["metadata"]["deletionTimestamp"] = CREATED
    status = pod_status(deleted, at(5), 10)
    assert status.ended and "deleted" in status.reason
