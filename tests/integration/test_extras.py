"""A kernelspec whose backend needs a pip extra that is not installed gets an error naming it.

Fault injection: asyncssh (the ``ssh`` extra) is installed in the test venv, so a
``sitecustomize`` module on PYTHONPATH puts a meta-path finder first in the
gateway subprocess that makes every ``import asyncssh`` raise ModuleNotFoundError,
as in a core install (``pip install kernelyard`` without ``[ssh]``). The
gateway itself is real; no SSH host is needed, since nothing gets that far.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.gateway import free_port, start_gateway
from tests.kernelspecs import IPYKERNEL, write_spec

HINT = "pip install 'kernelyard[ssh]'"
BLOCKER = textwrap.dedent("""
    import sys

    class _NoAsyncssh:
        def find_spec(self, name, path=None, target=None):
            if name == "asyncssh" or name.startswith("asyncssh."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoAsyncssh())
""")


def without_asyncssh(tmp: Path) -> dict[str, str]:
    """The env of a subprocess in which ``import asyncssh`` fails."""
    site = tmp / "no-asyncssh"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def ssh_spec(root: Path, name: str) -> None:
    write_spec(root, name, ["kernelyard-launcher", "--", *IPYKERNEL], metadata={
        "kernel_provisioner": {"provisioner_name": "kernelyard-ssh",
                               "config": {"hosts": ["127.0.0.1"]}}})


def _serve(tmp: Path, specs: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "JUPYTER_PATH": str(specs), "JUPYTER_DATA_DIR": str(tmp / "d"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "rt"), "KERNELYARD_AUTH_TOKEN": "t", **env}
    return subprocess.run(
        [sys.executable, "-m", "kernelyard.cli.main", "serve", "--port", str(free_port()),
         "--port-retries", "0"], capture_output=True, text=True, timeout=90, env=full, cwd=tmp)


def test_the_blocker_blocks(tmp_path: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", "import asyncssh"], capture_output=True,
                           text=True, timeout=60, env={**os.environ, **without_asyncssh(tmp_path)})
    assert probe.returncode == 1 and "No module named 'asyncssh'" in probe.stderr


def test_the_gateway_does_not_start_with_an_ssh_kernelspec_without_the_extra(
        tmp_path: Path) -> None:
    specs = tmp_path / "jupyter"
    ssh_spec(specs, "py_ssh")
    write_spec(specs, "python3", IPYKERNEL)
    result = _serve(tmp_path, specs, without_asyncssh(tmp_path))
    assert result.returncode != 0 and "is listening on" not in result.stderr, result.stderr
    line = next((x for x in result.stderr.splitlines() if "'py_ssh'" in x), "")
    assert HINT in line and "asyncssh" in line, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # With the extra the same kernelspecs are served.
    gw = start_gateway(tmp_path, env={"JUPYTER_PATH": str(specs)})
    try:
        assert "py_ssh" in gw.request("GET", "/api/kernelspecs")[1]["kernelspecs"]
    finally:
        gw.stop()


def test_an_ssh_kernelspec_added_later_is_refused_with_the_extra_named(tmp_path: Path) -> None:
    specs = tmp_path / "jupyter"
    write_spec(specs, "python3", IPYKERNEL)
    gw = start_gateway(tmp_path, env={"JUPYTER_PATH": str(specs), **without_asyncssh(tmp_path)})
    try:
        ssh_spec(specs, "py_ssh")
        status, listing, _ = gw.request("GET", "/api/kernelspecs")
        assert status == 200 and "py_ssh" not in listing["kernelspecs"], listing
        for method, path, body in [
            ("POST", "/api/kernels", {"name": "py_ssh"}),
            ("POST", "/api/sessions", {"path": "a.ipynb", "type": "notebook",
                                       "kernel": {"name": "py_ssh"}}),
            ("GET", "/api/kernelspecs/py_ssh", None),
        ]:
            status, answer, _ = gw.request(method, path, body)
            assert 400 <= status < 600, (path, status, answer)
            assert isinstance(answer, dict) and HINT in answer["message"], (path, answer)
            assert "'py_ssh'" in answer["message"], answer
        assert gw.request("GET", "/api/kernels")[1] == []
        kid = gw.start_kernel("python3")  # the core's local kernels still work
        assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    finally:
        gw.stop()
    assert "Traceback" not in gw.log(), gw.log()


def test_generate_config_documents_ssh_without_its_extra(tmp_path: Path) -> None:
    target = tmp_path / "kernelyard_config.py"
    out = subprocess.run([sys.executable, "-m", "kernelyard.cli.main", "generate-config",
                          "--output", str(target)], capture_output=True, text=True,
                         timeout=90, env={**os.environ, **without_asyncssh(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert re.search(r"^# c\.SSHProvisioner\.hosts = ", target.read_text(), re.M)
