"""``kernelyard kernelspec install``: the kernel.json it writes (golden outputs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kernelyard.cli.kernelspec import kernel_json, parser


def _opts(*args: str):
    return parser().parse_args(["install", *args])


def test_ssh_kernelspec_golden() -> None:
    spec = kernel_json(_opts("ssh", "--name", "py_ssh", "--display-name", "Python (SSH)",
                             "--hosts", "h1,h2", "--python", "/opt/py/bin/python3",
                             "--placement", "least-loaded", "--remote-user", "kyuser"))
    assert spec == {
        "argv": ["kernelyard-launcher", "--", "/opt/py/bin/python3", "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": "Python (SSH)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {
            "provisioner_name": "kernelyard-ssh",
            "config": {"hosts": ["h1", "h2"], "remote_python": "/opt/py/bin/python3",
                       "placement": "least-loaded", "username": "kyuser"}}},
    }


def test_other_kernels_go_through_the_same_launcher() -> None:
    spec = kernel_json(_opts("ssh", "--name", "ir_ssh", "--hosts", "h1", "--language", "R",
                             "--kernel-cmd", "R --slave -e IRkernel::main() --args "
                             "{connection_file}"))
    assert spec["argv"] == ["kernelyard-launcher", "--", "R", "--slave", "-e",
                            "IRkernel::main()", "--args", "{connection_file}"]


def test_ssh_needs_hosts_and_connection_file() -> None:
    with pytest.raises(SystemExit, match="--hosts"):
        kernel_json(_opts("ssh", "--name", "x"))
    with pytest.raises(SystemExit, match="connection_file"):
        kernel_json(_opts("ssh", "--name", "x", "--hosts", "h", "--kernel-cmd", "python -V"))


def test_install_and_list(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "kernelyard.cli.main", "kernelspec"]
    env = {"JUPYTER_PATH": str(tmp_path / "share" / "jupyter"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    out = subprocess.run([*run, "install", "ssh", "--name", "py_ssh", "--hosts", "h1,h2",
                          "--prefix", str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/py_ssh/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "kernelyard-ssh"
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, env=env, timeout=60)
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("py_ssh"))
    assert "kernelyard-ssh" in line


def test_yarn_cluster_kernelspec_golden() -> None:
    spec = kernel_json(_opts("yarn", "--name", "spark_python_yarn_cluster",
                             "--python", "/opt/spark-py/bin/python3", "--queue", "analytics",
                             "--driver-memory", "2g", "--num-executors", "0",
                             "--spark-conf", "spark.yarn.jars=local:/opt/spark/jars/*",
                             "--rm-urls", "http://rm1:8088,http://rm2:8088",
                             "--launch-timeout", "300"))
    assert spec["argv"] == ["kernelyard-launcher", "--", "{python}", "-m", "ipykernel_launcher",
                            "-f", "{connection_file}"]
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "kernelyard-yarn",
        "config": {"python": "/opt/spark-py/bin/python3", "queue": "analytics",
                   "spark_session": "lazy",
                   "spark_conf": {"spark.yarn.jars": "local:/opt/spark/jars/*"},
                   "driver_memory": "2g", "num_executors": 0,
                   "rm_urls": ["http://rm1:8088", "http://rm2:8088"], "launch_timeout": 300.0}}


def test_yarn_cluster_mode_refuses_no_spark_session() -> None:
    with pytest.raises(SystemExit, match="client mode"):
        kernel_json(_opts("yarn", "--name", "x", "--spark-session", "none"))
    with pytest.raises(SystemExit, match=r"spark\.KEY=VALUE"):
        kernel_json(_opts("yarn", "--name", "x", "--spark-conf", "driver.memory=1g"))


def test_ssh_spark_client_mode_kernelspec() -> None:
    spec = kernel_json(_opts("ssh", "--name", "spark_python_yarn_client", "--hosts", "h1",
                             "--spark-master", "yarn", "--spark-conf", "spark.ui.enabled=false",
                             "--env", "HADOOP_CONF_DIR=/etc/hadoop/conf"))
    assert spec["argv"][:8] == ["kernelyard-launcher", "--spark-session", "lazy",
                                "--spark-master", "yarn", "--spark-conf",
                                "spark.ui.enabled=false", "--"]
    assert spec["env"] == {"HADOOP_CONF_DIR": "/etc/hadoop/conf"}
    with pytest.raises(SystemExit, match="--spark-master"):
        kernel_json(_opts("ssh", "--name", "x", "--hosts", "h1", "--spark-conf", "a=b"))
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        kernel_json(_opts("ssh", "--name", "x", "--hosts", "h1", "--env", "1X=2"))


def test_kubernetes_kernelspec_golden() -> None:
    spec = kernel_json(_opts("kubernetes", "--name", "python_k8s",
                             "--image", "registry.example.org/kernel:1",
                             "--namespace", "ds-kernels", "--memory", "8g", "--cpu", "4",
                             "--gpus", "1", "--default-memory", "1g"))
    assert spec["argv"] == ["kernelyard-launcher", "--", "{python}", "-m", "ipykernel_launcher",
                            "-f", "{connection_file}"]
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "kernelyard-kubernetes",
        "config": {"image": "registry.example.org/kernel:1", "namespace": "ds-kernels",
                   "default_memory": "1g",
                   "resource_limits": {"KERNEL_CPUS": "4", "KERNEL_MEMORY": "8g",
                                       "KERNEL_GPUS": 1}}}


def test_kubernetes_needs_an_image() -> None:
    with pytest.raises(SystemExit, match="--image"):
        kernel_json(_opts("kubernetes", "--name", "k"))
