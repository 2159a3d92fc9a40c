"""Small Python programs run on SSH hosts with ``python3 -c`` (stdlib only, 3.8+).

They take run dirs as arguments and print JSON; nothing from a request is in them.
"""

STATUS_SCRIPT = r"""
import json, os, sys
def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2); f.seek(max(0, f.tell() - 8192))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return ""
def alive(run):
    try:
        pid = int(open(os.path.join(run, "launcher.pid")).read())
        cmd = open("/proc/%d/cmdline" % pid, "rb").read()
    except (OSError, ValueError):
        return False
    return os.path.basename(run).encode() in cmd
out = {}
for run in sys.argv[1:]:
    entry = {"alive": alive(run)}
    if not entry["alive"]:
        try:
            entry["exit_code"] = int(open(os.path.join(run, "exit_code")).read())
        except (OSError, ValueError):
            entry["exit_code"] = None
        entry["log_tail"] = tail(os.path.join(run, "kernel.log"))
    out[run] = entry
print(json.dumps(out))
"""

CANCEL_SCRIPT = r"""
import os, signal, sys, time
run, grace, kernel_id = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def pid_of(name):
    try:
        return int(open(os.path.join(run, name)).read())
    except (OSError, ValueError):
        return None
def ours(pid):
    try:
        return kernel_id.encode() in open("/proc/%d/cmdline" % pid, "rb").read()
    except OSError:
        return False
def ours_group(pgid):
    # The group still holds a process started for this run dir (its connection file).
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getpgid(int(pid)) == pgid and ours(int(pid)):
                    return True
            except OSError:
                pass
    return False
launcher = pid_of("launcher.pid")
if launcher and ours(launcher):
    os.kill(launcher, signal.SIGTERM)
    deadline = time.time() + grace + 2
    while ours(launcher) and time.time() < deadline:
        time.sleep(0.1)
    if ours(launcher):
        os.kill(launcher, signal.SIGKILL)
pgid = pid_of("kernel.pgid")
if pgid and ours_group(pgid):
    os.killpg(pgid, signal.SIGKILL)
"""

# Run first (as the owner) in sudo mode: enter the owner's home, then exec the command,
# so the relative remote_dir resolves there as it does after an ssh login.
ENTER_HOME = (
    "import os, pwd, sys\n"
    "os.chdir(pwd.getpwuid(os.getuid()).pw_dir)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
# The launcher's source on stdin, installed at a path (argv: path, digest) by the login
# user, or by the owner in sudo mode. Concurrent installs (two gateways) are safe: each
# writes its own temporary file and renames it into place; a file already there is kept
# when it is the launcher of that digest, and is an error otherwise.
INSTALL_SCRIPT = r"""
import hashlib, os, sys
path, digest = sys.argv[1], sys.argv[2]
def digest_of(data):
    return hashlib.sha256(data).hexdigest()[:16]
data = sys.stdin.buffer.read()
if digest_of(data) != digest:
    sys.exit("kernelyard: the launcher arrived damaged")
if os.path.exists(path):
    with open(path, "rb") as f:
        if digest_of(f.read()) != digest:
            sys.exit("kernelyard: another file is in the way at %s" % path)
    sys.exit(0)
os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
tmp = "%s.%d.tmp" % (path, os.getpid())
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, path)
"""
RELEASE_SCRIPT = "import shutil, sys\nshutil.rmtree(sys.argv[1], ignore_errors=True)\n"
