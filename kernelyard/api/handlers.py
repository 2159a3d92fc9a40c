"""REST and WebSocket handlers: jupyter_server's, with the gateway's rules.

Each class subclasses the jupyter_server handler for the same route and adds
only what a gateway needs: 401 and JSON errors, client env and kernel id
validation, the ``list_kernels`` gate, and who may do what:

- a kernel belongs to its owner: every handler of one kernel (REST and
  websocket) calls ``check_kernel`` first, so a non-owner gets the same 404 as
  for a missing kernel (admins may act on every kernel);
- listings (kernels, sessions, kernelspecs) show only what the caller may see
  or launch;
- launches go through ``GatewayMappingKernelManager.launch`` (the policy and
  the quotas); sessions run on behalf of the caller (``acting_as``).

Every request fills in an audit event (``audit_event``), written when it ends
(``kernelyard.api.base``). The route table is ``kernelyard.api.routes``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import jupyter_server
from jupyter_client.jsonutil import json_default
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.kernelspecs.handlers import KernelSpecResourceHandler
from jupyter_server.services.kernels import handlers as kernels
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from jupyter_server.services.kernelspecs import handlers as kernelspecs
from jupyter_server.services.sessions import handlers as sessions
from jupyter_server.utils import url_escape, url_path_join, url_unescape
from tornado import web

from .. import policy
from .._version import __version__
from ..audit import OK, AuditEvent, where_of
from ..auth.provider import principal_of
from ..errors import ClientLeft, Forbidden, InvalidRequest, NotFound
from ..identity import Principal
from ..manager import Caller, acting_as
from .base import GatewayHandlerMixin

T = TypeVar("T")


def gateway_app(handler: Any) -> Any:
    """The KernelyardApp serving this request (holds the gateway settings)."""
    return handler.settings["kernelyard_app"]


def shown_model(viewer: Principal, model: dict[str, Any]) -> dict[str, Any]:
    """A kernel model as ``viewer`` may see it: another user's env never, secrets redacted."""
    if "env" in model:
        model = {**model, "env": policy.redact_env_for(viewer, policy.owner_of(model),
                                                       model["env"])}
    return model


class CallerMixin:
    """The caller of a request, and the ownership check for one kernel."""

    def caller(self) -> Caller:
        """The authenticated caller, with this request's audit event."""
        handler: Any = self
        return Caller(principal_of(handler), handler.audit_event)

    def check_kernel(self, kernel_id: str) -> Principal:
        """The caller, if it may act on the kernel: its owner, or an admin.

        Anyone else gets ``NotFound`` with the message of a missing kernel, so
        kernel ids cannot be probed; the audit line records the refusal.
        """
        handler: Any = self
        principal = principal_of(handler)
        km, event = handler.kernel_manager, handler.audit_event
        event.kernel_id = kernel_id
        owner = km.owner_of(kernel_id)  # NotFound for a missing kernel
        kernel = km.get_kernel(kernel_id)
        event.kernelspec, event.owner, event.where = kernel.kernel_name, owner or "", \
            where_of(kernel)
        if not policy.may_access_kernel(principal, owner):
            event.ownership_denied = True
            raise NotFound(f"no such kernel: {kernel_id}")
        return principal

    def may_use_kernelspec(self, principal: Principal, name: str,
                           metadata: Mapping[str, Any]) -> bool:
        handler: Any = self
        return bool(handler.kernel_manager.may_use_kernelspec(principal, name, metadata))


class VersionHandler(GatewayHandlerMixin, APIHandler):
    """``GET /api``: the API and gateway versions."""

    @web.authenticated
    async def get(self) -> None:
        self.finish({"version": jupyter_server.__version__, "gateway_version": __version__})


class CancelOnCloseMixin:
    """A long operation that is cancelled when the client closes its connection.

    tornado calls ``on_connection_close`` when the client hangs up while the
    request runs; the operation's task is then cancelled (a kernel start cleans
    up what it launched) and the request ends with 499, which nobody reads but
    the access and audit logs.
    """

    async def until_client_leaves(self, work: Awaitable[T]) -> T:
        handler: Any = self
        task = asyncio.ensure_future(work)
        handler._cancellable = task
        try:
            return await task
        except asyncio.CancelledError:
            if not getattr(handler, "_client_left", False):
                raise
            raise ClientLeft("the client closed the connection; the start was cancelled "
                             "and cleaned up") from None
        finally:
            handler._cancellable = None

    def on_connection_close(self) -> None:
        handler: Any = self
        task = getattr(handler, "_cancellable", None)
        if task is not None and not task.done():
            handler._client_left = True
            handler.log.info("%s %s: the client closed the connection; cancelling",
                             handler.request.method, handler.request.path)
            task.cancel()
        super().on_connection_close()  # type: ignore[misc]


