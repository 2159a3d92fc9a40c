"""A third-party kernelyard backend: kernels in a scratch folder of its own.

It is built on kernelyard's public testing backend (``kernelyard.testing``) and
registered under its own entry point name (``thirdparty-scratch``), the way an
outside package adds a backend; tests/unit/test_thirdparty_backend.py installs it
and runs the backend contract on it.
"""

from __future__ import annotations

import os

from traitlets import Unicode, default

from kernelyard.testing.loopback import LoopbackProvisioner


class ScratchProvisioner(LoopbackProvisioner):
    """Loopback kernels whose run dirs live in ``scratch_dir/runs``."""

    scratch_dir = Unicode("", config=True, help="The folder of this backend's run dirs.")

    @default("run_root")
    def _run_root_in_scratch(self) -> str:
        return os.path.join(self.scratch_dir, "runs") if self.scratch_dir else ""
