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
