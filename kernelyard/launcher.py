"""kernelyard's kernel launcher: one stdlib-only file that runs beside the kernel.

Usage (Python >= 3.8, the file alone or ``python -m kernelyard.launcher``)::

    python3 launcher.py [options] -- <kernel argv, with {connection_file}>

The contract is docs/launcher-protocol.md: read the secrets (stdin JSON line or
env), bind the ports, write the connection file (0600), start the kernel in its
own process group, POST the ports to the gateway's callback, serve signed
control requests, and exit when the kernel exits (writing ``exit_code``).

The gateway imports these wire helpers (keep their names and behaviour stable):

``sign(key, body) -> str``
    hex HMAC-SHA256 of a control request body.
``control_request_body(action, **fields) -> bytes``
    a compact JSON control request with a fresh ``ts`` and ``nonce``.
``CALLBACK_FIELDS``, ``KERNEL_PORT_NAMES``, ``CALLBACK_PORT_NAMES``, ``LAUNCHER_PORT``
    the exact callback fields (name -> type) and the port names among them.
``CONTROL_PATH``, ``SIGNATURE_HEADER``
    the control endpoint's path and the header that carries a request's signature.
``parse_port_range(text) -> (lo, hi) | None``
    parses ``LO..HI``.
``verify_control(key, body, signature, now, seen_nonces) -> dict``
    checks a control request; raises ``ControlRefused`` (a ValueError).
``main(argv=None) -> int``
    the command line.
``spark_startup_path(launcher_path)``, ``spark_startup_source(launcher_path)``
    the Spark startup file shipped beside the launcher (``launcher_spark.py``).

This file must not import anything from kernelyard: it is shipped as it is, with
only ``launcher_spark.py`` beside it (the code ``--spark-session`` runs in the
kernel, kept in its own file so that ruff and mypy check it). For the same reason
it is the one module allowed over 600 lines: a launcher in several modules would
be several files to ship, keep in step and find on every node.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, NamedTuple, cast

# The protocol's names, defined here only (the gateway imports them from this file).
# The kernel's five ports, as jupyter's connection file names them.
KERNEL_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
LAUNCHER_PORT = "launcher_port"  # the launcher's control endpoint
# Every port the callback reports.
CALLBACK_PORT_NAMES = (*KERNEL_PORT_NAMES, LAUNCHER_PORT)
# The exact fields of the callback, name -> type.
CALLBACK_FIELDS: dict[str, type] = {
    "kernel_id": str,
    "ip": str,
    "hostname": str,
    **{name: int for name in CALLBACK_PORT_NAMES},
    "pid": int,
    "pgid": int,
}
SECRET_ENVS = {
    "key": "KERNELYARD_KERNEL_KEY",
    "token": "KERNELYARD_CALLBACK_TOKEN",
    "callback_url": "KERNELYARD_CALLBACK_URL",
}
# The gateway's and the launcher's own names: none reaches a kernel from the node's env.
OWN_ENV_PREFIX = "KERNELYARD_"
CURVE_FIELDS = ("curve_publickey", "curve_secretkey")
SIGNATURE_HEADER = "X-Kernelyard-Signature"  # of a control request: sign(key, body)
CONTROL_PATH = "/control"  # the path of the launcher's control endpoint
MAX_CLOCK_SKEW = 60.0  # seconds a control request's ts may be off our clock
NONCE_MEMORY = 120.0  # seconds a nonce is remembered
DEFAULT_GRACE = 5.0
MAX_GRACE = 3600.0
# With --port-clash-watch S, a kernel dying within S seconds of a port clash is restarted
# on new ports before the callback (the gateway also retries a clash it sees later).
PORT_CLASH_RETRIES = 3
PORT_CLASH_TEXT = b"Address already in use"
CALLBACK_RETRY_FOR = 30.0
CALLBACK_ATTEMPT_TIMEOUT = 10.0
MAX_BODY = 64 * 1024
POLL = 0.1
KERNEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NONCE_RE = re.compile(r"^[0-9a-fA-F]{16,128}$")
# Runs in the kernel's process before it execs the kernel: the kernel gets SIGKILL when
# the launcher dies (a resource manager killing the launcher's container or process
# group does not reach the kernel's own session otherwise).
DIE_WITH_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)
SPARK_MODES = ("lazy", "eager", "none")

log = logging.getLogger("kernelyard.launcher")


_THIS_FILE = os.path.abspath(__file__)


def spark_startup_path(launcher_path: str = _THIS_FILE) -> str:
    """The Spark startup file shipped beside the launcher at ``launcher_path``.

    Its name is the launcher's with ``_spark`` before ``.py``: ``launcher_spark.py``
    beside ``launcher.py`` (in the package, and a YARN job's primary resource), and
    ``launcher-<digest>_spark.py`` beside a launcher shipped as ``launcher-<digest>.py``.
    It is the source of ``kernelyard/launcher_spark.py``, run by IPython at kernel start
    ($PYTHONSTARTUP) with ``--spark-session``; every backend that ships the launcher
    ships it too.
    """
    stem, _ = os.path.splitext(launcher_path)
    return stem + "_spark.py"


def check_spark_startup(mode: str | None, launcher_path: str = _THIS_FILE) -> None:
    """``UsageError`` when ``--spark-session`` needs the startup file and it is missing."""
    path = spark_startup_path(launcher_path)
    if mode in ("lazy", "eager") and not os.path.isfile(path):
        raise UsageError(f"--spark-session {mode}: the Spark startup file {path} is not "
                         "beside the launcher (it is shipped with it: launcher_spark.py)")


def spark_startup_source(launcher_path: str = _THIS_FILE) -> bytes:
    """The Spark startup file beside the launcher at ``launcher_path``, as bytes."""
    with open(spark_startup_path(launcher_path), "rb") as f:
        return f.read()


# ---- wire helpers (imported by the gateway) ------------------------------------------


class ControlRefused(ValueError):
    """A control request that must be refused with 403 (and have no effect)."""


def sign(key: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` with ``key``.

    ``key`` is the kernel key as bytes: the UTF-8 encoding of the ``key`` string of
    the connection file (what the Jupyter protocol itself uses).
    """
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def control_request_body(action: str, **fields: Any) -> bytes:
    """A control request body: ``action``, a fresh ``ts`` and ``nonce``, and ``fields``.

    ``fields`` are added as they are and may override ``ts`` or ``nonce`` (tests do).
    The result is compact JSON, ready to sign and send as it is.
    """
    payload: dict[str, Any] = {"action": action, "ts": time.time(),
                               "nonce": secrets.token_hex(16)}
    payload.update(fields)
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def parse_port_range(text: str | None) -> tuple[int, int] | None:
    """``"LO..HI"`` -> ``(LO, HI)``; None for an empty value (any free port).

    Raises ValueError unless 1 <= LO <= HI <= 65535 and the range holds at least
    the 6 ports a launcher binds.
    """
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d{1,5})\s*\.\.\s*(\d{1,5})\s*", text)
    if not match:
        raise ValueError(f"port range {text!r} is not LO..HI")
    lo, hi = int(match.group(1)), int(match.group(2))
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"port range {text!r}: need 1 <= LO <= HI <= 65535")
    if hi - lo + 1 < 6:
        raise ValueError(f"port range {text!r} holds fewer than 6 ports")
    return lo, hi


