"""``GatewayMappingKernelManager``: the one kernel manager class, made of one base per concern."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from traitlets import Enum, Integer, default

from .. import policy, start_options
from ..audit import AuditLog
from ..kernel import GatewayKernelManager
from ..provisioners.backend import BackendRegistry
from ..quotas import QuotaGate
from .adoption import Adoption
from .launch import Launching
from .rules import LaunchRules


class GatewayMappingKernelManager(Launching, Adoption):
    """All kernels of this gateway, each with an owner."""

    max_kernels = Integer(
        0,
        config=True,
        help="The most kernels this gateway runs at once, counting starts in flight "
        "(0 = no limit). A start beyond it gets 403.",
    )
    remembered_kernel_ids = Integer(
        100_000,
        config=True,
        help="How many ids of kernels (live or gone, newest first) the gateway remembers, "
        "in memory, to refuse a client-chosen KERNEL_ID that names or named another "
        "kernel (400, the same answer for both, so ids can't be probed or reused; the "
        "owner of a live kernel gets 409). 0 remembers none.",
    )
    working_dir_policy = Enum(
        list(start_options.WORKING_DIR_POLICIES),
        "ignore",
        config=True,
        help="What a client's KERNEL_WORKING_DIR does (Jupyter Server sends the notebook's "
        "directory on ITS filesystem, which often does not exist here). "
        + "; ".join(f"'{k}': {v}" for k, v in start_options.WORKING_DIR_POLICIES.items())
        + ".",
    )

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return f"{GatewayKernelManager.__module__}.{GatewayKernelManager.__name__}"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.rules = LaunchRules()
        self.audit = AuditLog()
        self._starting: dict[str, Any] = {}  # kernel id -> its manager, while it starts
        self.quota_gate = QuotaGate(policy.QuotaPolicy(max_kernels=self.max_kernels or None),
                                    self.kernel_counts)
        self._used_ids: OrderedDict[str, None] = OrderedDict()  # ids kernels had
        self._claimed: set[str] = set()  # ids of starts in flight
        # Called with a kernel's id once it is removed (shut down, culled): its sessions go.
        self.kernel_removed_listeners: list[Callable[[str], None]] = []
        # The backend objects of this gateway's kernels (their provisioners find it up
        # their parent chain); KernelyardApp tears them down when it stops.
        self.backends = BackendRegistry(self.log)
