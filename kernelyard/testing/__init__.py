"""Test backends for backend authors and for kernelyard's own unit tier.

``kernelyard-loopback`` (``loopback.LoopbackProvisioner``) runs the shared remote
lifecycle of ``kernelyard.provisioners.base.RemoteProvisionerBase`` against the real
launcher started as a local process, and ``kernelyard-loopback-faults``
(``faults.FaultyLoopbackProvisioner``) adds failures configured from the kernelspec.
They are testing backends: kernels run as the gateway's own account, as with the
local backend (docs/writing-a-backend.md).
"""