def verify_control(
    key: bytes, body: bytes, signature: str, now: float, seen_nonces: dict[str, float]
) -> dict[str, Any]:
    """The request in ``body`` if it is signed with ``key``, fresh and not replayed.

    ``seen_nonces`` maps nonces to the time they were accepted; it is updated here
    (expired nonces dropped, the accepted one added), so callers sharing it between
    threads must hold a lock. Raises ControlRefused for a bad signature, a ``ts``
    more than 60 s off ``now`` (or missing), a missing or malformed nonce, or a
    nonce accepted in the last 120 s.
    """
    given = (signature or "").strip().lower().encode("ascii", "replace")
    if not hmac.compare_digest(sign(key, body).encode(), given):
        raise ControlRefused("bad signature")
    try:
        request = json.loads(body)
    except ValueError:
        raise ControlRefused("the body is not JSON") from None
    if not isinstance(request, dict):
        raise ControlRefused("the body is not a JSON object")
    ts = _timestamp(request.get("ts"))
    if ts is None or abs(now - ts) > MAX_CLOCK_SKEW:
        raise ControlRefused("stale or missing ts")
    nonce = request.get("nonce")
    if not isinstance(nonce, str) or not NONCE_RE.fullmatch(nonce):
        raise ControlRefused("missing or malformed nonce")
    for old in [n for n, seen in seen_nonces.items() if now - seen > NONCE_MEMORY]:
        del seen_nonces[old]
    if nonce in seen_nonces:
        raise ControlRefused("replayed nonce")
    seen_nonces[nonce] = now
    return request


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _timestamp(value: Any) -> float | None:
    """``value`` as finite unix seconds, or None."""
    if not _is_number(value):
        return None
    try:
        ts = float(value)
    except OverflowError:
        return None
    return ts if math.isfinite(ts) else None


