"""The gateway's tornado application: exactly kernelyard's route table, nothing else.

jupyter_server's ``ServerWebApplication`` mounts, whatever ``default_services``
says, its base handlers (``/``, ``/api/status``, ``/api/me``, ``/metrics``, a
trailing-slash redirect), the contents manager's ``/files``, the identity
provider's ``/login`` and ``/logout``, and tornado's static handlers
(``/static``, ``/favicon.ico``, ``/robots.txt``). ``GatewayWebApplication``
keeps its settings (the managers every handler reads) but builds the route
table from ``ROUTES`` only (the handlers of ``kernelyard.api.handlers``,
``.spec`` and ``.callback``), prefixed with
``base_url``, and ends it with ``NotFoundHandler``: any other path, with any
method, is a JSON 404 before authentication. The routes are documented in
``kernelyard/api/openapi.yaml`` (tests/unit/test_routes.py compares the two).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.serverapp import ServerWebApplication
from jupyter_server.utils import url_path_join

from ..callbacks import CALLBACK_PATH
from .callback import CallbackHandler
from .handlers import (
    ChannelsHandler,
    KernelActionHandler,
    KernelHandler,
    KernelSpecHandler,
    KernelSpecResourceFileHandler,
    MainKernelHandler,
    MainKernelSpecHandler,
    NotFoundHandler,
    SessionHandler,
    SessionRootHandler,
    VersionHandler,
)
from .spec import SpecHandler

# Settings of jupyter_server's that would mount or serve something kernelyard does not.
_UNSERVED_SETTINGS = ("static_path", "static_custom_path", "static_handler_class",
                      "static_handler_args", "static_url_prefix", "template_path",
                      "login_url")


_KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
_SESSION_ID = r"(?P<session_id>\w+-\w+-\w+-\w+-\w+)"
_KERNEL_NAME = r"(?P<kernel_name>[\w\.\-%]+)"

# The route table: (path pattern, handler), served under ``base_url``.
ROUTES: tuple[tuple[str, type], ...] = (
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
    (rf"/{CALLBACK_PATH}/{_KERNEL_ID}", CallbackHandler),
)


def gateway_routes(base_url: str) -> list[tuple[Any, ...]]:
    """The route table served under ``base_url``, the catch-all 404 last."""
    routes: list[tuple[Any, ...]] = [
        (url_path_join(base_url, pattern), *rest) for pattern, *rest in ROUTES
    ]
    routes.append((r".*", NotFoundHandler))
    return routes


class GatewayWebApplication(ServerWebApplication):
    """jupyter_server's application with kernelyard's routes instead of jupyter_server's."""

    def init_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """jupyter_server's settings minus static files and the XSRF cookie."""
        settings: dict[str, Any] = super().init_settings(*args, **kwargs)
        for name in _UNSERVED_SETTINGS:
            settings.pop(name, None)
        settings.update(xsrf_cookies=False, disable_check_xsrf=True,
                        default_handler_class=NotFoundHandler)
        return settings

    def init_handlers(self, default_services: Any, settings: dict[str, Any]) -> list[Any]:
        """kernelyard's route table; ``default_services`` and ``extra_services`` add nothing."""
        return gateway_routes(settings["base_url"])


def build_web_app(app: Any) -> GatewayWebApplication:
    """The application for a ``KernelyardApp`` (what ``ServerApp.init_webapp`` builds)."""
    return GatewayWebApplication(
        app, (), app.kernel_manager, app.contents_manager, app.session_manager,
        app.kernel_spec_manager, app.config_manager, app.event_logger, [], app.log,
        app.base_url, app.default_url, app.tornado_settings, app.jinja_environment_options,
        authorizer=app.authorizer, identity_provider=app.identity_provider,
        kernel_websocket_connection_class=app.kernel_websocket_connection_class,
        websocket_ping_interval=app.websocket_ping_interval,
        websocket_ping_timeout=app.websocket_ping_timeout,
    )