class MainKernelHandler(CancelOnCloseMixin, CallerMixin, GatewayHandlerMixin,
                        kernels.MainKernelHandler):
    """``GET/POST /api/kernels``: the caller's kernels (all for an admin); start one.

    A start ends with the client: closing the connection cancels it (nothing is left).
    """

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType({"GET": "list", "POST": "launch"})

    @web.authenticated
    @authorized
    async def get(self) -> None:
        if not gateway_app(self).list_kernels:
            raise Forbidden("listing kernels is disabled (KernelyardApp.list_kernels)")
        principal = principal_of(self)
        models = await ensure_async(self.kernel_manager.list_kernels())
        shown = [shown_model(principal, m) for m in policy.visible_kernels(principal, models)]
        self.finish(json.dumps(shown, default=json_default))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        app = gateway_app(self)
        km: Any = self.kernel_manager
        self.audit_event.kernelspec = km.default_kernel_name
        launch = policy.parse_launch_request(self.get_json_body(), app.env_policy)
        kernel_id = await self.until_client_leaves(km.launch(self.caller(), launch))
        model = await ensure_async(km.kernel_model(kernel_id))
        self.set_header(
            "Location", url_path_join(self.base_url, "api", "kernels", url_escape(kernel_id))
        )
        self.set_status(201)
        self.finish(json.dumps(shown_model(principal_of(self), model), default=json_default))


class KernelHandler(CallerMixin, GatewayHandlerMixin, kernels.KernelHandler):
    """``GET/DELETE /api/kernels/{id}``: the owner's or an admin's."""

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"GET": "get", "DELETE": "shutdown"})

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        principal = self.check_kernel(kernel_id)
        model = await ensure_async(self.kernel_manager.kernel_model(kernel_id))
        self.finish(json.dumps(shown_model(principal, model), default=json_default))

    @web.authenticated
    async def delete(self, kernel_id: str) -> None:
        self.check_kernel(kernel_id)
        await super().delete(kernel_id)


class KernelActionHandler(CallerMixin, GatewayHandlerMixin, kernels.KernelActionHandler):
    """``POST /api/kernels/{id}/interrupt|restart``: the owner's or an admin's."""

    def audit_action(self) -> str:
        return str(self.path_kwargs.get("action") or "api")

    @web.authenticated
    async def post(self, kernel_id: str, action: str) -> None:
        self.check_kernel(kernel_id)
        await super().post(kernel_id, action)


class ChannelsHandler(CallerMixin, GatewayHandlerMixin, KernelWebsocketHandler):
    """``/api/kernels/{id}/channels``: legacy JSON and the v1 binary subprotocol.

    Only the kernel's owner or an admin may connect; anyone else gets 404 before
    the handshake. A caller over a connection limit gets 403, naming the
    setting, before the handshake too. The relay (``GatewayChannelsConnection``)
    parses frames with bounds, back-pressures output and re-checks credentials;
    this handler hands it the caller, the credential check and the audit of
    control requests.
    """

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType({"GET": "connect"})
    # Control requests that are kernel operations, audited when sent over the websocket.
    AUDITED_CONTROL: ClassVar[Mapping[str, str]] = MappingProxyType({
        "shutdown_request": "shutdown", "interrupt_request": "interrupt"})

    async def pre_get(self) -> None:
        principal = self.check_kernel(self.kernel_id)
        if not _asks_for_websocket(self.request.headers):  # tornado's 400 is plain text
            raise InvalidRequest("a websocket URL: send 'Connection: Upgrade' and "
                                 "'Upgrade: websocket'")
        policy.check_session_id(self.get_argument("session_id", ""))
        await super().pre_get()
        # No await between this check and open(): concurrent handshakes cannot overshoot.
        self.connection.check_limits(principal.name)

    async def open(self, kernel_id: str) -> None:  # type: ignore[override]
        # Small kernel messages must not wait for Nagle's algorithm.
        self.set_nodelay(True)
        connection = self.connection
        connection.register(principal_of(self).name)
        connection.on_kernel_request = self._audit_control_request
        still_valid = self._credential_check()
        if still_valid is not None:
            connection.watch_credential(still_valid)
        await super().open(kernel_id)

    def on_message(self, message: str | bytes) -> Any:
        """Forward a frame; first re-check stale credentials (tornado waits for that)."""
        connection = self.connection
        if connection is None:
            return None
        if connection.credential_fresh():
            connection.handle_incoming_message(message)
            return None
        return connection.handle_incoming_after_check(message)

    def _credential_check(self) -> Any:
        """The check of this request's credentials by the authenticator that accepted
        them, if it offers one (``still_valid(request)``; api-token does)."""
        via = principal_of(self).via
        provider: Any = self.identity_provider
        for auth in provider.authenticators:
            still_valid = getattr(auth, "still_valid", None)
            if getattr(auth, "name", None) == via and still_valid is not None:
                request = self.request
                return lambda: still_valid(request)
        return None

    def _audit_control_request(self, msg: Any) -> None:
        """Audit a shutdown (restart when ``content.restart``) or interrupt request."""
        action = self.AUDITED_CONTROL.get(msg.msg_type)
        if action is None:
            return
        if action == "shutdown" and msg.content.get("restart") is True:
            action = "restart"
        principal = principal_of(self)
        base = self.audit_event
        event = AuditEvent(action, who=principal.name, via=principal.via, client=base.client,
                           kernel_id=base.kernel_id, kernelspec=base.kernelspec,
                           owner=base.owner, where=base.where, transport="websocket")
        gateway_app(self).audit.write(event, OK, None)


