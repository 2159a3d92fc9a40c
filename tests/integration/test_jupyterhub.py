"""JupyterHub authentication against the real hub of ci/jupyterhub, no mocks.

Needs `bash ci/jupyterhub/install.sh && bash ci/jupyterhub/start.sh`, which write
$KY_HUB_STATE/env. The hub's users' servers use the gateway at KY_HUB_GATEWAY_URL,
a port start.sh reserved: this module starts kernelyard there, with the
'jupyterhub' authenticator pointed at the hub. User tokens are minted through the
hub's API with the kernelyard-ci service's admin token. No token is printed: they
are Hidden in failure reports, and the logs are checked for them.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import websocket
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from kernelyard.auth.jupyterhub import JupyterHubAuthenticator, fingerprint, grants
from kernelyard.errors import BackendUnavailable, ConfigError, Forbidden
from kernelyard.identity import Principal
from tests import realparts
from tests.gateway import LISTENING, Gateway, KernelSocket, free_port, start_gateway, stop_process
from tests.kernelspecs import write_spec

SHARED = "shared-test-token"


class Hidden(str):
    """A token that pytest's failure reports (which show fixtures and locals) don't print."""

    def __repr__(self) -> str:
        return "<hidden token>"


def call(url: str, method: str = "GET", body: Any = None, token: str | None = None,
         timeout: float = 30) -> tuple[int, Any]:
    """One HTTP request; (status, parsed JSON body or text)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class Hub:
    """The running hub, as its env file describes it."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.url = env["KY_HUB_URL"].rstrip("/")
        self.api_url = env["KY_HUB_API_URL"].rstrip("/")
        self.admin = Hidden(Path(env["KY_HUB_CI_TOKEN_FILE"]).read_text().strip())
        self.service_token = Hidden(Path(env["KY_HUB_SERVICE_TOKEN_FILE"]).read_text().strip())
        self.minted: list[Hidden] = []

    def api(self, method: str, path: str, body: Any = None, token: str | None = None
            ) -> tuple[int, Any]:
        return call(self.api_url + path, method, body, token or self.admin)

    def token(self, user: str, **body: Any) -> Hidden:
        """A new API token of ``user``, minted by the hub (scopes: the user's own)."""
        status, model = self.api("POST", f"/users/{user}/tokens",
                                 {"note": "kernelyard test", **body})
        assert status == 201, (status, model)
        token = Hidden(model["token"])
        self.minted.append(token)
        return token

    def revoke(self, user: str, token: str) -> None:
        status, model = self.api("GET", "/user", token=token)
        assert status == 200, (status, model)
        status, _ = self.api("DELETE", f"/users/{user}/tokens/{model['token_id']}")
        assert status == 204, status

    def log(self) -> str:
        return Path(self.env["KY_HUB_LOG"]).read_text(errors="replace")


@pytest.fixture(scope="module")
def hub() -> Hub:
    found = Hub(realparts.env("jupyterhub"))
    try:
        status, model = found.api("GET", "/user")
    except OSError as e:
        realparts.missing("jupyterhub", f"JupyterHub at {found.api_url} does not answer ({e})")
    assert status == 200 and model["name"] == "kernelyard-ci", (status, model)
    return found


def start_gateway_at(url: str, tmp: Path, *args: str,
                     env: dict[str, str] | None = None) -> Gateway:
    """``kernelyard serve`` on the port of ``url`` (the hub's users' servers use it).

    tests.gateway.start_gateway always picks its own port, hence this variant.
    """
    runtime = tmp / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "gateway.log"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
           "JUPYTER_DATA_DIR": str(tmp / "data"), "KERNELYARD_AUTH_TOKEN": SHARED, **(env or {})}
    port = urlsplit(url).port
    assert port, url
    cmd = [sys.executable, "-m", "kernelyard.cli.main", "serve", "--ip", "127.0.0.1",
           "--port", str(port), "--port-retries", "0", *args]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        m = LISTENING.search(log_path.read_text(errors="replace"))
        if m:
            return Gateway(proc, m.group(1), SHARED, log_path, runtime)
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"gateway did not start on {url}:\n{log_path.read_text(errors='replace')}")


