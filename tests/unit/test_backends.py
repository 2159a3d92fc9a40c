"""Backend objects: one per backend and connection configuration, owned by a registry."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from traitlets.config import LoggingConfigurable

from kernelyard.provisioners.backend import BackendRegistry, registry_for
from kernelyard.provisioners.ssh import SSHProvisioner
from kernelyard.provisioners.ssh_backend import SSHBackend
from kernelyard.provisioners.status import RUNNING, BackendStatus
from kernelyard.provisioners.yarn import YarnProvisioner
from kernelyard.provisioners.yarn_backend import YarnBackend


class Manager(LoggingConfigurable):
    """Stands for the mapping kernel manager: it owns the registry."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.backends = BackendRegistry()


def _ssh(parent: Any = None, **config: Any) -> SSHProvisioner:
    km = LoggingConfigurable(parent=parent)  # stands for the kernel's KernelManager
    return SSHProvisioner(kernel_id=str(uuid.uuid4()), kernel_spec=None, parent=km,
                          hosts=["h1", "h2"], **config)


def test_kernelspecs_of_one_config_share_an_object_and_others_get_their_own() -> None:
    manager = Manager()
    alice, alice2 = _ssh(manager, username="alice"), _ssh(manager, username="alice")
    bob = _ssh(manager, username="bob")
    other_port = _ssh(manager, username="alice", port=2222)
    assert alice.backend is alice2.backend
    assert len({id(p.backend) for p in (alice, bob, other_port)}) == 3
    assert alice.backend.config.username == "alice" and bob.backend.config.username == "bob"
    assert alice.poller is alice.backend.poller and alice.poller is not bob.poller


def test_the_poll_interval_is_the_backend_objects() -> None:
    manager = Manager()
    fast, slow = _ssh(manager, poll_interval=0.5), _ssh(manager, poll_interval=7.0)
    assert (fast.poller.interval, slow.poller.interval) == (0.5, 7.0)


def test_yarn_objects_differ_by_rm_timeout_and_auth() -> None:
    manager = Manager()

    def yarn(**config: Any) -> YarnProvisioner:
        return YarnProvisioner(kernel_id=str(uuid.uuid4()), kernel_spec=None,
                               parent=LoggingConfigurable(parent=manager),
                               rm_urls=["http://rm:8088"], instance_tag="t", **config)

    a, b, c = yarn(), yarn(rm_timeout=3.0), yarn(rm_auth="kerberos")
    assert isinstance(a.backend, YarnBackend)
    assert len({id(p.backend) for p in (a, b, c)}) == 3
    assert a.backend is yarn().backend
    assert b.rm_for().timeout == 3.0


def test_the_registry_is_found_up_the_parent_chain_else_a_private_one() -> None:
    manager = Manager()
    assert registry_for(_ssh(manager)) is manager.backends
    plain = _ssh()  # a plain Jupyter Server: no registry up the chain
    assert registry_for(plain) is None
    assert plain.backends is plain.backends and plain.backends is not manager.backends


class FakeConn:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)


def test_teardown_closes_every_client_and_stops_the_poller() -> None:
    manager = Manager()

    async def scenario() -> tuple[list[FakeConn], bool, bool]:
        ssh = _ssh(manager)
        backend = await manager.backends.acquire(ssh)
        assert isinstance(backend, SSHBackend)
        conns = [FakeConn(), FakeConn()]
        backend._connections.update({("h1", ""): conns[0], ("h2", ""): conns[1]})

        async def status(states: list[dict[str, Any]]) -> list[BackendStatus]:
            return [BackendStatus(RUNNING) for _ in states]

        backend.status = status  # type: ignore[method-assign]
        ssh.state = {"host": "h1"}
        backend.poller.register(ssh)
        await backend.poller.next_round()
        polling = backend.poller._task is not None and not backend.poller._task.done()
        yarn = YarnProvisioner(kernel_id=str(uuid.uuid4()), kernel_spec=None,
                               parent=LoggingConfigurable(parent=manager),
                               rm_urls=["http://rm:8088"], instance_tag="t")
        rm = yarn.rm_for()
        rm._http = http = type("Http", (), {"closed": False,
                                             "close": lambda self: setattr(self, "closed", True)})()
        await manager.backends.teardown()
        return conns, polling and backend.poller._task is None, bool(http.closed)

    conns, poller_stopped, http_closed = asyncio.run(scenario())
    assert all(c.closed for c in conns) and poller_stopped and http_closed
    assert manager.backends.backend_for(_ssh(manager)) is not None  # a fresh start works
