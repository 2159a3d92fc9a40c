"""The launcher's Spark startup code in a real IPython shell with a real local Spark.

An interrupt that lands inside a py4j call can reach the user as a Py4JNetworkError
("Answer from Java side is empty", raised by PySpark's clean-up while the
KeyboardInterrupt propagates): about 1 interrupt in 20 on this machine. Here that
exception chain is raised on purpose (a real interrupt's timing can't be chosen),
while a real Spark job runs, to check what the kernel makes of it.
Needs pyspark (ci/yarn/install.sh) and Java.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from tests.gateway import ANSI_ESCAPE

pytestmark = pytest.mark.timeout(300)

SHELL = textwrap.dedent('''
    import json, os, sys, time
    os.environ["KERNELYARD_SPARK"] = json.dumps({
        "mode": "eager", "master": "local[2]",
        "conf": {"spark.ui.enabled": "false",
                 "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}})
    from IPython.core.interactiveshell import InteractiveShell
    from kernelyard.launcher import spark_startup_source

    shell = InteractiveShell.instance()
    assert shell.run_cell(spark_startup_source().decode()).success

    def run(code):
        result = shell.run_cell(code)
        return type(result.error_in_exec).__name__ if result.error_in_exec else None

    def active_jobs():
        return list(shell.user_ns["sc"].statusTracker().getActiveJobsIds())

    def start_job():
        run("import threading, time\\n"
            "threading.Thread(daemon=True, target=lambda: "
            "sc.parallelize(range(2), 2).map(lambda x: time.sleep(600)).count()).start()")
        deadline = time.monotonic() + 60
        while not active_jobs() and time.monotonic() < deadline:
            time.sleep(0.2)
        return active_jobs()

    def settle(jobs):
        deadline = time.monotonic() + 30
        while set(jobs) & set(active_jobs()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return sorted(set(jobs) & set(active_jobs()))

    report = {}
    jobs = start_job()
    report["plain_jobs"] = jobs
    report["plain_error"] = run(
        "from py4j.protocol import Py4JNetworkError\\n"
        "raise Py4JNetworkError('a plain py4j error')")
    report["plain_left"] = settle(jobs)

    report["interrupted_error"] = run(
        "try:\\n"
        "    raise KeyboardInterrupt\\n"
        "except KeyboardInterrupt:\\n"
        "    raise Py4JNetworkError('Answer from Java side is empty')")
    report["interrupted_left"] = settle(jobs)
    # Whatever the code under test left running holds both local cores.
    shell.user_ns["sc"].cancelAllJobs()
    report["count_after"] = shell.user_ns["sc"].range(10).count()
    print("REPORT " + json.dumps(report), flush=True)
    shell.user_ns["spark"].stop()
''')


def test_interrupt_hidden_behind_a_py4j_error_is_an_interrupt_and_cancels_jobs() -> None:
    run = subprocess.run([sys.executable, "-c", SHELL], capture_output=True, text=True,
                         timeout=240)
    lines = [line for line in run.stdout.splitlines() if line.startswith("REPORT ")]
    assert run.returncode == 0 and lines, (run.stdout[-3000:], run.stderr[-3000:])
    report = json.loads(lines[-1].removeprefix("REPORT "))
    assert report["plain_jobs"], report
    # A py4j error of its own is shown as is and leaves the running job alone...
    assert report["plain_error"] == "Py4JNetworkError", report
    assert report["plain_left"] == report["plain_jobs"], report
    # ...one raised while an interrupt propagated is the interrupt: jobs cancelled.
    assert report["interrupted_error"] == "KeyboardInterrupt", report
    assert report["interrupted_left"] == [], report
    assert report["count_after"] == 10, report
    # What the user sees of it: the interrupt's traceback, not the py4j error's.
    shown = ANSI_ESCAPE.sub("", run.stdout.split("REPORT ")[0])
    interrupted = shown.split("Py4JNetworkError: a plain py4j error", 1)[-1]
    summaries = re.findall(r"^(?:KeyboardInterrupt|Py4J\w+): .*$", interrupted, re.MULTILINE)
    assert summaries == ["KeyboardInterrupt: "], shown