def hub_args(hub: Hub, *extra: str) -> tuple[str, ...]:
    return ("--KernelyardApp.authenticators=token",
            "--KernelyardApp.authenticators=jupyterhub",
            f"--JupyterHubAuthenticator.hub_api_url={hub.api_url}", *extra)


@pytest.fixture(scope="module")
def gw(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # At debug level, so the test can show that not even debug lines carry a token. Local
    # kernels run as their owner, with a Python every user can run (ci/users.sh).
    tmp = tmp_path_factory.mktemp("hub-gateway")
    write_spec(tmp / "jupyter", "python3",
               ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    gateway = start_gateway_at(hub.env["KY_HUB_GATEWAY_URL"], tmp,
                               *hub_args(hub, "--debug",
                                         "--LocalKernelProvisioner.run_as_user=True"),
                               env={"JUPYTER_PATH": str(tmp / "jupyter")})
    yield gateway
    gateway.stop()


def request_with(token: str | None, scheme: str = "token") -> HTTPServerRequest:
    headers = HTTPHeaders({"Host": "127.0.0.1"})
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    return HTTPServerRequest(start_line=RequestStartLine("GET", "/api/kernels", "HTTP/1.1"),
                             headers=headers)


def authenticate(auth: JupyterHubAuthenticator, token: str | None) -> Principal | None:
    return asyncio.run(auth.authenticate(request_with(token)))


def dead_url() -> str:
    """An API URL on a loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/hub/api"


# --- the authenticator against the hub ----------------------------------------------------


def test_alice_is_alice_with_her_hub_groups(hub: Hub) -> None:
    auth = JupyterHubAuthenticator(hub_api_url=hub.api_url)
    principal = authenticate(auth, hub.token("alice"))
    assert principal == Principal(name="alice", groups=frozenset({"analysts"}), admin=False,
                                  via="jupyterhub", may_act_for_others=False)


def test_bob_is_a_hub_admin(hub: Hub) -> None:
    auth = JupyterHubAuthenticator(hub_api_url=hub.api_url + "/")  # a trailing slash is fine
    principal = authenticate(auth, hub.token("bob"))
    assert principal is not None
    assert (principal.name, principal.admin, principal.groups) == ("bob", True, frozenset())


def test_a_token_the_hub_does_not_know_falls_through(hub: Hub) -> None:
    auth = JupyterHubAuthenticator(hub_api_url=hub.api_url)
    assert authenticate(auth, "not-a-hub-token-" + uuid.uuid4().hex) is None
    assert authenticate(auth, None) is None


def test_a_token_without_the_access_scope_is_forbidden(hub: Hub) -> None:
    narrow = hub.token("alice", scopes=["read:users:name!user"])
    auth = JupyterHubAuthenticator(hub_api_url=hub.api_url)
    with pytest.raises(Forbidden, match="access:services!service=kernelyard"):
        authenticate(auth, narrow)
    # With no required scope, any token of a hub user is accepted.
    lax = JupyterHubAuthenticator(hub_api_url=hub.api_url, access_scopes=[])
    assert authenticate(lax, narrow) == Principal(
        name="alice", groups=frozenset({"analysts"}), via="jupyterhub")


def test_a_service_token_is_no_user(hub: Hub) -> None:
    auth = JupyterHubAuthenticator(hub_api_url=hub.api_url)
    with pytest.raises(Forbidden, match="service token"):
        authenticate(auth, hub.service_token)


def test_answers_are_cached_and_revocation_shows_after_the_cache(hub: Hub) -> None:
    token = hub.token("alice")
    cached = JupyterHubAuthenticator(hub_api_url=hub.api_url, cache_seconds=60)
    uncached = JupyterHubAuthenticator(hub_api_url=hub.api_url, cache_seconds=0)
    assert authenticate(cached, token) is not None
    assert authenticate(uncached, token) is not None
    hub.revoke("alice", token)
    assert authenticate(cached, token) is not None  # the hub is not asked again
    assert authenticate(uncached, token) is None


def test_kernelyard_tokens_never_reach_the_hub() -> None:
    # A dead hub would raise BackendUnavailable if the authenticator asked it.
    auth = JupyterHubAuthenticator(hub_api_url=dead_url())
    assert authenticate(auth, "ky_0123456789ab_" + "A" * 43) is None


def test_hub_down_is_backend_unavailable() -> None:
    auth = JupyterHubAuthenticator(hub_api_url=dead_url())
    with pytest.raises(BackendUnavailable, match="JupyterHub is unavailable"):
        authenticate(auth, "some-token")


def test_a_hub_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hub/api"
        auth = JupyterHubAuthenticator(hub_api_url=url, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="unavailable"):
            authenticate(auth, "some-token")
        assert time.monotonic() - t0 < 5


def test_concurrent_requests_share_one_hub_call(hub: Hub) -> None:
    token = hub.token("alice")
    auth = JupyterHubAuthenticator(hub_api_url=hub.api_url)

    async def many() -> list[Principal | None]:
        return await asyncio.gather(*(auth.authenticate(request_with(token))
                                      for _ in range(20)))

    before = hub.log().count("GET /hub/api/user (alice@")
    assert {p.name for p in asyncio.run(many()) if p} == {"alice"}
    assert hub.log().count("GET /hub/api/user (alice@") - before == 1


@pytest.mark.parametrize("url", ["", "127.0.0.1:8081/hub/api", "ftp://hub/api"])
def test_a_bad_hub_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="hub_api_url"):
        JupyterHubAuthenticator(hub_api_url=url)


def test_scope_matching() -> None:
    required = "access:services!service=kernelyard"
    assert grants({"access:services!service=kernelyard"}, required)
    assert grants({"access:services"}, required)
    assert not grants({"access:services!service=other"}, required)
    assert not grants({"access:servers"}, required)
    assert not grants({"access:services!service=kernelyard"}, "access:services")


# --- through a real gateway ----------------------------------------------------------------


def test_gateway_accepts_alice_and_bob_as_themselves(hub: Hub, gw: Gateway) -> None:
    for user in ("alice", "bob"):
        status, body, _ = gw.as_caller(hub.token(user)).request("GET", "/api/kernels")
        assert status == 200, (user, status, body)
        assert gw.log_shows(f"GET /api/kernels ({user}@127.0.0.1)")


def test_gateway_answers_401_to_a_random_token(gw: Gateway) -> None:
    status, body, _ = gw.request("GET", "/api/kernels", token=uuid.uuid4().hex)
    assert status == 401 and body["reason"] == "Unauthorized"
    assert gw.request("GET", "/api/kernels")[0] == 200  # the shared token still works


def test_gateway_answers_403_to_a_hub_token_without_the_scope(hub: Hub, gw: Gateway) -> None:
    narrow = hub.token("bob", scopes=["read:users:name!user"])
    status, body, _ = gw.request("GET", "/api/kernels", token=narrow)
    assert status == 403 and "access:services!service=kernelyard" in body["message"]


def test_gateway_answers_503_when_the_hub_is_down(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, "--KernelyardApp.authenticators=jupyterhub",
                            f"--JupyterHubAuthenticator.hub_api_url={dead_url()}", token=None)
    try:
        status, body, _ = gateway.request("GET", "/api/kernels", token="some-hub-token")
        assert status == 503, (status, body)
        assert body["reason"] == "Service Unavailable" and "JupyterHub" in body["message"]
        assert "Traceback" not in gateway.log()
        # Without credentials the hub is not needed to say 401.
        assert gateway.request("GET", "/api/kernels", token="")[0] == 401
    finally:
        gateway.stop()


def test_gateway_without_hub_url_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="hub_api_url"):
        start_gateway(tmp_path, "--KernelyardApp.authenticators=jupyterhub", token=None)


def test_websocket_with_a_hub_token(hub: Hub, gw: Gateway) -> None:
    alice = gw.as_caller(hub.token("alice"))
    kernel_id = alice.start_kernel()
    try:
        sock = alice.connect(kernel_id)
        try:
            assert sock.execute("print(6 * 7)")["stdout"] == "42\n"
        finally:
            sock.close()
    finally:
        alice.request("DELETE", f"/api/kernels/{kernel_id}")
    assert gw.log_shows("POST /api/kernels (alice@127.0.0.1)")


# --- alice's single-user server, with kernelyard as its gateway --------------------------


@pytest.fixture(scope="module")
def alice_server(hub: Hub, gw: Gateway) -> Iterator[str]:
    """Start alice's single-user server through the hub API; yields its URL."""
    status, body = hub.api("POST", "/users/alice/server")
    assert status in (201, 202, 400), (status, body)  # 400: already running
    deadline = time.monotonic() + 60
    while True:
        _, model = hub.api("GET", "/users/alice")
        server = model["servers"].get("", {})
        if server.get("ready"):
            break
        assert time.monotonic() < deadline, f"alice's server is not ready: {model}"
        time.sleep(0.2)
    yield hub.url + server["url"]
    hub.api("DELETE", "/users/alice/server")


def test_a_kernel_started_through_alices_server_is_alices(
    hub: Hub, gw: Gateway, alice_server: str
) -> None:
    token = hub.token("alice")
    posts = gw.log().count("POST /api/kernels (alice@127.0.0.1)")
    # Her server answers her token (the hub checks it) and sends her kernels to kernelyard.
    status, specs = call(alice_server + "api/kernelspecs", token=token)
    assert status == 200 and "python3" in specs["kernelspecs"], (status, specs)
    status, session = call(alice_server + "api/sessions", "POST", {
        "path": "hub-test.ipynb", "type": "notebook", "name": "hub-test",
        "kernel": {"name": "python3"}}, token=token, timeout=120)
    assert status == 201, (status, session)
    kernel_id = session["kernel"]["id"]
    try:
        # The kernel was started at kernelyard as alice, with a hub token this test never
        # saw: her server's own (JUPYTERHUB_API_TOKEN, sent as its gateway token).
        assert gw.log_shows("POST /api/kernels (alice@127.0.0.1)", count=posts + 1)
        ours = {fingerprint(t)[:12] for t in hub.minted}
        seen = set(re.findall(r"JupyterHub token ([0-9a-f]{12}) is alice", gw.log()))
        assert seen - ours, "no request as alice with her server's token"
        status, listed, _ = gw.as_caller(token).request("GET", "/api/kernels")
        assert status == 200 and kernel_id in {k["id"] for k in listed}
        # Code runs, over the websocket through the hub's proxy, her server and kernelyard.
        ws = websocket.create_connection(
            "ws" + alice_server[len("http"):] + f"api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {token}"], timeout=60)
        sock = KernelSocket(ws, v1=False, session_id=uuid.uuid4().hex)
        try:
            out = sock.execute("import getpass, os; print(getpass.getuser(), os.getuid())")
        finally:
            sock.close()
        assert out["error"] is None, out
        # The kernel runs as the hub user, as the OS user of that name.
        assert out["stdout"].split() == ["alice", str(pwd.getpwnam("alice").pw_uid)], out
    finally:
        call(alice_server + f"api/sessions/{session['id']}", "DELETE", token=token)
    assert kernel_id not in {k["id"] for k in gw.as_caller(token).request(
        "GET", "/api/kernels")[1]}


def test_no_token_in_any_log(hub: Hub, gw: Gateway) -> None:
    assert hub.minted, "run with the other tests of this module"
    gateway_log, hub_log = gw.log(), hub.log()
    for token in [*hub.minted, hub.admin, hub.service_token]:
        assert token not in gateway_log
        assert token not in hub_log
