"""The gateway's kernel manager: policy, quotas and ownership, then jupyter_server's machinery.

Culling, pending kernels, restarts and message buffering across websocket
reconnects all come from jupyter_server's ``AsyncMappingKernelManager``. This
package adds what a shared gateway needs:

- ``GatewayMappingKernelManager.launch``: every start goes through the policy
  (``kernelyard.policy``: whom the kernel runs as, kernelspec access, resource
  limits) and one ``QuotaGate`` (global, per user, per group, per kernelspec,
  counting starts in flight), and the kernel is recorded as its owner's, on its
  kernel manager (``km.owner``) and in the store (re-adopted after a restart);
- a client-chosen kernel id, and the guarantee that a failed start leaves
  nothing behind;
- ``GatewaySessionManager``: jupyter_server's sessions, each visible only to the
  owner of its kernel (and admins), with every kernel start through ``launch``.

Who is asking reaches the session manager through ``acting_as`` (a context
variable the session handlers set), because jupyter_server's session API has no
parameter for it.

One module per concern. ``GatewayMappingKernelManager`` is one class, built from
one base class per concern: ``KernelTable`` <- ``Starting`` <- ``Launching`` and
``KernelTable`` <- ``ActivityWatching`` <- ``Adoption``:

- ``table``: the kernels table: owners, kernelspecs, remembered ids;
- ``starting``: jupyter_server's start, and the cleanup of a failed or cancelled one;
- ``launch``: a start for a request: policy, quotas, kernel ids, working directory;
- ``activity``: IOPub activity, died kernels, culling;
- ``adoption``: stored remote kernels re-adopted at start, detached at stop;
- ``rules``: ``LaunchRules``, the settings every launch is judged by;
- ``sessions``: ``GatewaySessionManager``, ``Caller`` and ``acting_as``;
- ``mapping``: ``GatewayMappingKernelManager`` and its settings.
"""

from .mapping import GatewayMappingKernelManager
from .rules import OWN_ACCOUNT_VIAS, LaunchRules, os_groups, runs_as_gateway_account
from .sessions import NO_CALLER, Caller, GatewaySessionManager, acting_as, current_caller

__all__ = [
    "NO_CALLER",
    "OWN_ACCOUNT_VIAS",
    "Caller",
    "GatewayMappingKernelManager",
    "GatewaySessionManager",
    "LaunchRules",
    "acting_as",
    "current_caller",
    "os_groups",
    "runs_as_gateway_account",
]
