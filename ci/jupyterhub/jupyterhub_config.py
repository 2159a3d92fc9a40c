# The JupyterHub that kernelyard's tests run (ci/jupyterhub/start.sh starts it).
#
# - Listens on 127.0.0.1 only: the proxy (public), the hub's own API and the proxy's
#   API each on a port start.sh picked.
# - Users alice and bob log in with one shared password (the 'shared-password'
#   authenticator; the password is in $KY_HUB_STATE/user.password). bob is a hub
#   admin; alice is in the hub group 'analysts'.
# - kernelyard is a hub service: the role 'kernelyard-users' grants alice and bob
#   the scope access:services!service=kernelyard, which kernelyard's
#   JupyterHubAuthenticator requires on every token by default.
# - Each user's single-user server is jupyter_server (jupyterhub-singleuser) run as
#   that Linux user by the default LocalProcessSpawner (the hub runs as root), with
#   --gateway-url pointing at kernelyard. Its JUPYTERHUB_API_TOKEN also goes to the
#   gateway client as JUPYTER_GATEWAY_AUTH_TOKEN, so every request it makes to
#   kernelyard carries 'Authorization: token <the server's hub token>'.
# - A second service, kernelyard-ci, holds an admin token the tests use to mint user
#   tokens and start servers through the hub API.
#
# Every value comes from start.sh through the environment: this file reads no secret
# from anywhere but the 0600 files in $KY_HUB_STATE.
import os
from pathlib import Path

c = get_config()  # noqa: F821  (provided by JupyterHub when it loads this file)

env = os.environ
state = Path(env["KY_HUB_STATE"])
SERVICE = env.get("KY_HUB_SERVICE_NAME", "kernelyard")
USERS = ["alice", "bob"]


def secret(name: str) -> str:
    return (state / name).read_text().strip()


# --- where it listens, what it keeps -----------------------------------------------
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(env["KY_HUB_PORT"])
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env["KY_HUB_API_PORT"])
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "cookie_secret")
c.JupyterHub.pid_file = str(state / "hub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops the users' servers
c.ConfigurableHTTPProxy.command = [env["KY_HUB_CHP"]]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['KY_HUB_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")
c.ConfigurableHTTPProxy.debug = False

# --- who may log in --------------------------------------------------------------------
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = secret("user.password")
c.SharedPasswordAuthenticator.admin_password = secret("admin.password")
c.Authenticator.allowed_users = set(USERS)
c.Authenticator.admin_users = {"bob"}
c.JupyterHub.load_groups = {"analysts": {"users": ["alice"]}}

# --- kernelyard as a hub service -------------------------------------------------------
c.JupyterHub.services = [
    # No url and no oauth fields: kernelyard only validates tokens (GET /hub/api/user
    # with the caller's own token), so the hub neither proxies nor redirects to it.
    {"name": SERVICE, "api_token": secret("service.token")},
    {"name": "kernelyard-ci", "api_token": secret("ci.token")},
]
c.JupyterHub.load_roles = [
    {
        "name": "kernelyard-users",
        "description": "May run kernels on the kernelyard gateway",
        "scopes": [f"access:services!service={SERVICE}"],
        "users": USERS,
    },
    {
        # kernelyard's own token: enough to read names and groups, nothing more.
        "name": "kernelyard-service",
        "scopes": ["read:users:name", "read:users:groups"],
        "services": [SERVICE],
    },
    {
        # The tests' driver: mint tokens for users, start and stop their servers.
        "name": "kernelyard-ci",
        "scopes": ["admin:users", "admin:servers", "tokens", "read:users"],
        "services": ["kernelyard-ci"],
    },
]

# --- the users' single-user servers ----------------------------------------------------
c.JupyterHub.spawner_class = "localprocess"  # as root: runs each server as the Linux user
c.Spawner.cmd = [env["KY_HUB_SINGLEUSER"]]
c.Spawner.args = [f"--gateway-url={env['KY_HUB_GATEWAY_URL']}"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
# The server's own token may be used at kernelyard (the added scope) besides the
# defaults of JupyterHub's 'server' role. A user gets only the scopes they hold.
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={SERVICE}",
]
c.Spawner.environment = {
    # Set at spawn time, when the server's token exists; it never goes on a command line.
    "JUPYTER_GATEWAY_AUTH_TOKEN": lambda spawner: spawner.api_token,
    "JUPYTER_GATEWAY_REQUEST_TIMEOUT": "60",
}
