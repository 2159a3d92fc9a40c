"""CurveZMQ between the gateway and a remote kernel, seen on the wire.

A raw packet capture on the ssh hosts' bridge (AF_PACKET, as root) records the
traffic of one execute. Without CurveZMQ the code and its output travel as
HMAC-signed JSON in clear text; with it, neither appears.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests import realparts
from tests.gateway import Gateway, start_gateway
from tests.realparts import ssh_hosts

ETH_P_ALL = 0x0003
CODE = "print('ky-' + 'clear' + '-marker')"
# A venv every user can run, with an ipykernel that reads CurveZMQ keys (ci/kernel-venv.sh).
KERNEL_PYTHON = str(realparts.KERNEL_VENV / "bin" / "python")


class Capture:
    """Every frame on one interface while it runs."""

    def __init__(self, interface: str):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        self.sock.bind((interface, 0))
        self.sock.settimeout(0.2)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self.sock.recv(65535))
            except TimeoutError:
                continue

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    @property
    def data(self) -> bytes:
        return b"".join(self.frames)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    hosts = ssh_hosts()
    root = tmp_path_factory.mktemp("curve")
    h1 = hosts["KY_SSH_HOSTS"].split(",")[0]
    realparts.need("kernel-venv")
    for name, extra in (("ssh_clear", []), ("ssh_curve", ["--curve"])):
        subprocess.run([sys.executable, "-m", "kernelyard.cli.main", "kernelspec", "install",
                        "ssh", "--name", name, "--hosts", h1, "--python", KERNEL_PYTHON,
                        "--prefix", str(root), *extra],
                       check=True, capture_output=True)
    gateway = start_gateway(
        root, "--ip", hosts["KY_SSH_GATEWAY_IP"],
        *realparts.ssh_login_args(hosts),
        env={"JUPYTER_PATH": str(root / "share" / "jupyter")})
    yield gateway
    gateway.stop()


def _execute_captured(gw: Gateway, spec: str) -> tuple[dict, bytes]:
    """Start a kernel and run CODE in it while capturing the bridge (ZMTP greetings too)."""
    with Capture(ssh_hosts()["KY_SSH_BRIDGE"]) as capture:
        kid = gw.start_kernel(spec)
        try:
            ks = gw.connect(kid)
            try:
                out = ks.execute(CODE)
            finally:
                ks.close()
        finally:
            gw.request("DELETE", f"/api/kernels/{kid}")
    return out, capture.data


def test_without_curve_the_messages_are_clear_text(gw: Gateway) -> None:
    out, wire = _execute_captured(gw, "ssh_clear")
    assert out["stdout"] == "ky-clear-marker\n"
    assert b"ky-clear-marker" in wire and b"'ky-' + 'clear'" in wire
    assert b'"msg_type"' in wire


def test_with_curve_nothing_of_the_messages_is_visible(gw: Gateway) -> None:
    out, wire = _execute_captured(gw, "ssh_curve")
    assert out["error"] is None and out["stdout"] == "ky-clear-marker\n"
    assert len(wire) > 1000, "the capture saw no traffic"
    assert b"ky-clear-marker" not in wire and b"'ky-' + 'clear'" not in wire
    assert b'"msg_type"' not in wire and b"<IDS|MSG>" not in wire
    assert b"CURVE" in wire  # the ZMTP greeting names the security mechanism
