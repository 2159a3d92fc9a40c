"""``kernelyard-yarn``: Spark kernels as YARN applications in cluster deploy mode.

``spark-submit --master yarn --deploy-mode cluster`` runs the launcher as the
Python primary resource inside the driver container; the launcher starts the
kernel, which inherits the driver's py4j gateway and creates the SparkSession in
the driver's JVM. The secrets travel in a 0600 file that spark-submit ships
into the application's private staging dir (``--files``), never on a command
line. Each application is tagged with the kernel id and the gateway's instance
tag, so ONE ResourceManager query per poll interval finds all of them (the
backend object, ``kernelyard.provisioners.yarn_backend``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, ClassVar, cast

from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, default

from ..errors import BackendUnavailable, ConfigError, InvalidRequest
from ..identity import check_kernel_id, is_valid_username
from ..launcher import spark_startup_path
from ..resources import Limit, Resources, parse_limits
from . import spark_submit
from . import start_steps as steps
from .backend import Backend
from .base import RemoteProvisionerBase
from .command import launcher_file, write_secrets_file
from .launcher_link import launcher_args
from .spark_submit import SparkDefaults
from .yarn_backend import YarnBackend, YarnConfig
from .yarn_rm import ResourceManager
from .yarn_submit import SECRETS_NAME, app_id_in, check_queue, run_spark_submit, submit_env

_LEGACY_SETTINGS = {
    "KERNEL_DRIVER_MEMORY": "YarnProvisioner.max_driver_memory",
    "KERNEL_EXECUTOR_MEMORY": "YarnProvisioner.max_executor_memory",
    "KERNEL_DRIVER_CORES": "YarnProvisioner.max_cores",
    "KERNEL_EXECUTOR_CORES": "YarnProvisioner.max_cores",
    "KERNEL_NUM_EXECUTORS": "YarnProvisioner.max_executors",
    "KERNEL_SPARK_CONF": "YarnProvisioner.allowed_spark_conf",
    "KERNEL_QUEUE": "YarnProvisioner.allowed_queues"}


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
    max_driver_memory = Unicode(
        "4g", config=True, help="The most KERNEL_MEMORY (KERNEL_DRIVER_MEMORY) may ask: the "
        "kernelspec level's KERNEL_DRIVER_MEMORY limit (resource_limits overrides it).")
    max_executor_memory = Unicode(
        "8g", config=True, help="The most KERNEL_EXECUTOR_MEMORY may ask (a spelling of "
        "resource_limits' KERNEL_EXECUTOR_MEMORY, which overrides it).")
    max_cores = Integer(
        4, config=True, help="The most KERNEL_CPUS (KERNEL_DRIVER_CORES) and "
        "KERNEL_EXECUTOR_CORES may ask (resource_limits overrides it).")
    max_executors = Integer(
        10, config=True, help="The most KERNEL_NUM_EXECUTORS may ask (resource_limits' "
        "KERNEL_NUM_EXECUTORS overrides it).")
    spark_conf = Dict(
        value_trait=Unicode(), config=True, help="Spark conf every kernel of the spec gets."
    )
    allowed_spark_conf = List(
        Unicode(), ["spark.sql.*", "spark.dynamicAllocation.maxExecutors"], config=True,
        help="Spark conf keys (glob patterns) a request may set in KERNEL_SPARK_CONF (a "
        "spelling of resource_limits' KERNEL_SPARK_CONF, which overrides it).",
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

    backend_class: ClassVar[type[Backend]] = YarnBackend
    supported_resources: ClassVar[frozenset[str]] = spark_submit.SUPPORTED

    def kernels_share_account(self) -> bool:
        """Without ``impersonate`` (``--proxy-user``), all run as the gateway's Hadoop user."""
        return not self.impersonate

    def run_as_owner_setting(self) -> str:
        return "YarnProvisioner.impersonate = True"

    def kernelspec_limits(self, spec_name: str) -> dict[str, Limit]:
        """``resource_limits`` over its older spellings (``max_driver_memory`` ...)."""
        legacy: dict[str, Any] = {
            "KERNEL_DRIVER_MEMORY": self.max_driver_memory,
            "KERNEL_EXECUTOR_MEMORY": self.max_executor_memory,
            "KERNEL_DRIVER_CORES": self.max_cores, "KERNEL_EXECUTOR_CORES": self.max_cores,
            "KERNEL_NUM_EXECUTORS": self.max_executors,
            "KERNEL_SPARK_CONF": list(self.allowed_spark_conf)}
        if self.allowed_queues:
            legacy["KERNEL_QUEUE"] = list(self.allowed_queues)
        source = f"the limit of kernelspec '{spec_name}'"
        return {**parse_limits(legacy, "YarnProvisioner", source, _LEGACY_SETTINGS),
                **super().kernelspec_limits(spec_name)}

    def check_resources(self, resources: Resources, who: str, spec_name: str) -> None:
        super().check_resources(resources, who, spec_name)
        spark_submit.check(resources)

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
        return steps.instance_tag()

    def backend_config(self) -> YarnConfig:
        return YarnConfig(
            poll_interval=self.poll_interval, rm_urls=tuple(self.rm_urls),
            hadoop_conf_dir=self.hadoop_conf_dir, rm_auth=self.rm_auth,
            rm_timeout=self.rm_timeout, instance_tag=self.instance_tag)

    @property
    def yarn(self) -> YarnBackend:
        """This kernelspec's YARN backend object."""
        return cast(YarnBackend, self.backend)

    def rm_for(self, state: dict[str, Any] | None = None) -> ResourceManager:
        """The RM client of a kernel's cluster (from its state), or of this kernelspec."""
        return self.yarn.rm_for(state)

    async def submit(
        self, argv: list[str], env: dict[str, str], secrets: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        if self.spark_session == "none":
            raise ConfigError(
                f"kernelspec '{self.km.kernel_name}': spark_session 'none' needs Spark client "
                "mode; in YARN cluster mode the application fails when its driver creates no "
                "SparkContext within spark.yarn.am.waitTime")
        resources = self.plan.resources
        queue = resources.queue or self.queue
        user = self._proxy_user(env)
        rm = self.rm_for()
        await check_queue(rm, queue)
        yield {"tag": self._kernel_tag(), "instance_tag": self.instance_tag, "rm_urls": rm.urls,
               "submitted_ms": int(time.time() * 1000), "queue": queue, "user": user}
        # Delivery.FILE (the secrets, 0600, by --files) and Delivery.PRIMARY_RESOURCE.
        with tempfile.TemporaryDirectory(prefix="kernelyard-submit-") as tmp:
            secrets_file = write_secrets_file(tmp, SECRETS_NAME, secrets, env)
            with launcher_file() as launcher:
                cmd = self._submit_argv(resources, user, secrets_file, launcher, argv)
                began = time.time()
                output = await self._run_submit(cmd, tmp, secrets.values())
        app_id = app_id_in(output)
        self.log.info("Kernel %s: spark-submit took %.2f s (at %.3f): YARN application %s",
                      self.kernel_id, time.time() - began, time.time(),
                      app_id or "(id not in its output)")
        if app_id:
            yield {"app_id": app_id}

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
            await self.yarn.kill_apps(self.state,
                                      lambda app: app.active and app.state != "RUNNING")

    def _submit_argv(self, resources: Resources, user: str, secrets_file: Path,
                     launcher: Path, argv: list[str]) -> list[str]:
        defaults = self._defaults()
        cmd = [str(Path(self.spark_home, "bin", "spark-submit")), "--master", "yarn",
               "--deploy-mode", "cluster", "--name", f"{self.km.kernel_name}-{self.kernel_id}",
               *spark_submit.submit_options(resources, defaults)]
        if user:
            cmd += ["--proxy-user", user]
        conf = {**spark_submit.spark_conf(resources, defaults), **self._fixed_conf()}
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

    async def _run_submit(self, cmd: list[str], cwd: str, secrets: Iterable[str]) -> str:
        env = submit_env(self.spark_home, self.hadoop_conf_dir, self.java_home, self.submit_env)
        return await run_spark_submit(cmd, cwd, env, self.submit_timeout, secrets,
                                      self.km.kernel_name)

    def _proxy_user(self, env: dict[str, str]) -> str:
        """The --proxy-user: the plan's run-as user with ``impersonate``, else ''."""
        user = self.plan.run_as if self.impersonate else ""
        if user and not is_valid_username(user):
            raise InvalidRequest(f"KERNEL_USERNAME {user!r} is not a valid user name")
        return user

    def _defaults(self) -> SparkDefaults:
        return SparkDefaults(
            queue=self.queue, driver_memory=self.driver_memory, driver_cores=self.driver_cores,
            executor_memory=self.executor_memory, executor_cores=self.executor_cores,
            num_executors=self.num_executors, conf=dict(self.spark_conf))

    def _kernel_tag(self) -> str:
        return f"kernelyard-kernel-{check_kernel_id(self.kernel_id)}"
