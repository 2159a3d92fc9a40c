"""The configuration reference names only settings that exist."""

from __future__ import annotations

import re
from pathlib import Path

from kernelyard.api.channels import GatewayChannelsConnection
from kernelyard.app import KernelyardApp
from kernelyard.auth.api_tokens import ApiTokenAuthenticator
from kernelyard.auth.jupyterhub import JupyterHubAuthenticator
from kernelyard.auth.kerberos import KerberosAuthenticator
from kernelyard.auth.mtls import MutualTLSAuthenticator
from kernelyard.auth.proxy_header import ProxyHeaderAuthenticator
from kernelyard.auth.token import SharedTokenAuthenticator
from kernelyard.callbacks import CallbackRegistry
from kernelyard.kernel import GatewayKernelManager
from kernelyard.manager import GatewayMappingKernelManager
from kernelyard.provisioners.base import RemoteProvisionerBase
from kernelyard.provisioners.kubernetes import KubernetesProvisioner
from kernelyard.provisioners.local import LocalKernelProvisioner
from kernelyard.provisioners.ssh import SSHProvisioner
from kernelyard.provisioners.yarn import YarnProvisioner
from kernelyard.store import StoreFactory

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
CLASSES = {c.__name__: c for c in [KernelyardApp, GatewayMappingKernelManager,
                                   GatewayKernelManager, LocalKernelProvisioner,
                                   GatewayChannelsConnection, RemoteProvisionerBase,
                                   SSHProvisioner, YarnProvisioner, KubernetesProvisioner,
                                   StoreFactory, CallbackRegistry,
                                   SharedTokenAuthenticator, ApiTokenAuthenticator,
                                   JupyterHubAuthenticator, KerberosAuthenticator,
                                   ProxyHeaderAuthenticator, MutualTLSAuthenticator]}


def test_every_documented_setting_exists() -> None:
    text = DOC.read_text()
    section_class = None
    checked = 0
    for line in text.splitlines():
        heading = re.match(r"## .*\(`(\w+)`", line)
        if heading:
            section_class = CLASSES.get(heading.group(1))
        row = re.match(r"\| `([\w.]+)`", line)
        if not row:
            continue
        for name in re.findall(r"`([\w.]+)`", line.split("|")[1]):
            cls_name, _, trait = name.rpartition(".")
            cls = CLASSES.get(cls_name) if cls_name else section_class
            if cls is None:
                continue
            assert cls.class_traits(config=True).get(trait), f"{name} is not a setting"
            checked += 1
    assert checked > 40
