"""Public error types.

Every layer below the API raises these; ``kernelyard.api.errors`` is the one
place that turns them into HTTP status codes and JSON ``{reason, message}``.
The message is shown to the client, so it must never carry a secret.
"""


class KernelyardError(Exception):
    """Base of every error a client may see. ``message`` is client-safe."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(KernelyardError):
    """The request is malformed or names a value the gateway refuses."""


class Unauthorized(KernelyardError):
    """No valid credentials came with the request."""


class Forbidden(KernelyardError):
    """The caller is known but may not do this."""


class LimitReached(Forbidden):
    """A quota (kernel count, ...) would be exceeded."""


class NotFound(KernelyardError):
    """The named kernel, kernelspec or session does not exist."""


class Conflict(KernelyardError):
    """The request clashes with existing state (a kernel id already in use)."""


class KernelStartFailed(KernelyardError):
    """A kernel could not be started; the message says which and why."""


class StartDeadlineExceeded(KernelStartFailed):
    """The client's deadline (``KERNEL_LAUNCH_TIMEOUT``) passed before the kernel was
    ready; the start was cancelled and cleaned up (504)."""


class ClientLeft(KernelStartFailed):
    """The client closed its connection mid-start; the start was cancelled (499, which
    only the logs see)."""


class BackendUnavailable(KernelStartFailed):
    """The cluster's resource manager can't be reached: the client may retry later (503)."""


class ConfigError(KernelyardError):
    """A setting has a value the gateway cannot run with; names the setting."""
