"""Running ``spark-submit`` for the YARN backend, through the command layer.

The secrets file (``Delivery.FILE``) and the launcher (``Delivery.PRIMARY_RESOURCE``)
are on its command line as paths only; ``run`` refuses any secret value there or in
its environment, which is the gateway's minus its secrets, plus ``submit_env``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from ..errors import ConfigError, InvalidRequest, KernelStartFailed
from ..kernel_env import DEFAULT_SECRET_ENVS, scrub_secrets
from . import command
from .yarn_backend import last_lines
from .yarn_rm import ResourceManager

SECRETS_NAME = "kernelyard-secrets.json"
_APP_ID = re.compile(r"\b(application_\d+_\d+)\b")


def submit_env(spark_home: str, hadoop_conf_dir: str, java_home: str,
               extra: Mapping[str, str]) -> dict[str, str]:
    """spark-submit's environment."""
    env = {**scrub_secrets(os.environ, DEFAULT_SECRET_ENVS), **extra, "SPARK_HOME": spark_home}
    if hadoop_conf_dir:
        env["HADOOP_CONF_DIR"] = hadoop_conf_dir
    if java_home:
        env["JAVA_HOME"] = java_home
    return env


async def run_spark_submit(cmd: list[str], cwd: str, env: dict[str, str], timeout: float,
                           secrets: Iterable[str], kernel_name: str) -> str:
    """spark-submit's output; ConfigError if it can't run, KernelStartFailed if it fails."""
    try:
        result = await command.run(cmd, env=env, cwd=cwd, timeout=timeout,
                                   merge_stderr=True, secrets=list(secrets),
                                   dies_with_gateway=True)
    except OSError as e:
        raise ConfigError(f"cannot run spark-submit ({cmd[0]}): {e.strerror}; set "
                          "YarnProvisioner.spark_home") from None
    except command.CommandTimeout as e:
        raise KernelStartFailed(f"{e} (YarnProvisioner.submit_timeout)") from None
    if result.returncode != 0:
        raise KernelStartFailed(f"spark-submit failed (exit {result.returncode}) for kernelspec "
                                f"'{kernel_name}':\n{last_lines(result.text, 25)}")
    return result.text


def app_id_in(output: str) -> str:
    """The YARN application id spark-submit printed ('' if none)."""
    found = _APP_ID.search(output)
    return found.group(1) if found else ""


async def check_queue(rm: ResourceManager, queue: str) -> None:
    """InvalidRequest unless ``queue`` is a leaf queue of the cluster."""
    queues = await rm.leaf_queues()
    if queue not in queues:
        known = ", ".join(sorted(q for q in queues if "." not in q))
        raise InvalidRequest(f"queue {queue!r} does not exist on the YARN cluster "
                             f"(its queues: {known})")
