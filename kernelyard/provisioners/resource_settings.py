"""The kernelspec level of the resource limits, on every kernelyard provisioner.

``ResourceSettings`` is mixed into the provisioner bases (``RemoteProvisionerBase``,
``LocalKernelProvisioner``). Its ``resource_limits`` is settable in the config
(``c.YarnProvisioner.resource_limits``) and per kernelspec in
``metadata.kernel_provisioner.config.resource_limits``. The manager builds the
kernelspec's provisioner before ``authorize`` and hands ``check_resources`` to the
policy, so a refusal is a 400 before any backend is called.
"""

from __future__ import annotations

from typing import ClassVar

from traitlets import Dict, HasTraits

from ..errors import InvalidRequest
from ..resources import Limit, Resources, check_limits, parse_limits

# Fields every backend can take without honouring them (passed in the kernel's env, as
# before): memory and CPUs are not enforced by the local and SSH backends.
UNENFORCED = frozenset({"memory", "memory_limit", "cpus", "cpus_limit", "queue",
                        "executor_memory", "executor_cores", "num_executors", "spark_conf"})


class ResourceSettings(HasTraits):
    """``resource_limits`` (the kernelspec level) and the backend's resource check."""

    resource_limits = Dict(
        config=True,
        help="The kernelspec level of the resource limits: {'KERNEL_MEMORY': '8g', "
        "'KERNEL_CPUS': 4, 'KERNEL_GPUS': 0, 'KERNEL_QUEUE': ['default'], "
        "'KERNEL_SPARK_CONF': ['spark.sql.*']} (the grammar of kernelyard.resources). Set "
        "per kernelspec in metadata.kernel_provisioner.config.resource_limits. A request "
        "over it gets 400 naming the variable and the limit, before any backend is called.",
    )
    # The model fields this backend honours or accepts; a request for another (a
    # nonzero one) is a 400 naming its variable.
    supported_resources: ClassVar[frozenset[str]] = UNENFORCED

    def kernelspec_limits(self, spec_name: str) -> dict[str, Limit]:
        """Kernelspec ``spec_name``'s limits by model field; ``ConfigError`` naming the
        setting."""
        setting = f"{type(self).__name__}.resource_limits"
        return parse_limits(self.resource_limits, setting, f"the limit of kernelspec "
                            f"'{spec_name}'", dict.fromkeys(self.resource_limits, setting))

    def check_resources(self, resources: Resources, who: str, spec_name: str) -> None:
        """``InvalidRequest`` for what kernelspec ``spec_name`` refuses ``who``: a value
        over its limit, or a resource its backend can't honour (GPUs on the local one)."""
        check_limits(resources, self.kernelspec_limits(spec_name), who, InvalidRequest)
        unsupported = [f for f in resources.requested()
                       if f not in self.supported_resources and getattr(resources, f)]
        if unsupported:
            raise InvalidRequest(
                f"{resources.variable(unsupported[0])} is not supported by kernelspec "
                f"'{spec_name}' ({type(self).__name__} cannot honour it)")
