"""Launch policy: pure functions, no I/O, one module per concern.

Decides who may launch what and which client-supplied values may reach a
kernel. Every function takes a ``Principal`` and plain config data and raises
a ``kernelyard.errors`` type whose message names the offending field or limit.
``docs/policy.md`` describes the semantics; ``kernelyard.quotas`` holds the one
async helper (count + reserve under a lock).

The package's API is the names re-exported here (import them from
``kernelyard.policy``); the modules are (``kernelyard.identity`` and
``kernelyard.kernel_env``, leaves below
the provisioners, hold the user-name, kernel-id and env rules re-exported here):

- ``request``: a launch body (``parse_launch_request``), session models, paths,
  kernel ids, client text (``check_text``);
- ``env``: which client and gateway variables reach a kernel (``EnvPolicy``);
- ``access``: kernelspec access lists, canonical kernelspec names;
- ``runas``: whom a kernel runs as (``effective_username``, ``launch_subject``);
- ``quotas``: kernel quotas (``QuotaPolicy``, ``KernelCounts``, ``check_quota``);
- ``resources``: resource limits per group;
- ``visibility``: who may see a kernel and its env;
- ``plan``: all of it for one launch (``LaunchPolicy``, ``authorize``).
"""

from __future__ import annotations

from ..identity import (
    MAX_USERNAME_LENGTH,
    ROOT_USER,
    Principal,
    canonical_username,
    check_kernel_id,
    is_root,
    is_valid_username,
)
from ..kernel_env import (
    BASE_ENV_NAMES,
    BASE_ENV_PREFIXES,
    DEFAULT_SECRET_ENVS,
    GATEWAY_ENV_PREFIX,
    REFUSED_CATEGORIES,
    base_env,
    is_base_env_name,
    is_gateway_secret,
    scrub_secrets,
    unsafe_character,
)
from ..launch_plan import LaunchPlan
from .access import (
    AccessPolicy,
    AccessRules,
    by_canonical_kernelspec,
    canonical_kernelspec_name,
    check_kernelspec_access,
    kernelspecs_for,
    may_use_kernelspec,
    spec_access_rules,
    spec_metadata_of,
    user_may_use_kernelspec,
)
from .env import (
    MAX_ENV_VALUE_LENGTH,
    EnvPolicy,
    check_env_name,
    check_env_value,
    filter_client_env,
    inherited_env,
)
from .plan import (
    KernelspecCheck,
    LaunchPolicy,
    authorize,
)
from .quotas import (
    KernelCounts,
    Limit,
    QuotaPolicy,
    check_quota,
)
from .request import (
    MAX_SESSION_ID,
    LaunchRequest,
    check_api_path,
    check_session_id,
    check_session_model,
    check_text,
    parse_launch_request,
)
from .resources import (
    ALL_GROUPS,
    check_resources,
    resource_limits_for,
    validate_resource_limits,
)
from .runas import (
    ANONYMOUS_VIA,
    effective_username,
    is_anonymous,
    launch_subject,
)
from .visibility import (
    REDACTED,
    SENSITIVE_NAME_PARTS,
    check_kernel_access,
    is_sensitive_env_name,
    may_access_kernel,
    owner_of,
    redact_env_for,
    visible_kernels,
)

__all__ = [
    "ALL_GROUPS",
    "ANONYMOUS_VIA",
    "BASE_ENV_NAMES",
    "BASE_ENV_PREFIXES",
    "DEFAULT_SECRET_ENVS",
    "GATEWAY_ENV_PREFIX",
    "MAX_ENV_VALUE_LENGTH",
    "MAX_SESSION_ID",
    "MAX_USERNAME_LENGTH",
    "REDACTED",
    "REFUSED_CATEGORIES",
    "ROOT_USER",
    "SENSITIVE_NAME_PARTS",
    "AccessPolicy",
    "AccessRules",
    "EnvPolicy",
    "KernelCounts",
    "KernelspecCheck",
    "LaunchPlan",
    "LaunchPolicy",
    "LaunchRequest",
    "Limit",
    "Principal",
    "QuotaPolicy",
    "authorize",
    "base_env",
    "by_canonical_kernelspec",
    "canonical_kernelspec_name",
    "canonical_username",
    "check_api_path",
    "check_env_name",
    "check_env_value",
    "check_kernel_access",
    "check_kernel_id",
    "check_kernelspec_access",
    "check_quota",
    "check_resources",
    "check_session_id",
    "check_session_model",
    "check_text",
    "effective_username",
    "filter_client_env",
    "inherited_env",
    "is_anonymous",
    "is_base_env_name",
    "is_gateway_secret",
    "is_root",
    "is_sensitive_env_name",
    "is_valid_username",
    "kernelspecs_for",
    "launch_subject",
    "may_access_kernel",
    "may_use_kernelspec",
    "owner_of",
    "parse_launch_request",
    "redact_env_for",
    "resource_limits_for",
    "scrub_secrets",
    "spec_access_rules",
    "spec_metadata_of",
    "unsafe_character",
    "user_may_use_kernelspec",
    "validate_resource_limits",
    "visible_kernels",
]
