"""``python -I -m kernelyard.runas``: the privileged helper that runs a kernel as its user.

The gateway starts it with an argv list (never a shell): directly when the
gateway runs as root, through ``sudo -n`` otherwise. Its options are its policy.
Whoever runs it fixes them: the gateway's ``runas_command``, pinned word for word
in the sudoers rule, so a gateway that is not root cannot loosen them::

    --min-uid N         lowest uid a kernel may run as (default 1000; uid 0 never)
    --allow-user NAME   only these users ...                        (repeatable)
    --allow-group NAME  ... or members of these groups may run kernels (repeatable)
    --runtime-dir DIR   the connection file's folder, relative to the user's home
                        (default .local/share/jupyter/runtime)

ONE JSON request comes on stdin (the gateway's end of a socket, or a pipe)::

    {"action": "launch", "user": "alice", "kernel_id": UUID, "argv": [...],
     "env": {...}, "cwd": "/home/alice/work", "umask": "077", "connection": {...}}
    {"action": "signal", "user": "alice", "pid": 1234, "signum": 2}
    {"action": "remove", "user": "alice", "kernel_id": UUID}

Whatever the action, the helper first resolves the user (pwd), applies the
rules (``kernelyard.usermap.check_run_as``: never root, never below the minimum
uid, only allowed users) and drops to the user for good: supplementary groups
(initgroups), then gid, then uid (setres*id), and checks that root cannot be
regained. Only then does it touch anything, so every file it writes and every
signal it sends is the user's own doing:

- ``launch`` sets the umask (default 077), writes the connection file (0600, in
  a folder only the user may list: made 0700, or stripped of group and other
  bits if it existed), enters ``cwd`` if it lies inside the user's home (else the
  home), starts a new session, answers ``{"pid", "pgid", "connection_file"}``
  on stdin (or stdout when stdin is not a socket), puts /dev/null on stdin and
  execs ``argv`` (``{connection_file}`` replaced) with ``env`` plus HOME, USER,
  LOGNAME and SHELL from passwd. The pid it reports is the kernel's.
- ``signal`` signals the kernel's process group (or the process) as the user.
- ``remove`` deletes the kernel's connection file.

A refusal answers ``{"error": "...", "kind": "refused"}`` (``"failed"`` when
the request was allowed but could not be carried out) and exits with 2; the
message never carries the request's env or key.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from .errors import KernelyardError
from .identity import check_kernel_id, is_valid_username
from .usermap import DEFAULT_MIN_UID, PasswdUserMap, RunAsRules, UserIdentity

MAX_REQUEST = 1 << 20
DEFAULT_RUNTIME_DIR = ".local/share/jupyter/runtime"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
REFUSED = 2


class HelperError(Exception):
    """The request is refused (``kind`` "refused") or can't be carried out ("failed")."""

    def __init__(self, message: str, kind: str = "refused"):
        super().__init__(message)
        self.kind = kind


# ---- the request --------------------------------------------------------------------


def read_request(fd: int = 0) -> dict[str, Any]:
    """One JSON object from ``fd`` (up to a newline or EOF)."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    if len(data) > MAX_REQUEST:
        raise HelperError("the request is too large")
    try:
        request = json.loads(data.split(b"\n", 1)[0] or b"null")
    except ValueError:
        raise HelperError("the request is not JSON") from None
    if not isinstance(request, dict):
        raise HelperError("the request must be a JSON object")
    return request


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(
        isinstance(v, str) and "\x00" not in v for v in value
    ):
        raise HelperError(f"'{what}' must be a non-empty list of strings")
    return value


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k
        and "\x00" not in k + v for k, v in value.items()
    ):
        raise HelperError("'env' must map names to strings")
    return dict(value)


def _umask(value: Any) -> int:
    if value is None:
        return 0o077
    try:
        mask = int(value, 8) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise HelperError("'umask' must be an octal string such as '077'") from None
    if isinstance(value, bool) or not 0 <= mask <= 0o777:
        raise HelperError("'umask' must be between 000 and 777")
    return mask


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HelperError(f"'{what}' must be an integer from {low} to {high}")
    return value


# ---- the user -----------------------------------------------------------------------


def resolve_user(name: Any, rules: RunAsRules) -> UserIdentity:
    if not is_valid_username(name):
        raise HelperError(f"{name!r} is not a valid user name")
    try:
        return PasswdUserMap().resolve(name, rules)
    except KernelyardError as e:
        raise HelperError(e.message) from None


def become(user: UserIdentity) -> None:
    """Drop to ``user`` for good: groups, gid, uid, in that order; then check."""
    if os.geteuid() != 0:
        raise HelperError("the run-as helper must run as root (directly or through sudo)",
                          "failed")
    os.initgroups(user.name, user.gid)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid,) * 3:
        _die("could not switch to user", user.name)
    for regain in (os.setuid, os.seteuid, os.setgid, os.setegid):
        try:
            regain(0)
        except PermissionError:
            continue
        _die("root could be regained after switching to user", user.name)


def _die(what: str, name: str) -> NoReturn:
    """A failed switch is not a refusal: stop at once, run nothing."""
    os.write(2, f"kernelyard-runas: {what} {name!r}; aborting\n".encode())
    os._exit(70)


def user_env(env: dict[str, str], user: UserIdentity) -> dict[str, str]:
    """The kernel's env: the request's, with the user's identity from passwd."""
    env = {**env, "HOME": user.home, "USER": user.name, "LOGNAME": user.name,
           "SHELL": user.shell}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def working_dir(cwd: Any, home: str) -> str:
    """``cwd`` if it is the home or lies inside it (symlinks resolved), else the home."""
    real_home = os.path.realpath(home)
    if isinstance(cwd, str) and cwd and "\x00" not in cwd:
        real = os.path.realpath(cwd)
        if os.path.commonpath([real, real_home]) == real_home and os.path.isdir(real):
            return real
    return real_home


