"""What reaches a local kernel's environment, and env input that must be refused.

Issue 10, item 3: a kernel gets an allow-listed environment (the base set of
``kernelyard.policy.BASE_ENV_NAMES``, ``inherited_envs``, the client's allowed
names, the kernelspec's env), never the gateway's environment minus a deny-list.
Item 10: a lone surrogate, C1 controls and line/paragraph separators in a value,
and a name with a trailing newline, are a 400 naming the variable; a start that
fails with any exception leaves no kernel, no process, and a gateway that still
exits on SIGTERM.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from kernelyard import policy
from tests import realparts
from tests.gateway import SECRETS, Gateway, start_gateway
from tests.kernelspecs import IPYKERNEL, make_test_kernelspecs, write_spec
from tests.procs import children_of, wait_gone
from tests.realparts import ssh_hosts

REPO = Path(__file__).resolve().parents[2]
READ_ENV = "import os, json; print(json.dumps(dict(os.environ)))"


def kernelyard_env_names() -> set[str]:
    """Every KERNELYARD_* name the code reads or writes, and one it does not know yet."""
    text = "".join(p.read_text() for p in (REPO / "kernelyard").rglob("*.py"))
    return set(re.findall(r"\bKERNELYARD_[A-Z0-9_]*[A-Z0-9]\b", text)) | {"KERNELYARD_NEW_ONE"}


def gateway_secrets() -> dict[str, str]:
    values = {name: f"{name.lower()}-{secrets.token_hex(8)}" for name in kernelyard_env_names()}
    values["KERNELYARD_STORE_KEY"] = Fernet.generate_key().decode()
    values["KERNELYARD_SPARK"] = "{}"
    values.pop("KERNELYARD_AUTH_TOKEN")  # start_gateway sets it (the gateway's token)
    for name in ("AWS_SECRET_ACCESS_KEY", "MY_PASSWORD", "GITHUB_TOKEN", "FOO"):
        values[name] = f"{name.lower()}-{secrets.token_hex(8)}"
    for name, value in values.items():
        SECRETS.add_secret(value, f"the gateway's {name}")
    return values


GATEWAY_SECRETS = gateway_secrets()
INHERITED = {"INHERITED_ONE": "passed-on-by-inherited-envs"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("kernel-env")
    make_test_kernelspecs(root / "jupyter")
    write_spec(root / "jupyter", "spec_env", IPYKERNEL,
               env={"SPEC_VAR": "from-the-kernelspec", "PATH": "/opt/spec/bin:${PATH}"})
    gateway = start_gateway(
        root, "--KernelyardApp.client_envs=ALLOWED_VAR",
        "--KernelyardApp.inherited_envs=INHERITED_ONE",
        env={"JUPYTER_PATH": str(root / "jupyter"), **GATEWAY_SECRETS, **INHERITED})
    yield gateway
    gateway.stop()


def gateway_environ(gw: Gateway) -> dict[str, str]:
    raw = Path(f"/proc/{gw.proc.pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def kernel_environ(gw: Gateway, kernel_id: str) -> dict[str, str]:
    ks = gw.connect(kernel_id)
    try:
        return json.loads(ks.execute(READ_ENV)["stdout"])
    finally:
        ks.close()
        gw.request("DELETE", f"/api/kernels/{kernel_id}")


def start_via(gw: Gateway, how: str, env: dict[str, str]) -> str:
    if how == "kernels":
        return gw.start_kernel(env=env)
    status, model, _ = gw.request("POST", "/api/sessions", {
        "path": f"env-{secrets.token_hex(4)}.ipynb", "type": "notebook",
        "kernel": {"name": "python3"}})
    assert status == 201, model
    return model["kernel"]["id"]


def assert_only_allowed_gateway_names(gw: Gateway, seen: dict[str, str]) -> None:
    """A gateway variable the kernel holds with the gateway's value is in the base set."""
    ours = gateway_environ(gw)
    allowed = {*INHERITED}
    leaked = sorted(name for name, value in seen.items()
                    if ours.get(name) == value and not policy.is_base_env_name(name)
                    and name not in allowed)
    assert leaked == [], f"gateway variables reached the kernel: {leaked}"


