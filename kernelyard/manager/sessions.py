"""Sessions, each visible only to its owner, and who is asking (``acting_as``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.services.sessions.sessionmanager import SessionManager

from .. import policy
from ..audit import AuditEvent
from ..errors import NotFound, Unauthorized
from ..identity import Principal

NO_CALLER = "no authenticated caller for this operation"


@dataclass
class Caller:
    """Who asks for an operation, and the audit line the request will write."""

    principal: Principal
    event: AuditEvent = field(default_factory=lambda: AuditEvent("api"))


current_caller: ContextVar[Caller | None] = ContextVar("kernelyard_caller", default=None)


@contextlib.contextmanager
def acting_as(caller: Caller) -> Iterator[Caller]:
    """Run the body on behalf of ``caller`` (read by ``GatewaySessionManager``)."""
    token = current_caller.set(caller)
    try:
        yield caller
    finally:
        current_caller.reset(token)


class GatewaySessionManager(SessionManager):  # type: ignore[misc]
    """jupyter_server's sessions, each with an owner of its own, and gone with its kernel.

    The session handlers run on behalf of the caller (``acting_as``). A session
    belongs to whoever created it (the ``owner`` column): only that user, while
    they may still access its kernel, and admins see it; any other session is
    answered like a missing one (404). A session's kernel starts through
    ``GatewayMappingKernelManager.launch``, and a session can only be pointed at
    a kernel the caller may access: any other id, of a missing kernel or of
    someone else's, gets the same 404 (``require_kernel``). When a kernel is
    removed (shut down, culled), its session rows are deleted, so a later kernel
    can never inherit them. Without a caller (the gateway itself) every session
    is visible, and no kernel can be started.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        listeners = getattr(self.kernel_manager, "kernel_removed_listeners", None)
        if listeners is not None:
            listeners.append(self.forget_kernel)

    @property
    def cursor(self) -> Any:
        """jupyter_server's table, with an ``owner`` column (added to an older table)."""
        if self._cursor is None:
            cursor = self.connection.cursor()
            cursor.execute("CREATE TABLE IF NOT EXISTS session "
                           "(session_id, path, name, type, kernel_id, owner)")
            if "owner" not in {row[1] for row in cursor.execute("PRAGMA table_info(session)")}:
                cursor.execute("ALTER TABLE session ADD COLUMN owner")
            self._cursor = cursor
        return self._cursor

    def forget_kernel(self, kernel_id: str) -> None:
        """Delete the sessions of a kernel that is gone."""
        self.cursor.execute("DELETE FROM session WHERE kernel_id=?", (kernel_id,))

    def _may_see(self, row: Any) -> bool:
        caller = current_caller.get()
        if caller is None or caller.principal.admin:
            return True
        if not row["owner"] or row["owner"] != caller.principal.name:
            return False
        km: Any = self.kernel_manager
        kernel_id = row["kernel_id"]  # a gone kernel's row is dropped by row_to_model
        return kernel_id not in km or bool(km.may_access(caller.principal, kernel_id))

    def require_kernel(self, kernel_id: str) -> str:
        """``kernel_id`` if the caller may attach a session to it; else the ``NotFound`` of a
        missing kernel (a malformed id is an ``InvalidRequest``)."""
        caller = current_caller.get()
        if caller is None:
            return kernel_id
        policy.check_kernel_id(kernel_id)
        km: Any = self.kernel_manager
        if kernel_id in km and km.may_access(caller.principal, kernel_id):
            return kernel_id
        raise self._refuse(f"no such kernel: {kernel_id}", denied=kernel_id in km)

    def _refuse(self, message: str, denied: bool = True) -> NotFound:
        caller = current_caller.get()
        if caller is not None and denied:
            caller.event.ownership_denied = True
        return NotFound(message)

    def _rows(self, **columns: Any) -> list[Any]:
        for column in columns:
            if column not in self._columns:
                raise TypeError(f"No such column: {column}")
        where = " AND ".join(f"{column}=?" for column in columns) or "1"
        # Column names are checked against the table's; values go through '?' parameters.
        query = f"SELECT * FROM session WHERE {where}"  # noqa: S608
        return list(self.cursor.execute(query, list(columns.values())).fetchall())

    async def save_session(self, session_id: str, path: str | None = None, name: Any = None,
                           type: str | None = None,
                           kernel_id: str | None = None) -> dict[str, Any]:
        """jupyter_server's row, with the caller as the session's owner."""
        caller = current_caller.get()
        owner = caller.principal.name if caller is not None else ""
        self.cursor.execute("INSERT INTO session VALUES (?,?,?,?,?,?)",
                            (session_id, path, name, type, kernel_id, owner))
        return await self.get_session(session_id=session_id)

    async def session_exists(self, path: str) -> bool:
        """Whether the caller has a live session for ``path`` (others' do not count)."""
        for row in self._rows(path=path):
            if self._may_see(row) and await self.row_to_model(
                    row, tolerate_culled=True) is not None:
                return True
        return False

    async def get_session(self, **kwargs: Any) -> dict[str, Any]:
        """The first session matching ``kwargs`` that the caller may see; else NotFound."""
        if not kwargs:
            raise TypeError("must specify a column to query")
        rows = self._rows(**kwargs)
        visible = [row for row in rows if self._may_see(row)]
        missing = "Session not found: " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        if not visible:
            raise self._refuse(missing) if rows else NotFound(missing)
        try:
            model: dict[str, Any] = await self.row_to_model(visible[0])
        except KeyError:
            raise NotFound(missing) from None
        return model

    async def row_to_model(self, row: Any, tolerate_culled: bool = False) -> Any:
        """jupyter_server's model, with ``""`` for a session created without a name.

        jupyter_server answers ``null`` there, which its own spec (a string) and
        JupyterLab's session model check refuse; the row keeps the null, so the
        kernel's ``JPY_SESSION_NAME`` is still the path.
        """
        model = await super().row_to_model(row, tolerate_culled=tolerate_culled)
        if model is not None and model["name"] is None:
            model["name"] = ""
            if "notebook" in model:
                model["notebook"]["name"] = ""
        return model

    async def list_sessions(self) -> list[dict[str, Any]]:
        """The sessions the caller may see."""
        models = []
        for row in self._rows():
            if self._may_see(row):
                with contextlib.suppress(KeyError):  # its kernel is gone: the row too
                    models.append(await self.row_to_model(row))
        return models

    async def create_session(self, path: str | None = None, name: Any = None,
                             type: str | None = None, kernel_name: Any = None,
                             kernel_id: str | None = None) -> dict[str, Any]:
        """A new session; a ``kernel_id`` must name a kernel the caller may access (a new
        kernel at a chosen id is ``POST /api/kernels`` with ``KERNEL_ID``)."""
        if kernel_id is not None:
            self.require_kernel(kernel_id)
        result: dict[str, Any] = await super().create_session(
            path=path, name=name, type=type, kernel_name=kernel_name, kernel_id=kernel_id)
        return result

    async def update_session(self, session_id: str, **kwargs: Any) -> None:
        """jupyter_server's update; a new ``kernel_id`` must be one the caller may access."""
        kernel_id = kwargs.get("kernel_id")
        if kernel_id is not None:
            self.require_kernel(kernel_id)
        await super().update_session(session_id, **kwargs)

    def get_kernel_env(self, path: str | None, name: Any = None) -> dict[str, str]:
        """Only ``JPY_SESSION_NAME``: the kernel's env is built by the launch rules, and
        jupyter_server's version would copy the gateway's whole environment."""
        if name is not None:
            path = os.path.join(self.kernel_manager.cwd_for_path(path), name)
        return {"JPY_SESSION_NAME": str(path)}

    async def start_kernel_for_session(self, session_id: str, path: str | None, name: Any,
                                       type: str | None, kernel_name: str | None,
                                       kernel_id: str | None = None) -> str:
        """Start the session's kernel for the caller, under every launch rule."""
        caller = current_caller.get()
        if caller is None:
            raise Unauthorized(NO_CALLER)
        kernel_path = await ensure_async(self.contents_manager.get_kernel_path(path=path))
        request = policy.LaunchRequest(
            kernel_name=kernel_name, path=policy.check_api_path(kernel_path),
            env=self.get_kernel_env(path, name),
            kernel_id=None if kernel_id is None else policy.check_kernel_id(kernel_id))
        km: Any = self.kernel_manager
        return str(await km.launch(caller, request))