def _asks_for_websocket(headers: Mapping[str, str]) -> bool:
    """The headers tornado's websocket handshake requires."""
    connection = {part.strip().lower() for part in headers.get("Connection", "").split(",")}
    return headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection


class MainKernelSpecHandler(CallerMixin, GatewayHandlerMixin, kernelspecs.MainKernelSpecHandler):
    """``GET /api/kernelspecs[?user=NAME]``: the kernelspecs the caller may launch.

    ``?user=NAME`` (Enterprise Gateway's) narrows the list further to those that
    user may use by the gateway-wide and kernelspec lists.
    """

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType({"GET": "kernelspecs"})

    @web.authenticated
    @authorized
    async def get(self) -> None:
        app = gateway_app(self)
        principal = principal_of(self)
        user = self.get_argument("user", None)
        specs = await ensure_async(self.kernel_spec_manager.get_all_specs())
        models: dict[str, Any] = {}
        for name, info in specs.items():
            spec = info.get("spec") or {}
            if not self.may_use_kernelspec(principal, name, policy.spec_metadata_of(info)):
                continue
            if user is not None and not app.user_may_use_kernelspec(user, spec):
                continue
            models[name] = await asyncio.to_thread(
                kernelspecs.kernelspec_model, self, name, spec, info.get("resource_dir", "")
            )
        default = self.kernel_manager.default_kernel_name
        self.finish(json.dumps({"default": default, "kernelspecs": models}))


class KernelSpecAccessMixin(CallerMixin):
    """A kernelspec the caller may not launch is answered like a missing one."""

    async def check_kernelspec(self, kernel_name: str) -> None:
        handler: Any = self
        name = url_unescape(kernel_name)
        try:  # by its canonical name, as a launch is (policy.canonical_kernelspec_name)
            canonical, spec = await handler.kernel_manager.resolve_kernelspec(name)
        except NotFound:
            raise NotFound(f"Kernel spec {name} not found") from None
        if not self.may_use_kernelspec(principal_of(handler), canonical, spec.metadata):
            raise NotFound(f"Kernel spec {name} not found")


class KernelSpecHandler(KernelSpecAccessMixin, GatewayHandlerMixin, kernelspecs.KernelSpecHandler):
    """``GET /api/kernelspecs/{name}``."""

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType({"GET": "kernelspecs"})

    @web.authenticated
    async def get(self, kernel_name: str) -> None:
        await self.check_kernelspec(kernel_name)
        await super().get(kernel_name)


class KernelSpecResourceFileHandler(KernelSpecAccessMixin, GatewayHandlerMixin,
                                    KernelSpecResourceHandler):
    """``GET /kernelspecs/{name}/{resource}``: logos, kernel.js."""

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"GET": "kernelspecs", "HEAD": "kernelspecs"})

    @web.authenticated
    async def get(  # type: ignore[override]
        self, kernel_name: str, path: str, include_body: bool = True
    ) -> None:
        check_resource_path(kernel_name, path)
        await self.check_kernelspec(kernel_name)
        await super().get(kernel_name, path, include_body=include_body)


_SPEC_NAME = re.compile(r"[a-z0-9._\-]+", re.IGNORECASE)  # jupyter_client's kernelspec names
MAX_RESOURCE_PATH = 1024


def check_resource_path(kernel_name: str, path: str) -> None:
    """``InvalidRequest`` unless ``path`` names a file inside a kernelspec's directory.

    Checked on the decoded request, before any file system call: a NUL or other
    control character, a backslash, an absolute path, and empty, ``.`` or ``..``
    segments are refused, so are kernelspec names jupyter_client would not list.
    """
    if not _SPEC_NAME.fullmatch(kernel_name) or kernel_name in (".", ".."):
        raise InvalidRequest(f"invalid kernelspec name {kernel_name!r}: letters, digits, "
                             "'.', '_' and '-' only")
    problem = _resource_path_problem(path)
    if problem:
        raise InvalidRequest(f"invalid kernelspec resource path {path!r}: {problem}")


