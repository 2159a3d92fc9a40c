"""The kernelyard application: settings, wiring, start and stop.

It is a jupyter_server ``ServerApp`` that serves only the kernel gateway API
(kernels, kernelspecs, sessions, websocket channels), so TLS, ``base_url``,
CORS, culling, websocket pings and graceful shutdown are jupyter_server's.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Mapping
from typing import Any

from jupyter_server.serverapp import DEFAULT_JUPYTER_SERVER_PORT, ServerApp
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default

from . import logredact, policy, registry, startup_checks
from ._version import __version__
from .api.channels import GatewayChannelsConnection
from .api.limits import GatewayHTTPServer
from .api.routes import build_web_app
from .audit import AuditLog, open_audit_log
from .auth.provider import GatewayIdentityProvider
from .callbacks import CallbackRegistry
from .errors import ConfigError
from .kernel import GatewayKernelManager
from .kernelspecs import KernelyardKernelSpecManager
from .manager import GatewayMappingKernelManager, GatewaySessionManager, LaunchRules
from .provisioners.backend import BackendRegistry
from .provisioners.base import RemoteProvisionerBase
from .store import StoreFactory

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` (a setting value) binds to a loopback interface only."""
    if ip in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class KernelyardApp(ServerApp):
    """A multi-tenant Jupyter kernel gateway."""

    name = "kernelyard"
    version = __version__
    description = (
        "kernelyard: a Jupyter kernel gateway. Clients (JupyterLab, Jupyter Server with "
        "--gateway-url, scripts) start kernels through its REST API and talk to them "
        "over its websocket."
    )
    examples = """
        kernelyard serve --ip 127.0.0.1 --port 8888
        KERNELYARD_AUTH_TOKEN=secret kernelyard serve --ip 0.0.0.0
        kernelyard serve --KernelyardApp.authenticators=api-token --ip 0.0.0.0
        kernelyard generate-config
    """
    subcommands = Dict()  # traits, as in ServerApp: each app has its own tables
    default_services = ()  # type: ignore[assignment]  # every route is kernelyard's own

    aliases = Dict({
        "ip": "KernelyardApp.ip",
        "port": "KernelyardApp.port",
        "port-retries": "KernelyardApp.port_retries",
        "base-url": "KernelyardApp.base_url",
        "auth-token": "KernelyardApp.auth_token",
        "config": "KernelyardApp.config_file",
        "certfile": "KernelyardApp.certfile",
        "keyfile": "KernelyardApp.keyfile",
        "client-ca": "KernelyardApp.client_ca",
        "max-kernels": "GatewayMappingKernelManager.max_kernels",
        "log-level": "KernelyardApp.log_level",
    })
    flags = Dict({
        "debug": ({"Application": {"log_level": 10}}, "Log at debug level."),
        "allow-unauthenticated": (
            {"KernelyardApp": {"allow_unauthenticated": True}},
            "Serve without authentication on a non-loopback address (unsafe).",
        ),
    })

    auth_token = Unicode(
        config=True,
        help="The shared token clients send as 'Authorization: token <T>' or '?token=<T>' "
        "(the 'token' authenticator). Prefer the env var KERNELYARD_AUTH_TOKEN, which is not "
        "visible in the process list. Empty disables it; with no authenticator enabled, "
        "requests are anonymous, which is allowed only on a loopback address.",
    )
    authenticators = List(
        Unicode(),
        default_value=["token"],
        config=True,
        help="The authenticators that identify a caller, tried in order, by name (entry-point "
        "group 'kernelyard.authenticators'; built in: 'api-token' for per-user tokens from "
        "'kernelyard token issue', 'token' for the shared auth_token). The first that "
        "recognises the request's credentials decides: a valid one identifies the caller, "
        "an invalid one gets a 401.",
    )

    @default("auth_token")
    def _auth_token_default(self) -> str:
        return os.environ.get("KERNELYARD_AUTH_TOKEN", "")

    allow_unauthenticated = Bool(
        False,
        config=True,
        help="Serve without any authentication on a non-loopback address. Anyone who can "
        "reach the port can then run code. Without this, kernelyard refuses to start there "
        "unless an authenticator is enabled (see authenticators and auth_token).",
    )
    list_kernels = Bool(
        True,
        config=True,
        help="Whether GET /api/kernels lists the running kernels. When False it returns 403 "
        "(Enterprise Gateway's EG_LIST_KERNELS).",
    )
    client_envs = List(
        Unicode(),
        config=True,
        help="Names of env variables a client may set for its kernel in POST /api/kernels, "
        "besides KERNEL_* names, which always pass. '*' allows every name.",
    )
    inherited_envs = List(
        Unicode(),
        config=True,
        help="Names of the gateway's own env variables that are passed to every kernel "
        "(for remote kernels, which do not inherit the gateway's environment).",
    )
    authorized_users = List(
        Unicode(),
        config=True,
        help="Users who may see and use kernelspecs (empty: everyone). A kernelspec's "
        "metadata.kernelyard.authorized_users overrides this for that kernelspec.",
    )
    shutdown_kernels_on_stop = Bool(
        False,
        config=True,
        help="Shut remote kernels down when the gateway stops. By default they keep running "
        "and the next gateway process on the same store re-adopts them. Local kernels "
        "always stop with the gateway.",
    )
    unauthorized_users = List(
        Unicode(),
        config=True,
        help="Users who may never see or use any kernelspec (deny beats allow, admins "
        "included).",
    )
    authorized_groups = List(
        Unicode(),
        config=True,
        help="Groups whose members may see and use kernelspecs. Together with "
        "authorized_users this is the gateway-wide allow list (both empty: everyone); a "
        "kernelspec's own lists or kernelspec_access replace it for that kernelspec.",
    )
    unauthorized_groups = List(
        Unicode(),
        config=True,
        help="Groups whose members may never see or use any kernelspec.",
    )
    kernelspec_access = Dict(
        key_trait=Unicode(),
        value_trait=Dict(),
        config=True,
        help="Access lists per kernelspec, by name: {'spark': {'authorized_groups': "
        "['analysts'], 'unauthorized_users': ['guest']}}. Keys: authorized_users, "
        "unauthorized_users, authorized_groups, unauthorized_groups. A non-empty allow list "
        "here replaces the kernelspec's own and the gateway-wide one; deny lists add up.",
    )
    allow_root_kernels = Bool(
        False,
        config=True,
        help="Let the user 'root' use kernelspecs (refused by default, admins included). "
        "A kernel that keeps the gateway's own OS account (the shared token's or the "
        "anonymous user, without KERNEL_USERNAME) is not refused: nobody is impersonated.",
    )
    admins_bypass_allow_lists = Bool(
        True,
        config=True,
        help="Whether admins may use every kernelspec no deny list refuses them; False: "
        "admins follow the allow lists like everyone else.",
    )
    group_resource_limits = Dict(
        key_trait=Unicode(),
        value_trait=Dict(),
        config=True,
        help="The group level of the resource limits: {'*': "
        "{'KERNEL_DRIVER_MEMORY': '2g', 'KERNEL_NUM_EXECUTORS': 2}, 'analysts': "
        "{'KERNEL_MEMORY': '8g', 'KERNEL_GPUS': 1}}. '*' is everyone; the most generous "
        "limit among a user's groups applies; keys are the resource variables, values follow "
        "the one grammar of kernelyard.resources (512m, 1.5g, 2Gi; a list for KERNEL_QUEUE "
        "and KERNEL_SPARK_CONF). A request above its limit gets 403 naming the limit; the "
        "kernelspec level is each provisioner's resource_limits (docs/resources.md).",
    )
    max_kernels_per_user = Integer(
        None,
        allow_none=True,
        config=True,
        help="The most kernels one user may have at once, counting starts in flight "
        "(None: no limit; 0: none). user_max_kernels and group_max_kernels_per_user "
        "override it. A start beyond it gets 403 naming the limit.",
    )
    user_max_kernels = Dict(
        key_trait=Unicode(),
        value_trait=Integer(allow_none=True),
        config=True,
        help="Kernel limits for named users ({'alice': 5}; None exempts the user).",
    )
    group_max_kernels_per_user = Dict(
        key_trait=Unicode(),
        value_trait=Integer(allow_none=True),
        config=True,
        help="Per-user kernel limits for the members of a group ({'students': 2}); the "
        "most generous of a user's groups applies (None: no limit).",
    )
    kernelspec_max_kernels = Dict(
        key_trait=Unicode(),
        value_trait=Integer(allow_none=True),
        config=True,
        help="The most kernels of a kernelspec at once, all users together ({'spark': 4}).",
    )
    audit_log = Unicode(
        "",
        config=True,
        help="Where the audit log goes: a file path (JSON lines, mode 0600, rotated by "
        "size), '-' for the application log, or '' for none. One line per launch, "
        "connect, interrupt, restart, shutdown and cull, and per refused request.",
    )
    audit_log_max_bytes = Integer(
        10 * 1024 * 1024,
        min=0,
        config=True,
        help="Rotate the audit log file when it would grow past this many bytes (0: never).",
    )
    audit_log_backups = Integer(
        5,
        min=0,
        config=True,
        help="How many rotated audit log files to keep (audit.log.1, audit.log.2, ...).",
    )

    idle_connection_timeout = Float(
        60.0,
        min=0.1,
        config=True,
        help="Seconds a connection may stay open without sending a complete request "
        "header: idle keep-alive connections, and clients that send their headers slowly, "
        "are closed after it (websockets are not affected; see websocket_ping_interval).",
    )
    body_timeout = Float(
        60.0,
        min=0.1,
        config=True,
        help="Seconds a client has to send a request body once its headers are in; a "
        "stalled upload is cut after it.",
    )
    max_body_size = Integer(
        1024 * 1024,
        min=1024,
        config=True,
        help="The largest request body accepted, in bytes (the kernels and sessions API "
        "takes small JSON bodies). A larger declared Content-Length gets a JSON 413 once "
        "the caller is authenticated (401 before), without the body being read; a larger "
        "chunked body is cut.",
    )
    max_buffer_size = Integer(
        16 * 1024 * 1024,
        min=64 * 1024,
        config=True,
        help="The most bytes read ahead on one connection, in bytes: bounds a websocket "
        "message from a client (tornado's websocket_max_message_size, 10 MiB by default, "
        "must fit) and the memory one connection can hold.",
    )
    allow_shared_kernel_account = Bool(
        False,
        config=True,
        help="Start although an authenticator that signs users in one by one (anything but "
        "the shared 'token') is enabled and a kernelspec runs the kernels of different "
        "users under one OS or cluster account (LocalKernelProvisioner.run_as_user off, "
        "SSHProvisioner.user_mode 'service', YarnProvisioner.impersonate off). Their "
        "kernels can then read each other's connection files and run code in each other's "
        "kernels. Off: the gateway refuses to start; on: a warning at every start.",
    )

    audit: AuditLog = AuditLog()

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> type:
        return GatewayMappingKernelManager

    @default("kernel_spec_manager_class")
    def _default_kernel_spec_manager_class(self) -> type:
        return KernelyardKernelSpecManager

    @default("session_manager_class")
    def _default_session_manager_class(self) -> type:
        return GatewaySessionManager

    @default("identity_provider_class")
    def _default_identity_provider_class(self) -> type:
        return GatewayIdentityProvider

    @default("kernel_websocket_connection_class")
    def _default_kernel_websocket_connection_class(self) -> type:
        return GatewayChannelsConnection

    @default("open_browser")
    def _default_open_browser(self) -> bool:
        return False

    @default("allow_root")
    def _default_allow_root(self) -> bool:
        # Running kernels as other users needs root; the gateway itself runs no user code.
        return True

    @default("ip")
    def _default_ip(self) -> str:
        return "127.0.0.1"

    @property
    def env_policy(self) -> policy.EnvPolicy:
        return policy.EnvPolicy(
            client_envs=tuple(self.client_envs),
            inherited_envs=tuple(self.inherited_envs),
            secret_names=frozenset(policy.DEFAULT_SECRET_ENVS),
        )

    def access_policy(self) -> policy.AccessPolicy:
        """Who may use which kernelspec, from the settings; ConfigError names a bad one."""
        rules = policy.AccessRules(
            authorized_users=frozenset(self.authorized_users),
            unauthorized_users=frozenset(self.unauthorized_users),
            authorized_groups=frozenset(self.authorized_groups),
            unauthorized_groups=frozenset(self.unauthorized_groups),
        )
        per_spec = {
            name: policy.AccessRules.from_config(
                entry, f"KernelyardApp.kernelspec_access[{name!r}]")
            for name, entry in self.kernelspec_access.items()
        }
        return policy.AccessPolicy(rules=rules, kernelspec_rules=per_spec,
                                   allow_root=self.allow_root_kernels,
                                   admins_bypass_allow_lists=self.admins_bypass_allow_lists)

    def launch_rules(self) -> LaunchRules:
        """Everything a launch is judged by except quotas; ConfigError names a bad setting."""
        try:
            policy.validate_resource_limits(self.group_resource_limits)
        except ConfigError as e:
            raise ConfigError(f"KernelyardApp.group_resource_limits: {e.message}") from None
        return LaunchRules(access=self.access_policy(),
                           resource_limits=dict(self.group_resource_limits),
                           env=self.env_policy)

    def quota_policy(self) -> policy.QuotaPolicy:
        """The kernel quotas; ConfigError names a bad one."""
        manager: Any = self.kernel_manager
        try:
            return policy.QuotaPolicy(
                max_kernels=manager.max_kernels or None,
                max_kernels_per_user=self.max_kernels_per_user,
                user_max_kernels=dict(self.user_max_kernels),
                group_max_kernels_per_user=dict(self.group_max_kernels_per_user),
                kernelspec_max_kernels=dict(self.kernelspec_max_kernels),
            )
        except ConfigError as e:
            raise ConfigError(f"KernelyardApp: {e.message}") from None

    def user_may_use_kernelspec(self, user: str, spec: Mapping[str, Any]) -> bool:
        return policy.user_may_use_kernelspec(
            user,
            spec.get("metadata") or {},
            authorized_users=self.authorized_users,
            unauthorized_users=self.unauthorized_users,
        )

    def _classes_default(self) -> list[type]:  # type: ignore[override]
        """The core classes, then every provisioner and authenticator of the entry points
        (kernelyard.registry), so generate-config and --help-all list every setting."""
        core = [KernelyardApp, GatewayIdentityProvider, GatewayMappingKernelManager,
                GatewayKernelManager, GatewayChannelsConnection, RemoteProvisionerBase,
                StoreFactory, CallbackRegistry]
        return [*core, *(c for c in registry.configurable_classes() if c not in core)]

    @property  # type: ignore[override]
    def classes(self) -> list[type]:
        return self._classes_default()

    @classes.setter
    def classes(self, value: Any) -> None:
        """Fixed: kernelyard documents its own classes only."""

    def find_server_extensions(self) -> None:
        """A gateway loads no Jupyter server extensions (no JupyterLab UI, no contents)."""

    def init_configurables(self) -> None:
        self._configure_provisioner_default()
        super().init_configurables()
        StoreFactory.instance(parent=self)
        CallbackRegistry.instance(parent=self)
        self.init_authenticators()
        self.init_policy()
        self.init_startup_checks()

    def init_policy(self) -> None:
        """Build the launch rules, quotas and audit log once; a bad setting stops the gateway."""
        try:
            rules, quotas = self.launch_rules(), self.quota_policy()
        except ConfigError as e:
            self.log.critical("%s", e.message)
            self.exit(1)
        try:
            self.audit = open_audit_log(self.audit_log, self.audit_log_max_bytes,
                                        self.audit_log_backups, self.log)
        except OSError as e:
            self.log.critical("KernelyardApp.audit_log %r cannot be opened: %s",
                              self.audit_log, e.strerror or e)
            self.exit(1)
        manager: Any = self.kernel_manager
        if isinstance(manager, GatewayMappingKernelManager):
            manager.configure_policy(rules, quotas, self.audit)

    def init_startup_checks(self) -> None:
        """Whom kernels run as against how callers are identified (kernelyard.startup_checks).

        An error names the kernelspec and the settings that fix it and stops the gateway.
        """
        if not startup_checks.make_undumpable():
            self.log.warning("Could not make the gateway process non-dumpable: processes of "
                             "its own account may read its environment")
        provider = self.identity_provider
        if not isinstance(provider, GatewayIdentityProvider):
            return
        ksm: Any = self.kernel_spec_manager
        refused = ksm.refused_kernelspecs() if isinstance(ksm, KernelyardKernelSpecManager) \
            else {}
        per_user = startup_checks.per_user_authenticators(provider.authenticators)
        result = startup_checks.plan_checks(
            startup_checks.kernelspec_accounts(self), per_user=per_user,
            auth_enabled=provider.auth_enabled, allow_shared=self.allow_shared_kernel_account,
            refused_kernelspecs=refused)
        if per_user and not self.allow_shared_kernel_account and \
                isinstance(ksm, KernelyardKernelSpecManager):  # kernelspecs added later
            ksm.refuse = startup_checks.late_shared_account_refusal(self, per_user)
        for warning in result.warnings:
            self.log.warning("%s", warning)
        for error in result.errors:
            self.log.critical("%s", error)
        if result.errors:
            self.exit(1)

    def init_authenticators(self) -> None:
        """Build the authenticator chain; a bad setting stops the gateway with a message."""
        provider = self.identity_provider
        if not isinstance(provider, GatewayIdentityProvider):
            return
        try:
            provider.load_authenticators(self.authenticators)
        except ConfigError as e:
            self.log.critical("%s", e.message)
            self.exit(1)

    def init_httpserver(self) -> None:
        """Re-adopt the kernels of a previous gateway process before serving anyone, then
        create the HTTP server (``make_http_server``) and bind it."""
        try:
            manager: Any = self.kernel_manager
            self.io_loop.run_sync(manager.adopt_stored_kernels)
        except ConfigError as e:
            self.log.critical("%s", e.message)
            self.exit(1)
        self._http_server = self.make_http_server()
        if not self.sock:
            self._find_http_port()
        self.io_loop.add_callback(self._bind_http_server)

    def make_http_server(self) -> GatewayHTTPServer:
        """The HTTP server, with the connection timeouts and body limits of the settings."""
        return GatewayHTTPServer(
            self.web_app,
            ssl_options=self.ssl_options,
            xheaders=self.trust_xheaders,
            idle_connection_timeout=self.idle_connection_timeout,
            body_timeout=self.body_timeout,
            max_body_size=self.max_body_size,
            max_buffer_size=self.max_buffer_size,
        )

    def start_app(self) -> None:
        CallbackRegistry.instance().default_url = self.connection_url
        super().start_app()

    async def cleanup_kernels(self) -> None:
        """Stop local kernels; leave remote ones running unless shutdown_kernels_on_stop."""
        if not self.shutdown_kernels_on_stop and getattr(self, "kernel_manager", None):
            manager: Any = self.kernel_manager
            kept = await manager.detach_remote_kernels()
            if kept:
                self.log.info("Leaving %d remote kernel(s) running for the next gateway "
                              "process to re-adopt", len(kept))
        await super().cleanup_kernels()
        registry = getattr(self.kernel_manager, "backends", None)
        if isinstance(registry, BackendRegistry):  # every ssh connection, every HTTP client
            await registry.teardown()
        await StoreFactory.instance().close()
        self.audit.close()

    def _configure_provisioner_default(self) -> None:
        cfg = self.config
        if "default_provisioner_name" not in cfg.get("KernelProvisionerFactory", {}):
            cfg.KernelProvisionerFactory.default_provisioner_name = "kernelyard-local"
            self.update_config(cfg)

    def init_logging(self) -> None:
        super().init_logging()
        self.init_log_redaction()

    def init_log_redaction(self) -> None:
        """No secret in any log line, and no flood of tornado's lines (kernelyard/logredact.py)."""
        logredact.install([self.auth_token])

    def init_webapp(self) -> None:
        """jupyter_server's web app setup, with kernelyard's application (api/routes.py).

        The application serves kernelyard's route table only; TLS, CORS and the
        websocket settings are set as ``ServerApp.init_webapp`` sets them.
        """
        self.init_log_redaction()  # again: handlers added since init_logging
        self.check_security()
        self._init_tornado_settings()
        self.web_app = build_web_app(self)
        self._init_ssl_options()
        self.identity_provider.validate_security(self, ssl_options=self.ssl_options)

    def _init_tornado_settings(self) -> None:
        settings = self.tornado_settings
        settings.update(kernelyard_app=self, disable_check_xsrf=True,
                        allow_origin=self.allow_origin, allow_credentials=self.allow_credentials,
                        websocket_compression_options=self.websocket_compression_options,
                        autoreload=self.autoreload)
        if self.allow_origin_pat:
            settings["allow_origin_pat"] = re.compile(self.allow_origin_pat)
        if self.sock and self.port != DEFAULT_JUPYTER_SERVER_PORT:
            self.log.critical("Options --port and --sock are mutually exclusive.")
            self.exit(1)
        if self.sock:
            self.port = 0

    def _init_ssl_options(self) -> None:
        """``ssl_options`` from certfile, keyfile and client_ca (None: no TLS)."""
        options = dict(self.ssl_options or {})
        for key, value in (("certfile", self.certfile), ("keyfile", self.keyfile),
                           ("ca_certs", self.client_ca)):
            if value:
                options[key] = value
        if not options:
            self.ssl_options = None  # type: ignore[assignment]
            return
        options.setdefault("ssl_version", ssl.PROTOCOL_TLS_SERVER)
        if options.get("ca_certs"):
            options.setdefault("cert_reqs", ssl.CERT_REQUIRED)
        self.ssl_options = options

    def check_security(self) -> None:
        """Refuse to serve unauthenticated on a reachable address; warn on loopback."""
        if self.identity_provider.auth_enabled:
            return
        if is_loopback(self.ip):
            self.log.warning(
                "No authenticator is enabled (KernelyardApp.authenticators; the shared token "
                "KernelyardApp.auth_token / KERNELYARD_AUTH_TOKEN is empty): serving WITHOUT "
                "authentication on loopback address %s.",
                self.ip,
            )
            return
        if self.allow_unauthenticated:
            self.log.warning(
                "Serving WITHOUT authentication on %s because "
                "KernelyardApp.allow_unauthenticated is set: anyone who can reach this port "
                "can run code.",
                self.ip or "all addresses",
            )
            return
        self.log.critical(
            "Refusing to serve without authentication on non-loopback address %r. Set "
            "KernelyardApp.auth_token (or KERNELYARD_AUTH_TOKEN), add 'api-token' or another "
            "authenticator to KernelyardApp.authenticators, listen on 127.0.0.1, or set "
            "KernelyardApp.allow_unauthenticated=True.",
            self.ip or "0.0.0.0",  # noqa: S104
        )
        self.exit(1)

    def running_server_info(self, kernel_count: bool = True) -> str:
        return f"kernelyard {__version__} is listening on {self.connection_url}"

    def write_server_info_file(self) -> None:
        """No server info file: it would hold the token."""

    def write_browser_open_files(self) -> None:
        """No browser-open file: a gateway serves no pages."""

    def remove_server_info_file(self) -> None:
        """Nothing was written."""

    def remove_browser_open_files(self) -> None:
        """Nothing was written."""


def launch(argv: list[str] | None = None) -> None:
    """Start the gateway with command-line arguments (without the program name)."""
    KernelyardApp.launch_instance(argv=sys.argv[1:] if argv is None else argv)
