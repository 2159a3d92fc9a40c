"""SPNEGO (HTTP ``Negotiate``, RFC 4559) building blocks over GSSAPI/Kerberos.

Pure functions with no HTTP framework code: the server side checks an
``Authorization: Negotiate <b64>`` value against a keytab, the client side makes one
for a Kerberized server (the YARN ResourceManager's REST API), and
``principal_to_user`` turns a Kerberos principal into the user kernels run as.

Every function that calls GSSAPI blocks (it reads keytabs and credential caches and
may talk to the KDC), so async code must run it in a thread (``asyncio.to_thread``).

``gssapi`` is an optional dependency (``pip install 'kernelyard[kerberos]'``); it is
imported on first use, never at import time. Nothing here logs or puts a token,
ticket or key into an error message: ``Unauthorized`` messages are client-safe, and
the GSSAPI reason for a refusal stays on ``__cause__`` for the server's log.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Any

from ..errors import ConfigError, Unauthorized

#: SPNEGO's mechanism OID: what HTTP Negotiate wraps Kerberos tokens in.
SPNEGO_OID = "1.3.6.1.5.5.2"
#: One principal component that may become a user name: no escapes, no separators.
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

REFUSED = ("Kerberos authentication failed: the ticket is invalid, expired, replayed "
           "or not meant for this server; run kinit and try again")


def _gssapi() -> Any:
    """The ``gssapi`` module, or a ConfigError naming the extra to install."""
    try:
        import gssapi
    except ImportError as err:
        raise ConfigError(
            "Kerberos support needs the gssapi package: pip install 'kernelyard[kerberos]'"
        ) from err
    return gssapi


def parse_negotiate(header_value: str) -> bytes:
    """The GSSAPI token in an ``Authorization: Negotiate <b64>`` value.

    Raises Unauthorized for another scheme, an empty token or invalid base64.
    """
    scheme, _, b64 = header_value.strip().partition(" ")
    if scheme.lower() != "negotiate":
        raise Unauthorized("expected 'Authorization: Negotiate <token>'")
    b64 = b64.strip()
    if not b64:
        raise Unauthorized("the Negotiate token is empty")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("the Negotiate token is not valid base64") from None


def accept_negotiate(
    header_value: str, keytab: str, service: str = "HTTP"
) -> tuple[str, str | None]:
    """Validate an ``Authorization: Negotiate <b64>`` value as a GSSAPI acceptor.

    ``keytab`` holds the server's keys (for example ``HTTP/gw.example.com``); it is
    passed through GSSAPI's credential store, so the process environment is not
    touched. Empty means the Kerberos library's default keytab (``KRB5_KTNAME``,
    else ``/etc/krb5.keytab``). The ticket must be for a principal of ``service``
    (``HTTP/<host>``) in that keytab, and the exchange must finish in one step.

    Returns ``(initiator principal, output token)``: the principal as
    ``alice@REALM``, and the base64 mutual-authentication token to send back as
    ``WWW-Authenticate: Negotiate <token>`` (None when GSSAPI produced none).

    Raises Unauthorized (client-safe message, GSSAPI reason on ``__cause__``) for a
    malformed, forged, expired, replayed or foreign ticket, and ConfigError when
    the keytab is unusable or gssapi is missing. Blocking: call it in a thread.
    """
    gssapi = _gssapi()
    token = parse_negotiate(header_value)
    ctx = gssapi.SecurityContext(creds=_acceptor_creds(gssapi, keytab), usage="accept")
    try:
        out = ctx.step(token)
        # With SPNEGO, step() may return a reject token and keep the error: it is
        # raised by the next look at the context, so that look stays in the try.
        complete = ctx.complete
    except gssapi.exceptions.GSSError as err:
        raise Unauthorized(REFUSED) from err
    if not complete:
        raise Unauthorized("Kerberos authentication did not complete in one step: "
                           "send a Kerberos (SPNEGO) ticket, not another mechanism")
    if ctx.mech != gssapi.MechType.kerberos:
        raise Unauthorized("only Kerberos is accepted inside Negotiate")
    _check_service(str(ctx.target_name or ""), service)
    return str(ctx.initiator_name), (base64.b64encode(out).decode() if out else None)


def _acceptor_creds(gssapi: Any, keytab: str) -> Any:
    """Acceptor credentials for every key in ``keytab`` (any host of the service)."""
    if keytab and not os.access(keytab, os.R_OK):
        raise ConfigError("the Kerberos keytab (KerberosAuthenticator.keytab) is missing "
                          "or not readable by the gateway")
    store = {"keytab": keytab} if keytab else None
    try:
        return gssapi.Credentials(usage="accept", store=store)
    except gssapi.exceptions.GSSError as err:
        raise ConfigError("the gateway cannot use its Kerberos keytab "
                          "(KerberosAuthenticator.keytab)") from err


def _check_service(acceptor: str, service: str) -> None:
    """Refuse a ticket whose server principal is not ``<service>/<host>@REALM``."""
    primary, slash, _ = acceptor.partition("/")
    if not slash or primary != service:
        raise Unauthorized(f"the Kerberos ticket is not for the {service} service")


def principal_to_user(principal: str, realms: set[str], *, allow_instance: bool = False) -> str:
    """The user name of a Kerberos principal from an accepted realm.

    ``alice@REALM`` gives ``alice`` when REALM is in ``realms`` (exact, case-sensitive
    match). A principal with an instance (``HTTP/host@REALM``, ``alice/admin@REALM``)
    is refused unless ``allow_instance``, which gives ``primary/instance``. Names
    with escapes or unusual characters are refused, since the result names the
    account kernels run as. Raises Unauthorized otherwise.
    """
    name, at, realm = principal.rpartition("@")
    if not at or not realm:
        raise Unauthorized("the Kerberos principal has no realm")
    if realm not in realms:
        raise Unauthorized(f"principals of the Kerberos realm {realm!r} are not accepted here")
    primary, slash, instance = name.partition("/")
    if slash and not allow_instance:
        raise Unauthorized("service principals (with an instance, such as HTTP/host) "
                           "may not sign in here")
    parts = [primary, instance] if slash else [primary]
    if not all(_NAME_PART.fullmatch(part) for part in parts):
        raise Unauthorized("the Kerberos principal's name is not a valid user name")
    return name


def default_realm() -> str:
    """The default realm of the Kerberos configuration (``KRB5_CONFIG``). Blocking."""
    gssapi = _gssapi()
    try:
        name = gssapi.Name("x", gssapi.NameType.kerberos_principal)
        realm = str(name.canonicalize(gssapi.MechType.kerberos)).rpartition("@")[2]
    except gssapi.exceptions.GSSError as err:
        raise ConfigError("no default Kerberos realm: set default_realm in krb5.conf "
                          "or KerberosAuthenticator.realms") from err
    if not realm:
        raise ConfigError("no default Kerberos realm: set default_realm in krb5.conf "
                          "or KerberosAuthenticator.realms")
    return realm


def negotiate_header(host: str, service: str = "HTTP") -> str:
    """``Negotiate <b64>`` for calling the Kerberized server ``<service>/<host>``.

    The client side, for kernelyard's own calls (the YARN RM's REST API). It uses
    the process's default credential cache (``KRB5CCNAME``), which something
    outside this function keeps fresh (``kinit -k -t``, ``k5start``). ``host`` is
    the host part of the server's principal, so no DNS canonicalisation is done
    here; pass the name the keytab on the server uses. The token is a SPNEGO
    initial token; mutual authentication is not checked (one request, one token).

    Raises ConfigError when there is no valid ticket or no ticket can be had for
    the service. Blocking: call it in a thread.
    """
    gssapi = _gssapi()
    target = gssapi.Name(f"{service}@{host}", gssapi.NameType.hostbased_service)
    try:
        ctx = gssapi.SecurityContext(name=target, usage="initiate",
                                     creds=gssapi.Credentials(usage="initiate"),
                                     mech=gssapi.OID.from_int_seq(SPNEGO_OID))
        token = ctx.step()
    except (gssapi.exceptions.MissingCredentialsError,
            gssapi.exceptions.ExpiredCredentialsError) as err:
        raise ConfigError("no valid Kerberos ticket in the gateway's credential cache "
                          "(KRB5CCNAME): run kinit, or renew it from a keytab") from err
    except gssapi.exceptions.GSSError as err:
        raise ConfigError(f"cannot get a Kerberos ticket for {service}/{host}: "
                          f"{_gss_reason(err)}") from err
    return "Negotiate " + base64.b64encode(token).decode()


def _gss_reason(err: Exception) -> str:
    """GSSAPI's own words for a client-side failure (names, never secrets)."""
    text = str(err)
    minor = text.rpartition("Minor (")[2].partition("): ")[2]
    return minor or text