# ---- secrets and options ---------------------------------------------------------------


def node_env(env: Mapping[str, str]) -> dict[str, str]:
    """The launcher's env as a kernel inherits it: without any ``KERNELYARD_*`` name."""
    return {k: v for k, v in env.items() if not k.startswith(OWN_ENV_PREFIX)}


class Secrets(NamedTuple):
    key: str
    token: str
    callback_url: str
    env: Mapping[str, str] = MappingProxyType({})  # read-only: a default is shared
    curve: Mapping[str, str] = MappingProxyType({})  # the kernel's CurveZMQ keypair, if asked


class UsageError(Exception):
    """Bad options or secrets: the launcher exits 2 with this message."""


def read_secrets(from_stdin: bool, from_file: str = "") -> Secrets:
    """The secrets from one stdin JSON line, a JSON file, or the env; env vars are removed.

    A secrets file (shipped by a resource manager into the kernel's private work dir)
    is deleted once read.
    """
    found: dict[str, Any] = {name: os.environ.pop(var, "") for name, var in SECRET_ENVS.items()}
    extra_env: dict[str, str] = {}
    curve: dict[str, str] = {}
    where = "in $" + "/$".join(SECRET_ENVS.values())
    if from_stdin or from_file:
        where = "on stdin" if from_stdin else f"in {from_file}"
        data = _secrets_json(_read_secrets_line(from_file), where)
        found = {name: data.get(name) for name in SECRET_ENVS}
        extra_env = _kernel_env(data.get("env"))
        curve = _curve_keys(data)
    for name, value in found.items():
        if not (isinstance(value, str) and value):
            raise UsageError(f"secret {name!r} is missing {where}")
    scheme = urllib.parse.urlsplit(found["callback_url"]).scheme
    if scheme not in ("http", "https"):
        raise UsageError("the callback URL must be http or https")
    return Secrets(env=extra_env, curve=curve, **found)


def _curve_keys(data: dict[str, Any]) -> dict[str, str]:
    """``curve_publickey`` and ``curve_secretkey`` (Z85, 40 characters each), or none."""
    keys = {name: data.get(name) for name in CURVE_FIELDS if data.get(name) is not None}
    if not keys:
        return {}
    if len(keys) != 2 or not all(isinstance(v, str) and len(v) == 40 for v in keys.values()):
        raise UsageError("the CurveZMQ keys must be two Z85 strings of 40 characters")
    return cast("dict[str, str]", keys)


