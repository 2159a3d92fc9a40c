"""A real Jupyter Server 2 with ``--gateway-url`` pointing at kernelyard.

The client talks only to Jupyter Server (REST + websocket); the kernel runs in
kernelyard, which Jupyter Server reaches with the gateway token.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.clients import (
    JupyterProcess,
    diagnostics,
    gateway_kernel_ids,
    require_jupyterlab,
    start_jupyter,
)
from tests.gateway import Gateway
from tests.waits import poll

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def jupyter_server(
    gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterProcess]:
    require_jupyterlab()
    jp = start_jupyter(tmp_path_factory.mktemp("jupyter-server"), gateway, app="server")
    yield jp
    jp.stop()


def test_kernelspecs_come_from_kernelyard(
    gateway: Gateway, jupyter_server: JupyterProcess
) -> None:
    status, specs = jupyter_server.request("GET", "/api/kernelspecs")
    assert status == 200, (specs, diagnostics(jupyter_server, gateway))
    gw_status, gw_specs, _ = gateway.request("GET", "/api/kernelspecs")
    assert gw_status == 200, gw_specs
    assert set(specs["kernelspecs"]) == set(gw_specs["kernelspecs"])
    assert "python3" in specs["kernelspecs"]


def test_session_runs_code_in_a_kernelyard_kernel(
    gateway: Gateway, jupyter_server: JupyterProcess
) -> None:
    before = gateway_kernel_ids(gateway)
    status, session = jupyter_server.request("POST", "/api/sessions", {
        "path": "e2e.ipynb", "name": "e2e.ipynb", "type": "notebook",
        "kernel": {"name": "python3"},
    })
    assert status == 201, (status, session, diagnostics(jupyter_server, gateway))
    session_id, kernel_id = session["id"], session["kernel"]["id"]
    deleted = False
    try:
        # The kernel lives in kernelyard, under the same id Jupyter Server reports.
        assert kernel_id in gateway_kernel_ids(gateway) - before, diagnostics(gateway)
        status, kernels = jupyter_server.request("GET", "/api/kernels")
        assert status == 200, kernels
        assert kernel_id in {k["id"] for k in kernels}

        sock = jupyter_server.connect(kernel_id)
        try:
            out = sock.execute("print(6*7)", timeout=90)
        finally:
            sock.close()
        assert out["error"] is None, out
        assert out["reply"]["status"] == "ok", out
        assert out["stdout"].strip() == "42", out

        status, body = jupyter_server.request("DELETE", f"/api/sessions/{session_id}")
        assert status == 204, (status, body, diagnostics(jupyter_server, gateway))
        deleted = True
        gone = poll(lambda: kernel_id not in gateway_kernel_ids(gateway), timeout=30)
        assert gone, f"kernel {kernel_id} still in kernelyard\n{diagnostics(gateway)}"
        status, sessions = jupyter_server.request("GET", "/api/sessions")
        assert status == 200, sessions
        assert session_id not in {s["id"] for s in sessions}
    finally:
        if not deleted:
            jupyter_server.request("DELETE", f"/api/sessions/{session_id}")

    assert "Traceback" not in gateway.log(), diagnostics(gateway)
