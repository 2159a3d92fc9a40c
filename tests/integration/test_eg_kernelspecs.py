"""Enterprise Gateway remote kernelspecs are refused, never run on the gateway host.

The kernelspec dirs are laid out as EG ships them (``kernel.json`` with
``metadata.process_proxy.class_name`` and a ``{resource_dir}/bin/run.sh``
argv; ``bin/run.sh`` here leaves a mark when it runs). The gateway does not
start with one; one added while it runs is left out of ``GET /api/kernelspecs``
and a launch of it (REST or a session) is a 400 naming the kernelyard
kernelspec command to use instead. EG's ``LocalProcessProxy`` kernelspecs (a
kernel on the gateway host, as kernelyard runs it) are served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.gateway import free_port, start_gateway
from tests.kernelspecs import IPYKERNEL

PROXIES = "enterprise_gateway.services.processproxies"
EG_SPECS = {
    "spark_python_yarn_cluster": (f"{PROXIES}.yarn.YarnClusterProcessProxy",
                                  "kernelyard kernelspec install yarn --name "
                                  "spark_python_yarn_cluster"),
    "python_distributed": (f"{PROXIES}.distributed.DistributedProcessProxy",
                           "kernelyard kernelspec install ssh --name python_distributed"),
    "python_kubernetes": (f"{PROXIES}.k8s.KubernetesProcessProxy",
                          "kernelyard kernelspec install ssh --name python_kubernetes"),
}
RUN_SH = """#!/bin/sh
# EG's run.sh would spark-submit or ssh from here; this one only leaves a mark.
echo "run.sh ran on the gateway host: $*" > "{mark}"
exec python3 -m ipykernel_launcher "$@"
"""


def eg_kernelspec(root: Path, name: str, class_name: str, mark: Path) -> Path:
    """A kernelspec dir as Enterprise Gateway lays it out (kernel.json, bin/run.sh)."""
    folder = root / "kernels" / name
    (folder / "bin").mkdir(parents=True)
    run_sh = folder / "bin" / "run.sh"
    run_sh.write_text(RUN_SH.format(mark=mark))
    run_sh.chmod(0o755)
    spec = {
        "language": "python",
        "display_name": f"{name} (EG)",
        "metadata": {"process_proxy": {"class_name": class_name,
                                       "config": {"authorized_users": "alice,bob"}},
                     "debugger": True},
        "env": {"SPARK_HOME": "/opt/spark", "SPARK_OPTS": "--master yarn --deploy-mode cluster",
                "LAUNCH_OPTS": ""},
        "argv": ["{resource_dir}/bin/run.sh", "--RemoteProcessProxy.kernel-id", "{kernel_id}",
                 "--RemoteProcessProxy.response-address", "{response_address}",
                 "--RemoteProcessProxy.public-key", "{public_key}",
                 "--RemoteProcessProxy.port-range", "{port_range}",
                 "--RemoteProcessProxy.spark-context-initialization-mode", "lazy"],
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=2))
    return folder


def local_proxy_kernelspec(root: Path, name: str, **config: object) -> None:
    """EG's own authorization_test layout: LocalProcessProxy and an ipykernel argv."""
    folder = root / "kernels" / name
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "display_name": name, "language": "python", "env": {}, "argv": IPYKERNEL,
        "metadata": {"process_proxy": {
            "class_name": f"{PROXIES}.processproxy.LocalProcessProxy", "config": config}}}))


def test_the_gateway_does_not_start_with_eg_kernelspecs(tmp_path: Path) -> None:
    specs = tmp_path / "jupyter"
    for name, (class_name, _) in EG_SPECS.items():
        eg_kernelspec(specs, name, class_name, tmp_path / f"{name}.ran")
    env = {**os.environ, "JUPYTER_PATH": str(specs), "JUPYTER_DATA_DIR": str(tmp_path / "d"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    result = subprocess.run(
        [sys.executable, "-m", "kernelyard.cli.main", "serve", "--port", str(free_port())],
        capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
    assert result.returncode != 0 and "is listening on" not in result.stderr, result.stderr
    for name, (class_name, command) in EG_SPECS.items():
        line = next((x for x in result.stderr.splitlines() if f"kernelspec {name!r}" in x), "")
        assert "Enterprise Gateway" in line and class_name in line and command in line, (
            name, result.stderr)
    assert not list(tmp_path.glob("*.ran"))


def test_an_eg_kernelspec_added_later_is_not_listed_and_not_launched(tmp_path: Path) -> None:
    specs = tmp_path / "jupyter"
    local_proxy_kernelspec(specs, "eg_local")
    (specs / "kernels").mkdir(exist_ok=True)
    gw = start_gateway(tmp_path, env={"JUPYTER_PATH": str(specs)})
    mark = tmp_path / "run-sh.ran"
    try:
        class_name, command = EG_SPECS["spark_python_yarn_cluster"]
        eg_kernelspec(specs, "spark_python_yarn_cluster", class_name, mark)
        status, listing, _ = gw.request("GET", "/api/kernelspecs")
        assert status == 200 and "spark_python_yarn_cluster" not in listing["kernelspecs"]
        assert "eg_local" in listing["kernelspecs"], listing  # LocalProcessProxy is served
        for method, path, body in [
            ("POST", "/api/kernels", {"name": "spark_python_yarn_cluster"}),
            ("POST", "/api/sessions", {"path": "a.ipynb", "type": "notebook",
                                       "kernel": {"name": "spark_python_yarn_cluster"}}),
            ("GET", "/api/kernelspecs/spark_python_yarn_cluster", None),
        ]:
            status, answer, _ = gw.request(method, path, body)
            assert status == 400, (path, status, answer)
            assert command in answer["message"] and "Enterprise Gateway" in answer["message"]
        assert gw.request("GET", "/api/kernels")[1] == []
        assert not mark.exists(), mark.read_text()
        kid = gw.start_kernel("eg_local")
        assert gw.request("DELETE", f"/api/kernels/{kid}")[0] == 204
    finally:
        gw.stop()
    assert "Traceback" not in gw.log()