@pytest.mark.parametrize("how", ["kernels", "sessions"])
def test_a_local_kernel_gets_none_of_the_gateways_variables(gw: Gateway, how: str) -> None:
    env = {"KERNEL_FOO": "foo", "ALLOWED_VAR": "yes"} if how == "kernels" else {}
    seen = kernel_environ(gw, start_via(gw, how, env))
    present = sorted({*GATEWAY_SECRETS, "KERNELYARD_AUTH_TOKEN"} & seen.keys())
    assert present == [], f"gateway secrets in the kernel's env: {present}"
    assert not any(value in json.dumps(seen) for value in GATEWAY_SECRETS.values())
    assert seen["INHERITED_ONE"] == INHERITED["INHERITED_ONE"]
    assert seen["KERNEL_USERNAME"]
    if how == "kernels":
        assert seen["KERNEL_FOO"] == "foo" and seen["ALLOWED_VAR"] == "yes"
    assert seen["PATH"] == gateway_environ(gw)["PATH"], "the base set keeps PATH"
    assert_only_allowed_gateway_names(gw, seen)


def test_the_kernelspec_env_is_applied_with_substitutions(gw: Gateway) -> None:
    seen = kernel_environ(gw, gw.start_kernel("spec_env"))
    assert seen["SPEC_VAR"] == "from-the-kernelspec"
    assert seen["PATH"] == "/opt/spec/bin:" + gateway_environ(gw)["PATH"]
    assert not GATEWAY_SECRETS.keys() & seen.keys()


def test_a_remote_kernel_gets_inherited_envs_and_no_gateway_secret(
        tmp_path: Path) -> None:
    """An SSH kernel on a real host: KernelyardApp.inherited_envs reach it (the old
    'differs from the gateway's env' filter dropped them), the gateway's secrets don't."""
    hosts = ssh_hosts()
    tmp_path.chmod(0o755)
    folder = tmp_path / "jupyter" / "kernels" / "ssh_env"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": ["kernelyard-launcher", "--", "/usr/bin/python3", "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": "ssh_env", "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "kernelyard-ssh", "config": {
            "hosts": hosts["KY_SSH_HOSTS"].split(",")[:1]}}}}))
    for part in (tmp_path / "jupyter", tmp_path / "jupyter" / "kernels", folder):
        part.chmod(0o755)
    gw = start_gateway(
        tmp_path, "--ip", hosts["KY_SSH_GATEWAY_IP"],
        "--KernelyardApp.inherited_envs=INHERITED_ONE",
        *realparts.ssh_login_args(hosts),
        "--SSHProvisioner.poll_interval=1",
        env={"JUPYTER_PATH": str(tmp_path / "jupyter"), **GATEWAY_SECRETS, **INHERITED})
    try:
        seen = kernel_environ(gw, gw.start_kernel("ssh_env", env={"KERNEL_FOO": "foo"}))
    finally:
        gw.stop()
    present = sorted({*GATEWAY_SECRETS, "KERNELYARD_AUTH_TOKEN"} & seen.keys())
    assert present == [], f"gateway variables in the remote kernel's env: {present}"
    assert seen["KERNEL_FOO"] == "foo"
    assert seen.get("INHERITED_ONE") == INHERITED["INHERITED_ONE"]


# ---- item 10: one check for every env value and name ---------------------------------------

BAD_VALUES = {"lone high surrogate": "\\ud800", "lone low surrogate": "x\\udfff",
              "C1 NEL": "a\\u0085b", "C1 CSI": "\\u009b31m", "line separator": "a\\u2028b",
              "paragraph separator": "a\\u2029b", "DEL": "\\u007f", "NUL": "\\u0000"}


