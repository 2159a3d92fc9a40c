"""Kernelspecs written into a test's JUPYTER_PATH, including broken ones."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

PY = sys.executable
IPYKERNEL = [PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"]

# Occupies the kernel's shell port from another process on the first launch only,
# so the real ipykernel fails with "Address already in use" once.
PORT_THIEF = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys, time
    conn, marker = sys.argv[1], sys.argv[2]
    if not os.path.exists(marker):
        open(marker, "w").close()
        port = json.load(open(conn))["shell_port"]
        holder = subprocess.Popen([sys.executable, "-c",
            "import socket,sys,time;s=socket.socket();"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
            "s.bind(('127.0.0.1', int(sys.argv[1])));s.listen();print('bound',flush=True);"
            "time.sleep(10)", str(port)], stdout=subprocess.PIPE)
        holder.stdout.readline()
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", conn])
    """
)


def write_spec(root: Path, name: str, argv: list[str], **extra: object) -> None:
    folder = root / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": argv, "display_name": name, "language": "python", **extra}
    (folder / "kernel.json").write_text(json.dumps(spec))


def provisioner_spec(root: Path, name: str, argv: list[str], provisioner: str,
                     **config: object) -> None:
    """A kernelspec whose kernels ``provisioner`` starts with ``config`` (signal interrupts)."""
    write_spec(root, name, argv, interrupt_mode="signal", metadata={
        "kernel_provisioner": {"provisioner_name": provisioner, "config": config}})


def make_test_kernelspecs(root: Path) -> Path:
    """Write the test kernelspecs under ``root`` (use it as JUPYTER_PATH)."""
    write_spec(root, "python3", IPYKERNEL)
    write_spec(root, "restricted", IPYKERNEL,
               metadata={"kernelyard": {"authorized_users": ["alice"]}})
    write_spec(root, "eg_restricted", IPYKERNEL,
               metadata={"process_proxy": {"config": {"unauthorized_users": ["alice"]}}})
    write_spec(root, "no_such_binary", ["/nonexistent/kernel-binary", "{connection_file}"])
    write_spec(root, "dies_at_start",
               [PY, "-c", "import sys; print('kernel config is broken: missing token',"
                " file=sys.stderr); sys.exit(3)", "{connection_file}"])
    thief = root / "port_thief.py"
    thief.write_text(PORT_THIEF)
    write_spec(root, "port_clash_once",
               [PY, str(thief), "{connection_file}", str(root / "port_clash.marker")])
    (root / "kernels" / "python3" / "logo-64x64.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    return root
