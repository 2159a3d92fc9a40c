"""kernelyard: this kernel's Spark session, as `spark` and `sc`.

lazy: both names exist at once and the session is created in the background
(in YARN cluster mode the ApplicationMaster waits for it); eager: it is created
before the kernel answers. After an interrupt the running Spark jobs are cancelled,
and the interrupt is shown as a KeyboardInterrupt even when PySpark's clean-up
replaced it with a py4j error.
"""

# Shipped beside the launcher (``kernelyard.launcher.spark_startup_path``: the
# launcher's file name with ``_spark`` before ``.py``), which points IPython at it
# ($PYTHONSTARTUP) with the settings in $KERNELYARD_SPARK. It runs in the kernel's user
# namespace, on the node's Python (3.8 or later), needing only the standard library
# and (when the session is made) pyspark: so no __future__ import (it would change how
# the user's cells compile), no names left behind but `spark` and `sc`, and typing's
# generics instead of the builtin ones.


def _kernelyard_spark_session() -> None:
    import json
    import os
    import threading
    from typing import Any, Dict, Optional

    from IPython import get_ipython

    settings = json.loads(os.environ.pop("KERNELYARD_SPARK", "{}"))
    shell: Any = get_ipython()
    ready = threading.Event()
    made: Dict[str, Any] = {}

    class Pending:
        """Stands for `spark` or `sc` until the session exists, then forwards to it."""

        def __init__(self, name: str) -> None:
            object.__setattr__(self, "_name", name)

        def _target(self) -> Any:
            ready.wait()
            if "error" in made:
                raise RuntimeError(f"the Spark session could not be created: {made['error']}")
            return made[self._name]

        def __getattr__(self, attr: str) -> Any:
            return getattr(self._target(), attr)

        def __dir__(self) -> Any:
            return dir(self._target())

        def __repr__(self) -> str:
            if ready.is_set():
                return repr(self._target())
            return f"<{self._name}: the Spark session is starting>"

    pending = {"spark": Pending("spark"), "sc": Pending("sc")}

    def create() -> None:
        try:
            # Imported here: in lazy mode the kernel answers without waiting for it.
            from pyspark.sql import SparkSession

            builder = SparkSession.builder
            if settings.get("master"):
                builder = builder.master(settings["master"])
            for key, value in settings.get("conf", {}).items():
                builder = builder.config(key, value)
            made["spark"] = builder.getOrCreate()
            made["sc"] = made["spark"].sparkContext
        except BaseException as e:  # shown to the user on first use of spark / sc
            made["error"] = e
        finally:
            ready.set()
        for name in ("spark", "sc"):
            if name in made and shell.user_ns.get(name) is pending[name]:
                shell.user_ns[name] = made[name]

    def interrupt_in(error: Optional[BaseException]) -> Optional[BaseException]:
        """The KeyboardInterrupt that `error` was raised while handling, if any.

        An interrupt that lands in a py4j call can be replaced on its way out by a
        Py4JError from PySpark's clean-up calls (SCCallSiteSync.__exit__ gets "Answer
        from Java side is empty" on a fresh connection): it is still an interrupt.
        """
        seen = set()
        while error is not None and id(error) not in seen:
            if isinstance(error, KeyboardInterrupt):
                return error
            seen.add(id(error))
            error = error.__cause__ or error.__context__
        return None

    def show_py4j_error(shell: Any, etype: Any, value: BaseException, tb: Any,
                        tb_offset: Optional[int] = None) -> None:
        interrupt = interrupt_in(value)
        if interrupt is not None:
            shell.showtraceback((KeyboardInterrupt, interrupt, interrupt.__traceback__))
        else:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)

    def cancel_jobs_after_interrupt(result: Any) -> None:
        interrupt = interrupt_in(result.error_in_exec)
        if interrupt is None:
            return
        result.error_in_exec = interrupt  # the execute_reply's ename
        if "sc" in made:
            made["sc"].cancelAllJobs()

    try:
        from py4j.protocol import Py4JError
    except ImportError:  # no pyspark: `spark` and `sc` say so when used
        pass
    else:
        shell.set_custom_exc((Py4JError,), show_py4j_error)
    shell.events.register("post_run_cell", cancel_jobs_after_interrupt)
    shell.user_ns.update(pending)
    if settings.get("mode") == "eager":
        create()
    else:
        threading.Thread(target=create, name="kernelyard-spark", daemon=True).start()


if __name__ == "__main__":  # run by IPython ($PYTHONSTARTUP), not when imported
    _kernelyard_spark_session()
    del _kernelyard_spark_session
