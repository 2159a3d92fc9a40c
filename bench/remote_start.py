"""Start latency of an SSH kernel against a local kernel, in the same run.

Needs the SSH hosts of ci/ssh-hosts (``bash ci/ssh-hosts/start.sh``). Both
kernelspecs run the same kernel (Debian's /usr/bin/python3 ipykernel), so the
difference is the remote path: ssh, launcher shipping and start, callback.

    python bench/remote_start.py [--starts 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.gateway import Gateway, start_gateway

STATE = Path(os.environ.get("KY_SSH_STATE", "/tmp/kernelyard-ssh-hosts"))
KERNEL = ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def write_specs(root: Path, host: str) -> None:
    specs = {
        "local_py": {"argv": KERNEL, "display_name": "local", "language": "python"},
        "ssh_py": {"argv": ["kernelyard-launcher", "--", *KERNEL], "display_name": "ssh",
                   "language": "python",
                   "metadata": {"kernel_provisioner": {"provisioner_name": "kernelyard-ssh",
                                                       "config": {"hosts": [host]}}}},
    }
    for name, spec in specs.items():
        (root / "kernels" / name).mkdir(parents=True)
        (root / "kernels" / name / "kernel.json").write_text(json.dumps(spec))


def time_start(gw: Gateway, name: str) -> float:
    """Seconds from POST /api/kernels until the kernel_info_reply on the websocket."""
    t0 = time.perf_counter()
    kid = gw.start_kernel(name)
    ks = gw.connect(kid)
    msg_id = ks.send("shell", "kernel_info_request", {})
    while True:
        msg = ks.recv(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id and msg["channel"] == "shell":
            break
    elapsed = time.perf_counter() - t0
    ks.close()
    gw.request("DELETE", f"/api/kernels/{kid}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=10)
    opts = parser.parse_args()
    env = dict(line.split("=", 1) for line in (STATE / "env").read_text().splitlines())
    root = Path(tempfile.mkdtemp(prefix="kernelyard-bench-"))
    write_specs(root / "jupyter", env["KY_SSH_HOSTS"].split(",")[0])
    gw = start_gateway(
        root, "--ip", env["KY_SSH_GATEWAY_IP"],
        f"--SSHProvisioner.username={env['KY_SSH_USER']}",
        f"--SSHProvisioner.client_keys={env['KY_SSH_KEY']}",
        f"--SSHProvisioner.known_hosts={env['KY_SSH_KNOWN_HOSTS']}",
        env={"JUPYTER_PATH": str(root / "jupyter")},
    )
    samples: dict[str, list[float]] = {"local_py": [], "ssh_py": []}
    try:
        time_start(gw, "ssh_py")  # ships the launcher and opens the ssh connection once
        for _ in range(opts.starts):
            for name in samples:
                samples[name].append(time_start(gw, name))
    finally:
        gw.stop()
    local, remote = (statistics.median(samples[n]) * 1000 for n in ("local_py", "ssh_py"))
    print("| kernel | median start (ms) |\n|---|---|")
    print(f"| local /usr/bin/python3 ipykernel | {local:.0f} |")
    print(f"| same kernel on an SSH host | {remote:.0f} |")
    print(f"\nremote-path overhead: {remote - local:.0f} ms (target < 300 ms), "
          f"{opts.starts} starts each, alternating")


if __name__ == "__main__":
    main()
