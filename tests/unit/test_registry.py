"""Registries from entry points: ``generate-config`` and ``--help-all`` list every setting.

The expected settings are found here independently of ``kernelyard.registry``:
every ``config=True`` trait of the core classes (the list below) and of every
class that kernelyard's entry points reach (its own and any installed
third-party kernelyard backend's provisioners, every authenticator). The real
CLI is run, in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from kernelyard.api.channels import GatewayChannelsConnection
from kernelyard.app import KernelyardApp
from kernelyard.auth.provider import GatewayIdentityProvider
from kernelyard.callbacks import CallbackRegistry
from kernelyard.kernel import GatewayKernelManager
from kernelyard.manager import GatewayMappingKernelManager
from kernelyard.provisioners.base import RemoteProvisionerBase
from kernelyard.provisioners.local import LocalKernelProvisioner
from kernelyard.store import StoreFactory
from tests.entrypoints import install_package

CORE = [KernelyardApp, GatewayIdentityProvider, GatewayMappingKernelManager,
        GatewayKernelManager, GatewayChannelsConnection, RemoteProvisionerBase, StoreFactory,
        CallbackRegistry]
CLI = [sys.executable, "-m", "kernelyard.cli.main"]
THIRDPARTY = Path(__file__).resolve().parents[1] / "data" / "thirdparty_backend"


def _is_kernelyard_backend(cls: object) -> bool:
    return isinstance(cls, type) and (
        cls.__module__.startswith("kernelyard.")
        or issubclass(cls, (RemoteProvisionerBase, LocalKernelProvisioner)))


def reachable_classes() -> list[type]:
    """The core classes and every class kernelyard's entry points name."""
    found = list(CORE)
    for ep in entry_points(group="jupyter_client.kernel_provisioners"):
        cls = ep.load()
        if _is_kernelyard_backend(cls):
            found.append(cls)
    found += [ep.load() for ep in entry_points(group="kernelyard.authenticators")]
    return found


def expected_settings() -> set[str]:
    return {f"{cls.__name__}.{name}" for cls in reachable_classes()
            for name in cls.class_traits(config=True)}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def generated_settings(tmp: Path, env: dict[str, str] | None = None) -> set[str]:
    target = tmp / "kernelyard_config.py"
    out = _run("generate-config", "--output", str(target), "--force", env=env)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"^# c\.(\w+\.\w+) = ", target.read_text(), re.M))


def help_all_settings() -> set[str]:
    out = _run("--help-all")
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"^--(\w+\.\w+)=", out.stdout, re.M))


def test_expected_settings_cover_every_backend_and_authenticator() -> None:
    names = {s.split(".")[0] for s in expected_settings()}
    assert {"SSHProvisioner", "YarnProvisioner", "LocalKernelProvisioner",
            "JupyterHubAuthenticator", "KerberosAuthenticator", "ProxyHeaderAuthenticator",
            "MutualTLSAuthenticator", "SharedTokenAuthenticator"} <= names


def test_generate_config_lists_every_setting(tmp_path: Path) -> None:
    missing = expected_settings() - generated_settings(tmp_path)
    assert not missing, sorted(missing)


def test_help_all_lists_every_setting() -> None:
    missing = expected_settings() - help_all_settings()
    assert not missing, sorted(missing)


ACME = textwrap.dedent("""
    from traitlets import Integer
    from kernelyard.provisioners.base import RemoteProvisionerBase
    from kernelyard.provisioners.kernelspec_backend import LAUNCHER, KernelspecBackend

    class AcmeProvisioner(RemoteProvisionerBase):
        widgets = Integer(3, config=True, help="How many widgets a kernel gets.")

    def add_options(options):
        options.add("acme", "--widgets", type=int, default=3, help="acme: widgets")

    def build(opts, kernel_cmd):
        return [LAUNCHER, "--", *kernel_cmd], {"widgets": opts.widgets}

    BACKEND = KernelspecBackend(provisioner="acme", build=build, add_options=add_options,
                                extra="acme", modules=("acme_backend",))
""")


def _third_party(root: Path, target: str, *, kernelspec: str = "") -> dict[str, str]:
    """An installed distribution (a dist-info on PYTHONPATH) that depends on kernelyard and
    names ``target`` as its provisioner entry point ``acme`` (and ``kernelspec`` as its
    kernelspec backend ``acme``)."""
    (root / "acme_backend.py").write_text(ACME)
    info = root / "acme_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-backend\nVersion: 0.1\n"
                                   "Requires-Dist: kernelyard\n")
    backends = f"[kernelyard.kernelspec_backends]\nacme = {kernelspec}\n" if kernelspec else ""
    (info / "entry_points.txt").write_text(f"[jupyter_client.kernel_provisioners]\n"
                                           f"acme = {target}\n{backends}")
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def test_third_party_backend_settings_are_listed(tmp_path: Path) -> None:
    env = _third_party(tmp_path, "acme_backend:AcmeProvisioner")
    assert "AcmeProvisioner.widgets" in generated_settings(tmp_path, env)


def test_the_third_party_package_settings_are_listed(tmp_path: Path) -> None:
    """The contract suite's third-party package (tests/data), installed as pip would."""
    site = install_package(THIRDPARTY, tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    assert "ScratchProvisioner.scratch_dir" in generated_settings(tmp_path, env)


def test_a_broken_entry_point_is_named(tmp_path: Path) -> None:
    env = _third_party(tmp_path, "acme_backend:NoSuchProvisioner")
    out = _run("generate-config", "--output", str(tmp_path / "c.py"), env=env)
    assert out.returncode != 0
    assert "acme" in out.stderr and "jupyter_client.kernel_provisioners" in out.stderr
    assert "acme_backend:NoSuchProvisioner" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_third_party_kernelspec_backend(tmp_path: Path) -> None:
    """A backend's kernelspec options and kernel.json part come from its entry point."""
    env = _third_party(tmp_path, "acme_backend:AcmeProvisioner",
                       kernelspec="acme_backend:BACKEND")
    env["JUPYTER_PATH"] = str(tmp_path / "share" / "jupyter")
    out = _run("kernelspec", "install", "acme", "--name", "py_acme", "--widgets", "5",
               "--curve", "--prefix", str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/py_acme/kernel.json").read_text())
    assert spec["argv"][:2] == ["kernelyard-launcher", "--"]
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "acme", "config": {"widgets": 5, "curve_encryption": True}}
    helped = _run("kernelspec", "install", "--help", env=env).stdout
    assert "--widgets" in helped and "--hosts" in helped and "--rm-urls" in helped


def test_a_kernelspec_backend_of_the_wrong_kind_is_named(tmp_path: Path) -> None:
    env = _third_party(tmp_path, "acme_backend:AcmeProvisioner",
                       kernelspec="acme_backend:AcmeProvisioner")
    out = _run("kernelspec", "install", "--help", env=env)
    assert out.returncode == 1
    assert "'acme' = acme_backend:AcmeProvisioner (group kernelyard.kernelspec_backends" \
        in out.stderr and "is not a KernelspecBackend" in out.stderr, out.stderr
