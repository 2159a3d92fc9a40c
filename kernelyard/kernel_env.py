"""What a kernel's env may hold: the gateway's secrets, the base set, client text.

A leaf (stdlib only), so provisioners and the policy share one set of env rules
without a provisioner importing the policy, which sits above it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

# Gateway variables that hold secrets: never inherited by, nor settable for, a kernel.
# Every KERNELYARD_* name is treated the same way (``is_gateway_secret``).
DEFAULT_SECRET_ENVS = ("KERNELYARD_AUTH_TOKEN", "KERNELYARD_PROXY_SECRET",
                       "KERNELYARD_STORE_KEY", "JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN")
GATEWAY_ENV_PREFIX = "KERNELYARD_"
# What a kernel on the gateway's host takes from the gateway's environment, besides
# ``inherited_envs``: where programs are, the locale, the time zone, the terminal and
# the temporary directory, and (for a kernel that runs as the gateway's own account)
# that account's HOME, USER, LOGNAME and SHELL. Nothing else (docs/configuration.md).
BASE_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ",
                  "TERM", "TMPDIR")
BASE_ENV_PREFIXES = ("LC_",)
# Unicode categories no client text may hold: controls (C0, DEL and C1), lone
# surrogates (they cannot be encoded, so exec and the store would fail), and the
# line and paragraph separators (they end a line for many readers of logs and env).
REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def unsafe_character(value: str, refused: frozenset[str] = frozenset()) -> str | None:
    """The first character of ``value`` a kernel's env or a log may not hold, else None.

    That is any character of the ``REFUSED_CATEGORIES``, any that does not encode
    as UTF-8, and any of ``refused``. The one character check for client text:
    env values (``check_env_value``), session fields and kernelspec names
    (``check_text``), Spark conf values (``spark_request``).
    """
    for char in value:
        if char in refused or unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return value[e.start]
    return None



def is_gateway_secret(name: str, secret_names: Iterable[str] = ()) -> bool:
    """A gateway variable no kernel may inherit or be given: one of ``DEFAULT_SECRET_ENVS``
    or ``secret_names``, or any ``KERNELYARD_*`` name (the gateway's and the launcher's
    own variables)."""
    return (name.startswith(GATEWAY_ENV_PREFIX) or name in DEFAULT_SECRET_ENVS
            or name in set(secret_names))


def is_base_env_name(name: str) -> bool:
    """Whether a local kernel takes ``name`` from the gateway's env (the base set:
    ``BASE_ENV_NAMES`` and ``LC_*``)."""
    return name in BASE_ENV_NAMES or name.startswith(BASE_ENV_PREFIXES)


def base_env(gateway_env: Mapping[str, str]) -> dict[str, str]:
    """The base set of a local kernel's env: those of ``gateway_env`` that
    ``is_base_env_name`` admits."""
    return {name: value for name, value in gateway_env.items() if is_base_env_name(name)}


def scrub_secrets(env: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    """A copy of ``env`` without the gateway's secrets (``is_gateway_secret``), for the
    gateway's own helper processes (spark-submit); a kernel's env is built from an
    allow list instead (``base_env``, ``inherited_env``, the client's names)."""
    secrets = set(secret_names)
    return {k: v for k, v in env.items() if not is_gateway_secret(k, secrets)}