def _read_secrets_line(path: str) -> bytes:
    if not path:
        return sys.stdin.buffer.readline(MAX_BODY)
    try:
        with open(path, "rb") as f:
            return f.read(MAX_BODY)
    except OSError as e:
        raise UsageError(f"cannot read the secrets file: {e.strerror}") from None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def _secrets_json(line: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError:
        raise UsageError(f"the secrets {where} are not JSON") from None
    if not isinstance(data, dict):
        raise UsageError(f"the secrets {where} are not a JSON object")
    return data


def _kernel_env(value: Any) -> dict[str, str]:
    """The optional ``env`` object of the stdin line: names and values must be strings."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError("'env' on stdin must be an object of strings")
    return dict(value)


def _port_range_arg(text: str) -> tuple[int, int] | None:
    try:
        return parse_port_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _kernel_id_arg(text: str) -> str:
    if not KERNEL_ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError("a kernel id is letters, digits, '.', '_', '-'")
    return text


def _spark_conf_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        raise argparse.ArgumentTypeError("expected KEY=VALUE with a Spark conf key")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kernelyard-launcher",
        usage="%(prog)s [options] -- <kernel argv, with {connection_file}>",
        description="Start a kernel, report its ports to the gateway, serve signed control.",
    )
    p.add_argument("--kernel-id", required=True, type=_kernel_id_arg)
    p.add_argument("--port-range", type=_port_range_arg, default=None, metavar="LO..HI")
    p.add_argument("--ip", default="0.0.0.0")  # noqa: S104 - the documented default
    p.add_argument("--public-ip", default="")
    p.add_argument("--run-dir", default="")
    p.add_argument("--detach", action="store_true")
    p.add_argument("--secrets-from-stdin", action="store_true")
    p.add_argument("--secrets-file", default="", metavar="FILE")
    p.add_argument("--spark-session", choices=SPARK_MODES, default=None)
    p.add_argument("--spark-master", default="", metavar="URL")
    p.add_argument("--spark-conf", action="append", default=[], type=_spark_conf_arg,
                   metavar="KEY=VALUE")
    p.add_argument("--callback-cafile", default=None)
    p.add_argument("--kernel-name", default="")
    p.add_argument("--port-clash-watch", type=float, default=0.0, metavar="SECONDS")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options before ``--``, the kernel argv after it; ``-h``/``--help`` prints the usage."""
    parser = build_parser()
    if "--" not in argv:
        if {"-h", "--help"} & set(argv):
            parser.print_help()
            parser.exit()
        parser.error("missing '--' before the kernel command")
    cut = argv.index("--")
    options, kernel_argv = parser.parse_args(argv[:cut]), argv[cut + 1:]
    if not kernel_argv:
        parser.error("no kernel command after '--'")
    return options, kernel_argv


# ---- ports and files ---------------------------------------------------------------------


def bind_ports(
    ip: str, count: int, port_range: tuple[int, int] | None, avoid: set[int] | None = None
) -> list[socket.socket]:
    """``count`` TCP sockets bound on ``ip`` to distinct ports (inside the range, if given).

    Ports in ``avoid`` are tried last. Raises OSError when not enough ports are free.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    bound: list[socket.socket] = []
    for port in _candidate_ports(count, port_range, avoid or set()):
        if len(bound) == count:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((ip, port))
        except OSError:
            sock.close()
            continue
        bound.append(sock)
    if len(bound) < count:
        for sock in bound:
            sock.close()
        raise OSError(f"fewer than {count} free ports on {ip} in {port_range}")
    return bound


def _candidate_ports(count: int, port_range: tuple[int, int] | None,
                     avoid: set[int]) -> list[int]:
    """Any-free-port zeros, or the range in random order with ``avoid`` at the end."""
    if port_range is None:
        return [0] * count
    ports = list(range(port_range[0], port_range[1] + 1))
    secrets.SystemRandom().shuffle(ports)
    ports.sort(key=lambda port: port in avoid)
    return ports


def port_of(sock: socket.socket) -> int:
    return cast(int, sock.getsockname()[1])


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically (via a temp file)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
    os.replace(tmp, path)


def make_run_dir(path: str) -> str:
    if not path:
        return tempfile.mkdtemp(prefix="kernelyard-")
    path = os.path.abspath(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def outgoing_address(url: str, family: int) -> str:
    """The local address a connection to ``url`` leaves from (per the routing table)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(parts.hostname, port, family, socket.SOCK_DGRAM)
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(infos[0][4])  # UDP: no packet is sent
        return cast(str, probe.getsockname()[0])


# ---- the kernel's process group ---------------------------------------------------------


class Kernel:
    """The kernel process and its process group.

    The leader is reaped only after the group got SIGKILL, so its pid (the pgid)
    can't be reused by another process while we may still signal it.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log_path: str):
        if shutil.which(argv[0], path=env.get("PATH")) is None:
            raise FileNotFoundError(2, "no such executable", argv[0])
        if sys.platform.startswith("linux"):
            # -I -S: no site-packages and no PYTHON* variables for this short step
            # (a third of a plain start); the kernel it execs gets the env unchanged.
            argv = [sys.executable, "-I", "-S", "-c", DIE_WITH_LAUNCHER, str(os.getpid()),
                    *argv]
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        self.pid = self.proc.pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def exited(self) -> bool:
        """True once the leader has exited (it is not reaped here)."""
        if self.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the group; False if the group is gone."""
        with self._lock:
            return self.returncode is None and self._killpg(signum)

    def _killpg(self, signum: int) -> bool:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        except OSError as e:
            log.warning("signal %d to process group %d failed: %s", signum, self.pid, e)
            return False
        return True

    def reap(self) -> int:
        """SIGKILL whatever is left of the group, reap the leader, return its exit code."""
        with self._lock:
            if self.returncode is None:
                self._killpg(signal.SIGKILL)
                self.returncode = self.proc.wait()
            return self.returncode

    def stop(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; return the exit code."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.reap()


# ---- the control endpoint ---------------------------------------------------------------


class ControlServer(ThreadingHTTPServer):
    """HTTP on the launcher's own (already bound) port, one thread per request."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, launcher: Launcher):
        super().__init__(sock.getsockname()[:2], ControlHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.launcher = launcher

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("control request from %s failed: %r", client_address[0], sys.exc_info()[1])


# http.server's 5xx for a request it cannot parse -> the 4xx the client earned.
_CLIENT_STATUS = {501: 405, 505: 400}


class ControlHandler(BaseHTTPRequestHandler):
    server_version = "kernelyard-launcher"
    sys_version = ""
    timeout = 10
    # Until a request line is parsed (and for one it refuses) http.server assumes
    # HTTP/0.9, whose answers have no status line: every answer here has one.
    default_request_version = "HTTP/1.0"

    def do_POST(self) -> None:
        launcher = cast(ControlServer, self.server).launcher
        if self.path != CONTROL_PATH:
            self._answer(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._answer(400, {"error": f"a Content-Length up to {MAX_BODY} is required"})
            return
        body = self.rfile.read(length)
        try:
            request = launcher.verify(body, self.headers.get(SIGNATURE_HEADER, ""))
        except ControlRefused as e:
            log.warning("refused a control request from %s: %s", self.client_address[0], e)
            self._answer(403, {"error": str(e)})
            return
        status, answer, after = launcher.control(request)
        self._answer(status, answer)
        if after is not None:
            after()

    def do_GET(self) -> None:
        self._answer(405, {"error": f"use POST {CONTROL_PATH}"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's error answer, with a 4xx for every bad request: it answers an
        unknown method (BREW) with 501 and an HTTP version past 1.x with 505."""
        super().send_error(_CLIENT_STATUS.get(code, code), message, explain)

    def _answer(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control %s: " + format, self.client_address[0], *args)


# ---- the callback --------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it would carry the token elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class CallbackFailed(Exception):
    pass


def post_callback(url: str, token: str, payload: dict[str, Any], context: ssl.SSLContext,
                  timeout: float) -> None:
    """One callback attempt, straight to the gateway (no proxy, no redirect).

    Raises CallbackFailed with a message that holds no secret.
    """
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context),
        _NoRedirect(),
    )
    request = urllib.request.Request(  # noqa: S310 - the scheme was checked: http(s) only
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raise CallbackFailed(f"HTTP {e.code} {e.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise CallbackFailed(f"{type(e).__name__}: {reason}") from None
    if not 200 <= status < 300:
        raise CallbackFailed(f"HTTP {status}")


# ---- the launcher -------------------------------------------------------------------------


class Launcher:
    """One kernel: start it, report it, control it, and clean up after it."""

    def __init__(self, options: argparse.Namespace, kernel_argv: list[str],
                 secret: Secrets, run_dir: str, tls: ssl.SSLContext):
        self.options = options
        self.tls = tls
        self.kernel_argv = kernel_argv
        self.secret = secret
        self.run_dir = run_dir
        self.kernel_id: str = options.kernel_id
        self.connection_file = os.path.join(run_dir, f"kernel-{self.kernel_id}.json")
        self.kernel_log = os.path.join(run_dir, "kernel.log")
        self.kernel: Kernel | None = None
        self.ports: dict[str, int] = {}
        # set by signal handlers and control threads; plain assignments, no locks
        self.stop_grace: float | None = None
        self.stop_reason = ""
        self._nonces: dict[str, float] = {}
        self._nonce_lock = threading.Lock()

    # -- lifecycle

    def run(self) -> int:
        control_sock = bind_ports(self.options.ip, 1, self.options.port_range)[0]
        control_sock.listen(16)
        self.ports[LAUNCHER_PORT] = port_of(control_sock)
        server = ControlServer(control_sock, self)
        thread = threading.Thread(target=server.serve_forever, name="control", daemon=True)
        thread.start()
        try:
            return self._run_kernel()
        finally:
            server.shutdown()
            server.server_close()
            log.info("launcher exits")

    def _run_kernel(self) -> int:
        kernel = self.start_kernel()
        if kernel is None:
            return self.finish(127)
        self.kernel = kernel
        if not kernel.exited() and self.stop_grace is None and not self.call_back(kernel):
            self.finish(kernel.stop(0))
            return 1
        while not kernel.exited() and self.stop_grace is None:
            time.sleep(POLL)
        if self.stop_grace is not None:
            log.info("shutting the kernel down (%s, grace %.1fs)", self.stop_reason,
                     self.stop_grace)
            self.finish(kernel.stop(self.stop_grace))
            return 0
        code = self.finish(kernel.reap())
        if code != 0:  # 0: it obeyed a shutdown_request from the gateway
            log.error("the kernel exited by itself; the end of its log:\n%s",
                      _read_tail(self.kernel_log))
        return code if code >= 0 else 128 - code

    def finish(self, code: int) -> int:
        """Remove the connection file and write ``exit_code`` (the 'done' marker)."""
        for path in (self.connection_file, self.connection_file + ".tmp"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        write_private(os.path.join(self.run_dir, "exit_code"), f"{code}\n")
        log.info("kernel exited with code %d", code)
        return code

    def request_stop(self, grace: float, reason: str) -> None:
        """Ask the main loop to shut the kernel down (safe from signal handlers)."""
        if self.stop_grace is None:
            self.stop_reason = reason
            self.stop_grace = grace

    # -- start

    def start_kernel(self) -> Kernel | None:
        """Start the kernel; restart it on new ports if it dies of a port clash.

        None if the kernel command can't be run at all.
        """
        avoid: set[int] = set()
        retries = PORT_CLASH_RETRIES
        while True:
            offset = _size(self.kernel_log)
            kernel = self._spawn(avoid)
            if (kernel is None or retries == 0 or self.options.port_clash_watch <= 0
                    or not self._dies_of_port_clash(kernel, offset)):
                return kernel
            kernel.reap()
            retries -= 1
            avoid.update(self.ports[name] for name in KERNEL_PORT_NAMES)
            log.warning("the kernel lost a port to another process: retrying on new ports")

    def _spawn(self, avoid: set[int]) -> Kernel | None:
        self.write_connection_file(avoid)
        argv = [arg.replace("{connection_file}", self.connection_file)
                .replace("{python}", sys.executable) for arg in self.kernel_argv]
        try:
            kernel = Kernel(argv, {**node_env(os.environ), **self.secret.env,
                                   **self.spark_env()}, self.kernel_log)
        except OSError as e:
            log.error("cannot start the kernel %r: %s", argv[0], e)
            _append(self.kernel_log, f"kernelyard-launcher: cannot start {argv[0]!r}: {e}\n")
            return None
        write_private(os.path.join(self.run_dir, "kernel.pgid"), f"{kernel.pid}\n")
        log.info("kernel started: pid %d, ports %s", kernel.pid, self.ports)
        return kernel

    def spark_env(self) -> dict[str, str]:
        """With --spark-session: the startup file that makes ``spark`` and ``sc``."""
        mode = self.options.spark_session
        if not mode or mode == "none":
            return {}
        path = os.path.join(self.run_dir, "spark_startup.py")
        write_private(path, spark_startup_source().decode("utf-8"))
        settings = {"mode": mode, "master": self.options.spark_master,
                    "conf": dict(self.options.spark_conf)}
        env = {"PYTHONSTARTUP": path, "KERNELYARD_SPARK": json.dumps(settings)}
        if self.options.spark_master and not os.environ.get("SPARK_LOCAL_IP") and (
                "SPARK_LOCAL_IP" not in self.secret.env):
            # A client-mode driver: executors connect back to the address we report.
            env["SPARK_LOCAL_IP"] = self.reported_ip()
        return env

    def write_connection_file(self, avoid: set[int]) -> None:
        """Pick the 5 kernel ports, write the connection file, then release the ports."""
        socks = bind_ports(self.options.ip, 5, self.options.port_range, avoid)
        try:
            for name, sock in zip(KERNEL_PORT_NAMES, socks):  # noqa: B905 - 3.8 has no strict
                self.ports[name] = port_of(sock)
            info: dict[str, Any] = {name: self.ports[name] for name in KERNEL_PORT_NAMES}
            info.update(ip=self.options.ip, key=self.secret.key, transport="tcp",
                        signature_scheme="hmac-sha256", kernel_name=self.options.kernel_name,
                        **self.secret.curve)
            write_private(self.connection_file, json.dumps(info, indent=1))
        finally:
            for sock in socks:
                sock.close()

    def _dies_of_port_clash(self, kernel: Kernel, log_offset: int) -> bool:
        deadline = time.monotonic() + self.options.port_clash_watch
        while time.monotonic() < deadline and self.stop_grace is None:
            if kernel.exited():
                return PORT_CLASH_TEXT in _read_from(self.kernel_log, log_offset)
            time.sleep(POLL)
        return False

    # -- callback

    def callback_payload(self, kernel: Kernel) -> dict[str, Any]:
        payload: dict[str, Any] = dict(self.ports)
        payload.update(kernel_id=self.kernel_id, ip=self.reported_ip(),
                       hostname=socket.gethostname(), pid=kernel.pid, pgid=kernel.pid)
        return payload

    def reported_ip(self) -> str:
        """--public-ip, else a specific --ip, else where the callback goes out from."""
        if self.options.public_ip:
            return cast(str, self.options.public_ip)
        if self.options.ip not in ("0.0.0.0", "::", ""):  # noqa: S104 - wildcard test
            return cast(str, self.options.ip)
        family = socket.AF_INET6 if ":" in self.options.ip else socket.AF_INET
        return outgoing_address(self.secret.callback_url, family)

    def call_back(self, kernel: Kernel) -> bool:
        """POST the ports, retrying for 30 s; False if the gateway never accepted them.

        Also True when the retries stop because the kernel exited or a stop was
        requested: the main loop deals with those.
        """
        deadline = time.monotonic() + CALLBACK_RETRY_FOR
        delay = 0.25
        while not self._try_callback(kernel, deadline):
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("the gateway never accepted the callback: stopping the kernel")
                return False
            if not self._sleep_unless_done(kernel, min(delay, left)):
                return True
            delay = min(delay * 2, 2.0)
        return True

    def _try_callback(self, kernel: Kernel, deadline: float) -> bool:
        timeout = max(1.0, min(CALLBACK_ATTEMPT_TIMEOUT, deadline - time.monotonic()))
        try:
            post_callback(self.secret.callback_url, self.secret.token,
                          self.callback_payload(kernel), self.tls, timeout)
        except (CallbackFailed, OSError) as e:
            left = max(deadline - time.monotonic(), 0)
            log.warning("callback failed (%s); %.0fs of retries left", e, left)
            return False
        log.info("callback accepted")
        return True

    def _sleep_unless_done(self, kernel: Kernel, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if kernel.exited() or self.stop_grace is not None:
                return False
            time.sleep(min(POLL, seconds))
        return True

    # -- control

    def verify(self, body: bytes, signature: str) -> dict[str, Any]:
        with self._nonce_lock:
            return verify_control(self.secret.key.encode(), body, signature, time.time(),
                                  self._nonces)

    def control(self, request: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
        """(status, answer, what to do after answering) for a verified request."""
        action = request.get("action")
        kernel = self.kernel
        if action == "status":
            alive = kernel is not None and not kernel.exited()
            code = kernel.returncode if kernel is not None else None
            return 200, {"alive": alive, "exit_code": code}, None
        if action == "signal":
            signum = request.get("signum")
            if not _is_int(signum) or signum not in _signal_numbers():
                return 400, {"error": "signum must be a signal number"}, None
            delivered = kernel is not None and kernel.signal(signum)
            log.info("control: signal %d to the kernel's group (delivered: %s)",
                     signum, delivered)
            return 200, {"delivered": delivered}, None
        if action == "shutdown":
            grace = request.get("grace", DEFAULT_GRACE)
            if not _is_number(grace) or not 0 <= grace <= MAX_GRACE:
                return 400, {"error": f"grace must be seconds, 0 to {MAX_GRACE:.0f}"}, None
            return 200, {}, lambda: self.request_stop(float(grace), "control shutdown")
        return 400, {"error": "unknown action"}, None


def _signal_numbers() -> set[int]:
    return {int(s) for s in signal.valid_signals() if 0 < int(s) < signal.NSIG}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1024 * 1024)
    except OSError:
        return b""


def _read_tail(path: str, size: int = 4096) -> str:
    """The last ``size`` bytes of a file, from a line start."""
    data = _read_from(path, max(_size(path) - size, 0))
    if _size(path) > size and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    return data.decode(errors="replace").rstrip()


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(text)


# ---- process setup -------------------------------------------------------------------------


def detach(run_dir: str) -> int | None:
    """Double-fork into a new session with stdio on ``RUN_DIR/launcher.log``.

    In the original process, returns the detached launcher's pid (0 if it failed),
    once ``launcher.pid`` holds it; in the detached launcher, returns None.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        os.waitpid(child, 0)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        return int(data) if data.strip().isdigit() else 0
    try:
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
        redirect_stdio(os.path.join(run_dir, "launcher.log"))
        write_pid_file(run_dir)
        os.write(write_end, str(os.getpid()).encode())
        os.close(write_end)
    except BaseException:
        os._exit(1)
    return None


def write_pid_file(run_dir: str) -> None:
    write_private(os.path.join(run_dir, "launcher.pid"), f"{os.getpid()}\n")


def redirect_stdio(log_path: str) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def setup_logging(kernel_id: str, run_dir: str, to_stderr: bool) -> None:
    fmt = logging.Formatter(
        "%(asctime)s kernelyard-launcher[%(process)d] kernel " + kernel_id
        + " %(levelname)s %(message)s"
    )
    path = os.path.join(run_dir, "launcher.log")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def install_signal_handlers(launcher: Launcher) -> None:
    def on_signal(signum: int, frame: Any) -> None:
        launcher.request_stop(DEFAULT_GRACE, signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)


def main(argv: list[str] | None = None) -> int:
    """Run the launcher; returns the process exit code.

    0 after a requested shutdown, the kernel's code (128 + signal) when it exited
    by itself, 1 when the callback failed, 2 for bad options or secrets, 127 when
    the kernel command can't be started.
    """
    options, kernel_argv = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        secret = read_secrets(options.secrets_from_stdin, options.secrets_file)
        tls = ssl.create_default_context(cafile=options.callback_cafile)
        check_spark_startup(options.spark_session)
        run_dir = make_run_dir(options.run_dir)
    except (UsageError, OSError) as e:
        print(f"kernelyard-launcher: {e}", file=sys.stderr)
        return 2
    if options.detach:
        pid = detach(run_dir)
        if pid is not None:
            return report_detached(pid, run_dir)
    else:
        write_pid_file(run_dir)
    setup_logging(options.kernel_id, run_dir, to_stderr=not options.detach)
    return run_launcher(Launcher(options, kernel_argv, secret, run_dir, tls))


def report_detached(pid: int, run_dir: str) -> int:
    """In the original process: the one JSON line on stdout."""
    if not pid:
        print("kernelyard-launcher: could not detach", file=sys.stderr)
        return 1
    print(json.dumps({"pid": pid, "run_dir": run_dir}), flush=True)
    return 0


def run_launcher(launcher: Launcher) -> int:
    install_signal_handlers(launcher)
    log.info("launcher started in %s", launcher.run_dir)
    try:
        return launcher.run()
    except Exception as e:
        log.exception("launcher failed")
        _append(launcher.kernel_log, f"kernelyard-launcher: {e}\n")
        if launcher.kernel is not None:
            launcher.finish(launcher.kernel.stop(0))
        return 1


if __name__ == "__main__":
    sys.exit(main())