@pytest.mark.parametrize("escaped", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_bad_env_value_is_400_naming_the_variable(gw: Gateway, escaped: str) -> None:
    raw = ('{"name": "python3", "env": {"KERNEL_X": "' + escaped + '"}}').encode()
    status, body, _ = gw.request("POST", "/api/kernels", raw=raw)
    assert status == 400, body
    assert "KERNEL_X" in body["message"]


@pytest.mark.parametrize("escaped", ["KERNEL_Y\\n", "KERNEL_Y\\u2028", "KERNEL_\\ud800"])
def test_an_env_name_must_match_in_full(gw: Gateway, escaped: str) -> None:
    raw = ('{"env": {"' + escaped + '": "v"}}').encode()
    status, body, _ = gw.request("POST", "/api/kernels", raw=raw)
    assert status == 400, body
    assert "env variable name" in body["message"]


@pytest.mark.parametrize("escaped", ["\\ud800", "python3\\nFAKE LOG LINE", "a\\u2028b"])
def test_a_kernelspec_name_is_checked_like_env_values(gw: Gateway, escaped: str) -> None:
    for path, body in (("/api/kernels", '{"name": "%s"}'),
                       ("/api/sessions", '{"path": "n.ipynb", "type": "notebook", '
                                         '"kernel": {"name": "%s"}}')):
        status, answer, _ = gw.request("POST", path, raw=(body % escaped).encode())
        assert status == 400, (path, answer)
        assert "name" in answer["message"]


def test_a_session_path_with_a_lone_surrogate_is_400(gw: Gateway) -> None:
    raw = b'{"path": "nb\\ud800.ipynb", "type": "notebook", "kernel": {"name": "python3"}}'
    status, body, _ = gw.request("POST", "/api/sessions", raw=raw)
    assert status == 400, body
    assert "path" in body["message"]


# ---- item 10: a start that fails with any exception leaves nothing ---------------------------

FAILING_PROVISIONER = textwrap.dedent(
    """
    from kernelyard.provisioners.local import LocalKernelProvisioner


    class FailsAfterSpawn(LocalKernelProvisioner):
        '''Starts the kernel process, then fails as no kernelyard error does.'''

        async def launch_kernel(self, cmd, **kwargs):
            info = await super().launch_kernel(cmd, **kwargs)
            open(self.parent.connection_file + ".pid", "w").write(str(self.pid))
            raise RuntimeError("injected failure after the kernel process started")
    """
)


def install_failing_provisioner(site: Path) -> None:
    """A provisioner entry point found through PYTHONPATH (a dist-info, no install)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "ky_failing_provisioner.py").write_text(FAILING_PROVISIONER)
    info = site / "ky_failing_provisioner-0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ky-failing-provisioner\n"
                                   "Version: 0\n")
    (info / "entry_points.txt").write_text(
        "[jupyter_client.kernel_provisioners]\n"
        "ky-fails-after-spawn = ky_failing_provisioner:FailsAfterSpawn\n")


@pytest.fixture
def failing_gw(tmp_path: Path) -> Iterator[Gateway]:
    specs = tmp_path / "jupyter"
    make_test_kernelspecs(specs)
    write_spec(specs, "fails_after_spawn", IPYKERNEL,
               metadata={"kernel_provisioner": {"provisioner_name": "ky-fails-after-spawn"}})
    write_spec(specs, "surrogate_in_spec_env", IPYKERNEL, env={"SPEC_X": "\ud800"})
    install_failing_provisioner(tmp_path / "site")
    gateway = start_gateway(tmp_path, env={
        "JUPYTER_PATH": str(specs), "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"})
    yield gateway
    gateway.stop(signal.SIGKILL)


def assert_nothing_left(gw: Gateway, before: set[int]) -> None:
    status, listed, _ = gw.request("GET", "/api/kernels")
    assert status == 200 and listed == [], listed
    assert wait_gone(children_of(gw.proc.pid) - before) == set()
    assert list(gw.runtime_dir.glob("kernel-*.json")) == []


def test_a_bad_env_value_leaves_no_pending_kernel_and_sigterm_still_exits(
        failing_gw: Gateway) -> None:
    status, body, _ = failing_gw.request(
        "POST", "/api/kernels", raw=b'{"env": {"KERNEL_X": "\\ud800"}}')
    assert status == 400 and "KERNEL_X" in body["message"], body
    assert_nothing_left(failing_gw, set())
    assert failing_gw.stop(signal.SIGTERM, timeout=60) == 0


def test_a_kernelspec_env_that_cannot_be_encoded_fails_cleanly(failing_gw: Gateway) -> None:
    """The value reaches Popen, which raises UnicodeEncodeError (no kernelyard error)."""
    before = children_of(failing_gw.proc.pid)
    status, body, _ = failing_gw.request("POST", "/api/kernels",
                                         {"name": "surrogate_in_spec_env"})
    assert status == 500, body
    assert "surrogate_in_spec_env" in body["message"]
    assert_nothing_left(failing_gw, before)
    assert failing_gw.stop(signal.SIGTERM, timeout=60) == 0


def test_an_unexpected_provisioner_exception_leaves_no_kernel_and_no_process(
        failing_gw: Gateway) -> None:
    before = children_of(failing_gw.proc.pid)
    status, body, _ = failing_gw.request("POST", "/api/kernels", {"name": "fails_after_spawn"})
    assert status == 500, body
    assert "fails_after_spawn" in body["message"]
    pid_files = list(failing_gw.runtime_dir.glob("kernel-*.json.pid"))
    assert len(pid_files) == 1, "the injected provisioner did not start a kernel"
    assert wait_gone({int(pid_files[0].read_text())}) == set(), "the kernel process was left"
    pid_files[0].unlink()
    assert_nothing_left(failing_gw, before)
    status, model, _ = failing_gw.request("POST", "/api/kernels", {"name": "python3"})
    assert status == 201, model  # the gateway still starts kernels
    failing_gw.request("DELETE", f"/api/kernels/{model['id']}")
    assert failing_gw.stop(signal.SIGTERM, timeout=60) == 0