def _resource_path_problem(path: str) -> str:
    if not path:
        return "empty (name a file of the kernelspec, e.g. logo-64x64.png)"
    if len(path) > MAX_RESOURCE_PATH:
        return f"longer than {MAX_RESOURCE_PATH} characters"
    if policy.unsafe_character(path) is not None:
        return "it holds a control or line separator character, or is not UTF-8"
    if "\\" in path:
        return "it holds a backslash"
    if path.startswith("/"):
        return "it is absolute"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "it must stay inside the kernelspec's directory (no '..', '.' or empty segment)"
    return ""


class SessionRootHandler(CancelOnCloseMixin, CallerMixin, GatewayHandlerMixin,
                         sessions.SessionRootHandler):
    """``GET/POST /api/sessions``: the caller's sessions; a new one's kernel is launched
    under every launch rule (and cancelled if the client closes the connection)."""

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"GET": "list", "POST": "session"})

    @web.authenticated
    async def get(self) -> None:
        with acting_as(self.caller()):
            await super().get()

    @web.authenticated
    async def post(self) -> None:
        policy.check_session_model(self.get_json_body())
        with acting_as(self.caller()):
            creating: Any = super().post()
            await self.until_client_leaves(creating)


class SessionHandler(CancelOnCloseMixin, CallerMixin, GatewayHandlerMixin,
                     sessions.SessionHandler):
    """``GET/PATCH/DELETE /api/sessions/{id}``: sessions of the caller's kernels only."""

    audit_actions: ClassVar[Mapping[str, str]] = MappingProxyType({
        "GET": "get", "PATCH": "session", "DELETE": "shutdown"})

    @web.authenticated
    async def get(self, session_id: str) -> None:
        with acting_as(self.caller()):
            await super().get(session_id)

    @web.authenticated
    async def patch(self, session_id: str) -> None:
        """jupyter_server's PATCH; a new kernel (``kernel.name``) is launched here first.

        jupyter_server turns any failure to start it into a 501 with a body of its
        own; launched here, a refusal keeps its status and the JSON error shape.
        """
        body = self.get_json_body()
        if body is not None:  # jupyter_server answers a missing body
            policy.check_session_model(body)
        with acting_as(self.caller()):
            sm: Any = self.session_manager
            before = await sm.get_session(session_id=session_id)
            kernel = (body or {}).get("kernel")
            if isinstance(kernel, dict) and kernel.get("id") is not None:
                sm.require_kernel(kernel["id"])  # missing or not the caller's: one 404
            if isinstance(kernel, dict) and kernel.get("id") is None and kernel.get("name"):
                kernel_id = await self.until_client_leaves(sm.start_kernel_for_session(
                    session_id, path=before["path"], name=before["name"], type=before["type"],
                    kernel_name=kernel["name"]))
                self._patched_body = {**body, "kernel": {"id": kernel_id}}
            await super().patch(session_id)
        self._audit_replaced_kernel(before["kernel"])

    def get_json_body(self) -> Any:
        """The request body, with a kernel this handler already launched in place of its name."""
        patched = getattr(self, "_patched_body", None)
        return patched if patched is not None else super().get_json_body()

    def _audit_replaced_kernel(self, old: dict[str, Any]) -> None:
        """A PATCH that gave the session a new kernel shut the old one down: audit that."""
        if old["id"] in self.kernel_manager:
            return
        principal = principal_of(self)
        event = AuditEvent("shutdown", who=principal.name, via=principal.via,
                           client=self.audit_event.client, kernel_id=old["id"],
                           kernelspec=old.get("name") or "", owner=old.get("owner") or "")
        gateway_app(self).audit.write(event, OK, self.get_status())

    @web.authenticated
    async def delete(self, session_id: str) -> None:
        with acting_as(self.caller()):
            session = await self.session_manager.get_session(session_id=session_id)
            self.check_kernel(session["kernel"]["id"])
            await super().delete(session_id)


class _AnyMethod(tuple):  # type: ignore[type-arg]
    """``SUPPORTED_METHODS`` that contains every method: no 405 before the 404."""

    def __contains__(self, method: object) -> bool:
        return True


class NotFoundHandler(GatewayHandlerMixin, APIHandler):
    """Every unknown path, with any method: a JSON 404, before any authentication."""

    SUPPORTED_METHODS = _AnyMethod(APIHandler.SUPPORTED_METHODS)  # type: ignore[assignment]

    async def prepare(self, **kwargs: Any) -> None:
        raise NotFound(f"no such resource: {self.request.path}")
