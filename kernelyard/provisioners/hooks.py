"""What kernelyard's kernel manager asks of a provisioner beyond jupyter_client's contract.

``GatewayKernelManager`` calls these directly on a provisioner that derives from
``ProvisionerHooks`` (kernelyard's local and remote provisioners do) and uses
``DEFAULT_HOOKS`` for any other (a plain jupyter_client provisioner).
"""

from __future__ import annotations


class ProvisionerHooks:
    """The declared hooks, with the defaults of a provisioner that has nothing to add."""

    #: Seconds between the backend's status queries: how soon a dead kernel is noticed
    #: (the restarter of a remote kernel looks this often). A trait on remote provisioners.
    poll_interval: float = 3.0

    def log_tail(self) -> str:
        """What the kernel (or its backend) last wrote: shown when it dies while starting."""
        return ""

    async def before_shutdown_request(self, restart: bool = False) -> None:
        """Called before the kernel is asked to shut down (YARN kills a half-started app)."""

    def launch_timeout_for(self, env: dict[str, str]) -> float | None:
        """Seconds a start with this env may take until ready; None: the local default."""
        return None

    def kernels_share_account(self) -> bool:
        """Whether kernels of different users would run under one OS or cluster account.

        Asked at startup for every kernelspec (``kernelyard.startup_checks``): a
        backend that runs every kernel as one account lets one user's kernel read
        another's connection file and run code in it.
        """
        return True

    def run_as_owner_setting(self) -> str:
        """The setting that makes this backend run each kernel as its owner ('' if none)."""
        return ""


DEFAULT_HOOKS = ProvisionerHooks()


def hooks_of(provisioner: object) -> ProvisionerHooks:
    """The provisioner itself when it declares the hooks, else the defaults."""
    return provisioner if isinstance(provisioner, ProvisionerHooks) else DEFAULT_HOOKS