# ---- the actions ----------------------------------------------------------------------


def connection_path(user: UserIdentity, runtime_dir: str, kernel_id: Any) -> str:
    try:
        kid = check_kernel_id(kernel_id)
    except KernelyardError as e:
        raise HelperError(e.message) from None
    return os.path.join(user.home, runtime_dir, f"kernel-{kid}.json")


def write_connection_file(path: str, info: Any) -> None:
    if not isinstance(info, Mapping):
        raise HelperError("'connection' must be a JSON object")
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    private_dir(folder)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(dict(info), f, indent=1)
    os.replace(tmp, path)


def private_dir(folder: str) -> None:
    """Make the user's own ``folder`` unlistable by others (keeping a sticky bit)."""
    info = os.stat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise HelperError(f"{folder} is not a folder of the user's own", "failed")
    if info.st_mode & 0o077:
        os.chmod(folder, stat.S_IMODE(info.st_mode) & ~0o077)


def launch(request: dict[str, Any], user: UserIdentity, runtime_dir: str) -> NoReturn:
    argv = _strings(request.get("argv"), "argv")
    env = user_env(_env(request.get("env")), user)
    os.umask(_umask(request.get("umask")))
    path = connection_path(user, runtime_dir, request.get("kernel_id"))
    try:
        write_connection_file(path, request.get("connection"))
        os.chdir(working_dir(request.get("cwd"), user.home))
    except OSError as e:
        raise HelperError(f"cannot prepare the kernel of {user.name!r}: {e.strerror}: "
                          f"{e.filename}", "failed") from None
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (the gateway started us in a new session)
    answer({"pid": os.getpid(), "pgid": os.getpgid(0), "connection_file": path})
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    argv = [arg.replace("{connection_file}", path) for arg in argv]
    try:
        os.execvpe(argv[0], argv, env)  # noqa: S606 - an argv list, no shell
    except OSError as e:
        print(f"kernelyard-runas: cannot run {argv[0]!r} as {user.name!r}: {e.strerror}",
              file=sys.stderr, flush=True)
    os._exit(127)


def send_signal(request: dict[str, Any]) -> dict[str, Any]:
    pid = _int(request.get("pid"), "pid", 2, 2**22)
    signum = _int(request.get("signum"), "signum", 0, signal.NSIG - 1)
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return {"gone": True}
    except PermissionError:
        raise HelperError(f"process {pid} is not the user's") from None
    return {"gone": False}


def remove(request: dict[str, Any], user: UserIdentity, runtime_dir: str) -> dict[str, Any]:
    path = connection_path(user, runtime_dir, request.get("kernel_id"))
    for name in (path, f"{path}.tmp"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    return {"removed": path}


# ---- the command line ------------------------------------------------------------------


def answer(reply: dict[str, Any]) -> None:
    """One JSON line back: on stdin if it is a socket (the gateway's), else on stdout."""
    fd = 0 if stat.S_ISSOCK(os.fstat(0).st_mode) else 1
    data = (json.dumps(reply) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kernelyard-runas",
                                description="Run a kernel as its user (one JSON request on "
                                "stdin); see the module docstring.")
    p.add_argument("--min-uid", type=int, default=DEFAULT_MIN_UID)
    p.add_argument("--allow-user", action="append", default=[], metavar="NAME")
    p.add_argument("--allow-group", action="append", default=[], metavar="NAME")
    p.add_argument("--runtime-dir", default=DEFAULT_RUNTIME_DIR, metavar="DIR")
    return p


def rules_from(options: argparse.Namespace) -> RunAsRules:
    try:
        return RunAsRules(min_uid=options.min_uid,
                          allowed_users=frozenset(options.allow_user),
                          allowed_groups=frozenset(options.allow_group))
    except KernelyardError as e:
        raise HelperError(e.message) from None


def run(options: argparse.Namespace) -> int:
    rules = rules_from(options)
    runtime_dir = os.path.normpath(options.runtime_dir)
    if os.path.isabs(runtime_dir) or runtime_dir.startswith(".."):
        raise HelperError("--runtime-dir must be relative to the user's home")
    request = read_request()
    action = request.get("action", "launch")
    if action not in ("launch", "signal", "remove"):
        raise HelperError(f"unknown action {action!r}")
    user = resolve_user(request.get("user"), rules)
    become(user)
    if action == "launch":
        launch(request, user, runtime_dir)
    answer(send_signal(request) if action == "signal" else remove(request, user, runtime_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        return run(options)
    except HelperError as e:
        answer({"error": str(e), "kind": e.kind})
        print(f"kernelyard-runas: {e}", file=sys.stderr, flush=True)
        return REFUSED


if __name__ == "__main__":
    sys.exit(main())
