"""REST and WebSocket handlers: jupyter_server's, with the gateway's rules.

Each class subclasses the jupyter_server handler for the same route and adds
only what a gateway needs: 401 and JSON errors, client env and kernel id
validation, the ``list_kernels`` gate and the kernelspec ``?user=`` filter.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jupyter_server
from jupyter_client.jsonutil import json_default
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.kernelspecs.handlers import KernelSpecResourceHandler
from jupyter_server.services.kernels import handlers as kernels
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from jupyter_server.services.kernelspecs import handlers as kernelspecs
from jupyter_server.services.sessions import handlers as sessions
from jupyter_server.utils import url_escape, url_path_join
from tornado import web

from .. import policy
from .._version import __version__
from ..callbacks import CALLBACK_PATH, CallbackRegistry
from ..errors import Forbidden, NotFound
from .errors import GatewayHandlerMixin
from .spec import SpecHandler


def gateway_app(handler: Any) -> Any:
    """The KernelyardApp serving this request (holds the gateway settings)."""
    return handler.settings["kernelyard_app"]


class VersionHandler(GatewayHandlerMixin, APIHandler):
    """``GET /api``: the API and gateway versions."""

    @web.authenticated
    async def get(self) -> None:
        self.finish({"version": jupyter_server.__version__, "gateway_version": __version__})


class MainKernelHandler(GatewayHandlerMixin, kernels.MainKernelHandler):
    """``GET/POST /api/kernels``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        if not gateway_app(self).list_kernels:
            raise Forbidden("listing kernels is disabled (KernelyardApp.list_kernels)")
        await super().get()  # type: ignore[misc]

    @web.authenticated
    @authorized
    async def post(self) -> None:
        app = gateway_app(self)
        launch = policy.parse_launch_request(self.get_json_body(), app.env_policy)
        km = self.kernel_manager
        kernel_id = await km.start_kernel(
            kernel_name=launch.kernel_name,
            path=launch.path,  # type: ignore[arg-type]
            kernel_id=launch.kernel_id,
            env=app.kernel_env(launch.env),
        )
        model = await ensure_async(km.kernel_model(kernel_id))
        self.set_header(
            "Location", url_path_join(self.base_url, "api", "kernels", url_escape(kernel_id))
        )
        self.set_status(201)
        self.finish(json.dumps(model, default=json_default))


class KernelHandler(GatewayHandlerMixin, kernels.KernelHandler):
    """``GET/DELETE /api/kernels/{id}``."""


class KernelActionHandler(GatewayHandlerMixin, kernels.KernelActionHandler):
    """``POST /api/kernels/{id}/interrupt|restart``."""


class ChannelsHandler(GatewayHandlerMixin, KernelWebsocketHandler):
    """``/api/kernels/{id}/channels``: legacy JSON and the v1 binary subprotocol."""

    async def pre_get(self) -> None:
        if self.kernel_id not in self.kernel_manager:
            raise web.HTTPError(404, f"no such kernel: {self.kernel_id}")
        await super().pre_get()

    async def open(self, kernel_id: str) -> None:  # type: ignore[override]
        # Small kernel messages must not wait for Nagle's algorithm.
        self.set_nodelay(True)
        await super().open(kernel_id)


class MainKernelSpecHandler(GatewayHandlerMixin, kernelspecs.MainKernelSpecHandler):
    """``GET /api/kernelspecs[?user=NAME]``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        app = gateway_app(self)
        user = self.get_argument("user", None)
        specs = await ensure_async(self.kernel_spec_manager.get_all_specs())
        models: dict[str, Any] = {}
        for name, info in specs.items():
            spec = info.get("spec") or {}
            if user is not None and not app.user_may_use_kernelspec(user, spec):
                continue
            models[name] = await asyncio.to_thread(
                kernelspecs.kernelspec_model, self, name, spec, info.get("resource_dir", "")
            )
        default = self.kernel_manager.default_kernel_name
        self.finish(json.dumps({"default": default, "kernelspecs": models}))


class KernelSpecHandler(GatewayHandlerMixin, kernelspecs.KernelSpecHandler):
    """``GET /api/kernelspecs/{name}``."""


class KernelSpecResourceFileHandler(GatewayHandlerMixin, KernelSpecResourceHandler):
    """``GET /kernelspecs/{name}/{resource}``: logos, kernel.js."""


class SessionRootHandler(GatewayHandlerMixin, sessions.SessionRootHandler):
    """``GET/POST /api/sessions``."""


class SessionHandler(GatewayHandlerMixin, sessions.SessionHandler):
    """``GET/PATCH/DELETE /api/sessions/{id}``."""


class NotFoundHandler(GatewayHandlerMixin, APIHandler):
    """Every unknown path: a JSON 404, before any authentication."""

    async def prepare(self, **kwargs: Any) -> None:
        raise NotFound(f"no such resource: {self.request.path}")


_KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
_SESSION_ID = r"(?P<session_id>\w+-\w+-\w+-\w+-\w+)"
_KERNEL_NAME = r"(?P<kernel_name>[\w\.\-%]+)"

default_handlers: list[tuple[str, type, dict[str, Any]] | tuple[str, type]] = [
    (r"/api", VersionHandler),
    (r"/api/swagger\.(?P<fmt>yaml|json)", SpecHandler),
    (r"/api/kernels", MainKernelHandler),
    (rf"/api/kernels/{_KERNEL_ID}", KernelHandler),
    (rf"/api/kernels/{_KERNEL_ID}/(?P<action>restart|interrupt)", KernelActionHandler),
    (rf"/api/kernels/{_KERNEL_ID}/channels", ChannelsHandler),
    (r"/api/kernelspecs", MainKernelSpecHandler),
    (rf"/api/kernelspecs/{_KERNEL_NAME}/?", KernelSpecHandler),
    (rf"/kernelspecs/{_KERNEL_NAME}/(?P<path>.*)", KernelSpecResourceFileHandler),
    (r"/api/sessions", SessionRootHandler),
    (rf"/api/sessions/{_SESSION_ID}", SessionHandler),
]


class CallbackHandler(GatewayHandlerMixin, APIHandler):
    """``POST /kernelyard/callback/{id}``: a launcher reports its ports.

    Authenticated by the one-time token of that kernel start, not by a user.
    """

    async def prepare(self, **kwargs: Any) -> None:
        """No user authentication here: the callback token is checked in ``post``."""

    @allow_unauthenticated
    async def post(self, kernel_id: str) -> None:
        header = self.request.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        try:
            payload = json.loads(self.request.body or b"null")
        except ValueError:
            payload = None
        CallbackRegistry.instance().fulfil(kernel_id, token, payload)
        self.finish({})


default_handlers.append((rf"/{CALLBACK_PATH}/{_KERNEL_ID}", CallbackHandler))
