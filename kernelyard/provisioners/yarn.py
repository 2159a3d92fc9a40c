"""``kernelyard-yarn``: Spark kernels as YARN applications in cluster deploy mode.

``spark-submit --master yarn --deploy-mode cluster`` runs the launcher as the
Python primary resource inside the driver container; the launcher starts the
kernel, which inherits the driver's py4j gateway and creates the SparkSession in
the driver's JVM. The secrets travel in a 0600 file that spark-submit ships
into the application's private staging dir (``--files``), never on a command
line. Each application is tagged with the kernel id and the gateway's instance
tag, so ONE ResourceManager query per poll interval finds all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, default

from ..errors import BackendUnavailable, ConfigError, InvalidRequest, KernelStartFailed
from ..launcher import spark_startup_path
from ..policy import DEFAULT_SECRET_ENVS, check_kernel_id, scrub_secrets
from .base import RemoteProvisionerBase, launcher_args
from .spark_request import SparkLimits, SparkResources, resources_for
from .status import EXITED, PENDING, RUNNING, BackendStatus
from .yarn_rm import ResourceManager, YarnApp, rm_urls_from_hadoop_conf

SECRETS_NAME = "kernelyard-secrets.json"
_APP_ID = re.compile(r"\b(application_\d+_\d+)\b")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# An app that is not listed this long after submit is taken as never submitted.
NOT_LISTED_GRACE_MS = 120_000
ClusterKey = tuple[tuple[str, ...], str]  # (the RMs' URLs, the instance tag)


class YarnProvisioner(RemoteProvisionerBase):
    """Runs each kernel as the driver of a Spark application on YARN (cluster mode)."""

    rm_urls = List(
        Unicode(), config=True,
        help="The ResourceManagers' web addresses (several with RM HA: requests fail over). "
        "Default: read from yarn-site.xml in hadoop_conf_dir.",
    )
    rm_auth = Enum(
        ["simple", "kerberos"], "simple", config=True,
        help="How to authenticate to the RM REST API: 'kerberos' uses SPNEGO with the "
        "gateway's ticket cache (pip install 'kernelyard[kerberos]').",
    )
    rm_timeout = Float(10.0, config=True, help="Seconds per RM REST request.")
    hadoop_conf_dir = Unicode(config=True, help="HADOOP_CONF_DIR for spark-submit.")
    spark_home = Unicode(
        config=True, help="Spark's home (default: $SPARK_HOME, else the installed pyspark)."
    )
    java_home = Unicode(config=True, help="JAVA_HOME for spark-submit (default: $JAVA_HOME).")
    python = Unicode(
        config=True,
        help="The Python on the cluster's nodes that runs the launcher and the kernel "
        "(spark.pyspark.python; default: the gateway's own Python path).",
    )
    spark_session = Enum(
        ["lazy", "eager", "none"], "lazy", config=True,
        help="lazy: `spark` and `sc` exist at once, the session is created in the "
        "background; eager: before the kernel answers. 'none' is refused: in cluster mode "
        "YARN fails an application whose driver makes no SparkContext.",
    )
    queue = Unicode("default", config=True, help="The YARN queue (KERNEL_QUEUE overrides).")
    allowed_queues = List(
        Unicode(), config=True,
        help="Queues a request may pick with KERNEL_QUEUE (default: any queue of the cluster).",
    )
    driver_memory = Unicode("1g", config=True, help="spark.driver.memory.")
    driver_cores = Integer(1, config=True, help="spark.driver.cores.")
    executor_memory = Unicode("1g", config=True, help="spark.executor.memory.")
    executor_cores = Integer(1, config=True, help="spark.executor.cores.")
    num_executors = Integer(
        0, config=True, help="Fixed executors; 0 = dynamic allocation from zero executors."
    )
    max_driver_memory = Unicode("4g", config=True, help="The most KERNEL_DRIVER_MEMORY may ask.")
    max_executor_memory = Unicode(
        "8g", config=True, help="The most KERNEL_EXECUTOR_MEMORY may ask."
    )
    max_cores = Integer(4, config=True, help="The most KERNEL_*_CORES may ask.")
    max_executors = Integer(10, config=True, help="The most KERNEL_NUM_EXECUTORS may ask.")
    spark_conf = Dict(
        value_trait=Unicode(), config=True, help="Spark conf every kernel of the spec gets."
    )
    allowed_spark_conf = List(
        Unicode(), ["spark.sql.*", "spark.dynamicAllocation.maxExecutors"], config=True,
        help="Spark conf keys (glob patterns) a request may set in KERNEL_SPARK_CONF.",
    )
    impersonate = Bool(
        True, config=True,
        help="Submit as the kernel's owner (KERNEL_USERNAME) with --proxy-user; the "
        "gateway's user must be a Hadoop proxy user.",
    )
    instance_tag = Unicode(
        config=True,
        help="The YARN application tag shared by all kernels of this gateway (and of its "
        "HA replicas). Default: derived from the kernel store's location.",
    )
    submit_timeout = Float(180.0, config=True, help="Seconds spark-submit may take.")
    submit_env = Dict(
        value_trait=Unicode(), config=True,
        help="Extra environment variables for spark-submit on the gateway host.",
    )

    _clients: dict[tuple[str, ...], ResourceManager] = {}
    _log_tails: dict[str, str] = {}

    def kernels_share_account(self) -> bool:
        """With ``impersonate`` (the default) each application runs as its owner
        (``--proxy-user``); without it, every one as the gateway's Hadoop user."""
        return not self.impersonate

    def run_as_owner_setting(self) -> str:
        return "YarnProvisioner.impersonate = True"

    @default("hadoop_conf_dir")
    def _hadoop_conf_dir_default(self) -> str:
        return os.environ.get("HADOOP_CONF_DIR", "")

    @default("spark_home")
    def _spark_home_default(self) -> str:
        if os.environ.get("SPARK_HOME"):
            return os.environ["SPARK_HOME"]
        with contextlib.suppress(ImportError):
            import pyspark

            return str(Path(pyspark.__file__).parent)
        return ""

    @default("java_home")
    def _java_home_default(self) -> str:
        return os.environ.get("JAVA_HOME", "")

    @default("python")
    def _python_default(self) -> str:
        return sys.executable

    @default("instance_tag")
    def _instance_tag_default(self) -> str:
        from ..store import StoreFactory

        digest = hashlib.sha256(StoreFactory.instance().url.encode()).hexdigest()[:12]
        return f"kernelyard-{digest}"

    def rm_for(self, state: dict[str, Any] | None = None) -> ResourceManager:
        """The RM client of a kernel's cluster (from its state), or of this kernelspec."""
        urls = tuple((state or {}).get("rm_urls") or ()) or tuple(self.rm_urls) or tuple(
            rm_urls_from_hadoop_conf(self._conf_dir()))
        client = self._clients.get(urls)
        if client is None:
            auth = _spnego_header if self.rm_auth == "kerberos" else None
            client = self._clients[urls] = ResourceManager(urls, self.rm_timeout, auth)
        return client

    # ---- hooks ---------------------------------------------------------------------

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        if self.spark_session == "none":
            raise ConfigError(
                f"kernelspec '{self.km.kernel_name}': spark_session 'none' needs Spark client "
                "mode; in YARN cluster mode the application fails when its driver creates no "
                "SparkContext within spark.yarn.am.waitTime")
        resources = resources_for(self._default_resources(), self._limits(), env)
        user = self._proxy_user(env)
        rm = self.rm_for()
        await self._check_queue(rm, resources.queue)
        yield {"tag": self._kernel_tag(), "instance_tag": self.instance_tag, "rm_urls": rm.urls,
               "submitted_ms": int(time.time() * 1000), "queue": resources.queue, "user": user}
        with tempfile.TemporaryDirectory(prefix="kernelyard-submit-") as tmp:
            secrets_file = Path(tmp, SECRETS_NAME)
            fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({**secrets, "env": env}, f)
            with as_file(files("kernelyard").joinpath("launcher.py")) as launcher:
                cmd = self._submit_argv(resources, user, secrets_file, launcher, argv)
                began = time.time()
                output = await self._run_submit(cmd, tmp)
        found = _APP_ID.search(output)
        self.log.info("Kernel %s: spark-submit took %.2f s (at %.3f): YARN application %s",
                      self.kernel_id, time.time() - began, time.time(),
                      found.group(1) if found else "(id not in its output)")
        if found:
            yield {"app_id": found.group(1)}

    async def status(self, states: list[dict[str, Any]]) -> list[BackendStatus]:
        """One RM query per cluster and instance tag (normally one) for all kernels."""
        listed = await self._list_apps(states)
        found = [_app_of(s, listed.get(_cluster_key(s), [])) for s in states]
        statuses = [self._status_of(s, app) for s, app in zip(states, found, strict=True)]
        ended = {app.id: (state, app) for state, app, status in zip(states, found, statuses,
                                                                    strict=True)
                 if app is not None and status.ended and app.id not in self._log_tails}
        tails = await asyncio.gather(*(self._driver_logs(state, app)
                                       for state, app in ended.values()))
        self._log_tails.update(zip(ended, tails, strict=True))
        return [_with_tail(status, self._log_tails.get(app.id, "") if app else "")
                for status, app in zip(statuses, found, strict=True)]

    async def cancel(self, state: dict[str, Any]) -> None:
        """Kill every active application of this kernel (found by its tag)."""
        await self._kill_apps(state, lambda app: app.active)

    async def before_shutdown_request(self, restart: bool = False) -> None:
        """Kill an application that is still waiting for its SparkContext.

        In cluster mode the ApplicationMaster registers (RUNNING) once the SparkContext
        is up. A kernel that exits before that ends its application FAILED ("exited
        before the SparkContext was initialized"), which reads as an error in YARN's
        history. Such an application (a notebook closed right after it opened) is
        killed through the ResourceManager before the kernel is asked to shut down,
        and ends KILLED.
        """
        with contextlib.suppress(BackendUnavailable):  # then the kernel just stops
            await self._kill_apps(self.state, lambda app: app.active and app.state != "RUNNING")

    async def _kill_apps(self, state: dict[str, Any], which: Callable[[YarnApp], bool]) -> None:
        if not state.get("tag"):
            return
        rm = self.rm_for(state)
        for app in await rm.apps(state["tag"], _since(state)):
            if which(app):
                self.log.info("Kernel %s: killing YARN application %s (%s)",
                              self.kernel_id, app.id, app.state)
                await rm.kill(app.id)

    async def _driver_logs(self, state: dict[str, Any], app: YarnApp) -> str:
        """The ends of the driver's stdout (the launcher's and kernel's lines) and stderr."""
        rm = self.rm_for(state)
        parts = []
        for name in ("stdout", "stderr"):
            text = _last_lines(await rm.driver_log_tail(app, name), 15)
            if text:
                parts.append(f"last lines of the driver's {name}:\n{text}")
        return "\n".join(parts)

    async def release(self, state: dict[str, Any]) -> None:
        self._log_tails.pop(state.get("app_id", ""), None)

    async def _list_apps(self, states: list[dict[str, Any]]) -> dict[ClusterKey, list[YarnApp]]:
        oldest: dict[ClusterKey, int] = {}
        for state in states:
            if state.get("instance_tag"):
                key = _cluster_key(state)
                oldest[key] = min(oldest.get(key, _since(state)), _since(state))
        lists = await asyncio.gather(*(self.rm_for({"rm_urls": key[0]}).apps(key[1], since)
                                       for key, since in oldest.items()))
        return dict(zip(oldest, lists, strict=True))

    # ---- submit ----------------------------------------------------------------------

    def _submit_argv(self, resources: SparkResources, user: str, secrets_file: Path,
                     launcher: Path, argv: list[str]) -> list[str]:
        spark_submit = Path(self.spark_home, "bin", "spark-submit")
        cmd = [str(spark_submit), "--master", "yarn", "--deploy-mode", "cluster",
               "--name", f"{self.km.kernel_name}-{self.kernel_id}", *resources.submit_args()]
        if user:
            cmd += ["--proxy-user", user]
        conf = {**resources.dynamic_allocation_conf(), **self.spark_conf, **resources.conf,
                **self._fixed_conf()}
        for key, value in conf.items():
            cmd += ["--conf", f"{key}={value}"]
        # The Spark startup file lands beside the launcher, in the driver's working dir.
        cmd += ["--files", f"{secrets_file}#{SECRETS_NAME},{spark_startup_path(str(launcher))}",
                str(launcher)]
        cmd += ["--kernel-id", self.kernel_id, "--kernel-name", self.km.kernel_name,
                "--secrets-file", SECRETS_NAME, "--spark-session", self.spark_session]
        return cmd + launcher_args(argv)

    def _fixed_conf(self) -> dict[str, str]:
        """What kernelyard's lifecycle relies on; a kernelspec can't change it."""
        return {
            "spark.yarn.tags": f"{self._kernel_tag()},{self.instance_tag}",
            "spark.yarn.submit.waitAppCompletion": "false",
            "spark.yarn.maxAppAttempts": "1",
            "spark.pyspark.python": self.python,
            # A down RM fails spark-submit in seconds, not after 15 minutes of retries.
            "spark.hadoop.yarn.resourcemanager.connect.max-wait.ms": "20000",
        }

    async def _run_submit(self, cmd: list[str], cwd: str) -> str:
        env = {**scrub_secrets(os.environ, DEFAULT_SECRET_ENVS), **self.submit_env}
        env["SPARK_HOME"] = self.spark_home
        if self.hadoop_conf_dir:
            env["HADOOP_CONF_DIR"] = self.hadoop_conf_dir
        if self.java_home:
            env["JAVA_HOME"] = self.java_home
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        except OSError as e:
            raise ConfigError(f"cannot run spark-submit ({cmd[0]}): {e.strerror}; set "
                              "YarnProvisioner.spark_home") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.submit_timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise KernelStartFailed(
                f"spark-submit failed (exit {proc.returncode}) for kernelspec "
                f"'{self.km.kernel_name}':\n{_last_lines(text, 25)}")
        return text

    async def _check_queue(self, rm: ResourceManager, queue: str) -> None:
        queues = await rm.leaf_queues()
        if queue not in queues:
            known = ", ".join(sorted(q for q in queues if "." not in q))
            raise InvalidRequest(f"queue {queue!r} does not exist on the YARN cluster "
                                 f"(its queues: {known})")

    def _proxy_user(self, env: dict[str, str]) -> str:
        user = env.get("KERNEL_USERNAME", "") if self.impersonate else ""
        if user and not _USER.fullmatch(user):
            raise InvalidRequest(f"KERNEL_USERNAME {user!r} is not a valid user name")
        return user

    def _default_resources(self) -> SparkResources:
        return SparkResources(
            queue=self.queue, driver_memory=self.driver_memory, driver_cores=self.driver_cores,
            executor_memory=self.executor_memory, executor_cores=self.executor_cores,
            num_executors=self.num_executors)

    def _limits(self) -> SparkLimits:
        return SparkLimits(
            max_driver_memory=self.max_driver_memory,
            max_executor_memory=self.max_executor_memory, max_cores=self.max_cores,
            max_executors=self.max_executors, allowed_conf=tuple(self.allowed_spark_conf),
            allowed_queues=tuple(self.allowed_queues))

    def _kernel_tag(self) -> str:
        return f"kernelyard-kernel-{check_kernel_id(self.kernel_id)}"

    def _conf_dir(self) -> str:
        if not self.hadoop_conf_dir:
            raise ConfigError("set YarnProvisioner.rm_urls or HADOOP_CONF_DIR "
                              "(YarnProvisioner.hadoop_conf_dir)")
        return self.hadoop_conf_dir

    # ---- status ----------------------------------------------------------------------

    def _status_of(self, state: dict[str, Any], app: YarnApp | None) -> BackendStatus:
        if app is None:
            age = time.time() * 1000 - int(state.get("submitted_ms", 0))
            if "app_id" not in state or age < NOT_LISTED_GRACE_MS:
                return BackendStatus(PENDING, reason="submitting to YARN")
            return BackendStatus(EXITED, exit_code=1, reason=(
                f"YARN application {state['app_id']} is unknown to the ResourceManager"))
        if app.state == "RUNNING":
            return BackendStatus(RUNNING, app.am_host)
        if app.active:
            detail = f": {app.diagnostics}" if app.diagnostics else ""
            return BackendStatus(PENDING, app.am_host,
                                 reason=f"YARN application {app.id} {app.state} in queue "
                                 f"{app.queue}{detail}")
        code = 0 if app.final_status == "SUCCEEDED" else (-9 if app.state == "KILLED" else 1)
        reason = f"YARN application {app.id} {app.state} ({app.final_status})"
        if app.diagnostics:
            reason += f": {app.diagnostics}"
        return BackendStatus(EXITED, app.am_host, exit_code=code, reason=reason)


def _with_tail(status: BackendStatus, tail: str) -> BackendStatus:
    if not tail or not status.ended:
        return status
    return BackendStatus(status.phase, status.host, status.exit_code, f"{status.reason}\n{tail}")


def _cluster_key(state: dict[str, Any]) -> ClusterKey:
    return (tuple(state.get("rm_urls") or ()), state.get("instance_tag", ""))


def _since(state: dict[str, Any]) -> int:
    """The startedTimeBegin that still finds the kernel's application (clock skew allowed)."""
    return max(int(state.get("submitted_ms", 0)) - 60_000, 0)


def _app_of(state: dict[str, Any], apps: list[YarnApp]) -> YarnApp | None:
    """This kernel's current application: by id once known, else the newest with its tag."""
    if state.get("app_id"):
        return next((a for a in apps if a.id == state["app_id"]), None)
    mine = [a for a in apps if state.get("tag") in a.tags
            and a.started_ms >= int(state.get("submitted_ms", 0)) - 60_000]
    return max(mine, key=lambda a: a.started_ms, default=None)


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def _spnego_header(host: str) -> str:
    from ..auth.spnego import negotiate_header

    return negotiate_header(host)
