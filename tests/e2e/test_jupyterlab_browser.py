"""JupyterLab 4 in headless Chromium, with its kernels in kernelyard.

``jupyter lab --gateway-url=<kernelyard>`` serves a notebook; lab_run_cell.mjs
(playwright-core driving Debian's Chromium) opens it, runs its cell and waits
for the output on the page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import (
    CHROMIUM,
    E2E_NODE_DIR,
    JupyterProcess,
    diagnostics,
    gateway_kernel_ids,
    require_browser,
    require_jupyterlab,
    start_jupyter,
)
from tests.gateway import Gateway

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).with_name("lab_run_cell.mjs")
NOTEBOOK = "notebook.ipynb"
BROWSER_TIMEOUT_S = 180


def notebook_json(source: str) -> dict:
    """An nbformat 4.5 notebook with one code cell, for the python3 kernel."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                           "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [{
            "cell_type": "code", "id": "e2e-cell-1", "metadata": {},
            "execution_count": None, "outputs": [], "source": source,
        }],
    }


@pytest.fixture(scope="module")
def lab(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    require_jupyterlab()
    require_browser()
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "root"
    root.mkdir()
    (root / NOTEBOOK).write_text(json.dumps(notebook_json("print(6*7)"), indent=1))
    jp = start_jupyter(tmp, gateway, app="lab", root_dir=root)
    yield jp
    jp.stop()


def test_notebook_cell_runs_in_kernelyard(
    gateway: Gateway, lab: JupyterProcess, output_dir: Path, tmp_path: Path
) -> None:
    screenshot = output_dir / "jupyterlab-notebook.png"
    screenshot.unlink(missing_ok=True)
    node = shutil.which("node")
    assert node, "node is not on PATH; run `bash ci/e2e/install.sh`"
    cmd = [
        node, str(SCRIPT),
        "--url", f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}",
        "--screenshot", str(screenshot),
        "--user-data-dir", str(tmp_path / "chromium-profile"),
        "--chromium", str(CHROMIUM),
        "--expect", "42",
        "--timeout-ms", str((BROWSER_TIMEOUT_S - 30) * 1000),
    ]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S,
                             env={**os.environ, "KERNELYARD_E2E_NODE_DIR": str(E2E_NODE_DIR)})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"lab_run_cell.mjs did not finish in {BROWSER_TIMEOUT_S}s\n"
                    f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}\n{diagnostics(lab, gateway)}")
    print(run.stdout, run.stderr, sep="\n")
    (output_dir / "lab_run_cell.log").write_text(f"{run.stdout}\n--- stderr ---\n{run.stderr}")
    assert run.returncode == 0, (
        f"lab_run_cell.mjs exited {run.returncode}\nstdout:\n{run.stdout}\n"
        f"stderr:\n{run.stderr}\n{diagnostics(lab, gateway)}"
    )
    assert "RESULT " in run.stdout, run.stdout
    assert screenshot.is_file() and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", screenshot

    # The notebook's kernel runs in kernelyard, under the id JupyterLab's session uses.
    status, sessions = lab.request("GET", "/api/sessions")
    assert status == 200, sessions
    kernel_ids = {s["kernel"]["id"] for s in sessions if s["path"] == NOTEBOOK}
    assert len(kernel_ids) == 1, sessions
    assert kernel_ids <= gateway_kernel_ids(gateway), diagnostics(lab, gateway)
    assert "Traceback" not in gateway.log(), diagnostics(gateway)

