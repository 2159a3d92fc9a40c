#!/usr/bin/env bash
# Install what the private Kerberos KDC and kernelyard's [kerberos] extra need, idempotently:
#   1. Debian's MIT Kerberos: krb5-kdc, krb5-admin-server (kadmin.local), krb5-user
#      (kinit, klist) and libkrb5-dev (headers and krb5-config, to build gssapi);
#   2. the python gssapi package into $KY_KDC_PYTHON's environment, from a wheel built
#      once (PyPI has only an sdist for Linux; it compiles against libkrb5-dev);
#   3. requests-gssapi, the SPNEGO client the tests sign in with (it needs gssapi, so it
#      is installed here and not with the [test] extra, which pip installs before this);
#   4. checks that curl can do SPNEGO (curl --negotiate), as the tests use it too.
# Usage: bash ci/kdc/install.sh         (as root: it runs apt-get)
# Env:   KY_KDC_PYTHON  Python to install gssapi into (default: the active venv's, else
#                       the repo's .venv, else python3 on PATH)
#        KY_KDC_WHEELS  wheel cache (default: ~/.cache/kernelyard/wheels)
#
# The packages' own debconf questions are answered for a private realm. Their init
# scripts start nothing here (no realm database in /etc/krb5kdc), and nothing in this
# directory reads /etc/krb5.conf: start.sh writes its own krb5.conf and kdc.conf.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
gssapi_version=1.12.0
requests_gssapi_version=1.4.0
default_python=python3
if [ -n "${VIRTUAL_ENV:-}" ]; then
  default_python=$VIRTUAL_ENV/bin/python
elif [ -x "$repo/.venv/bin/python" ]; then
  default_python=$repo/.venv/bin/python
fi
python=${KY_KDC_PYTHON:-$default_python}
wheels=${KY_KDC_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/kernelyard/wheels}
packages=(krb5-kdc krb5-admin-server krb5-user libkrb5-dev)

t0=$SECONDS
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (apt)"
  debconf-set-selections <<'SEL'
krb5-config krb5-config/default_realm string KERNELYARD.TEST
krb5-config krb5-config/kerberos_servers string 127.0.0.1
krb5-config krb5-config/admin_server string 127.0.0.1
krb5-config krb5-config/add_servers_realm string KERNELYARD.TEST
krb5-config krb5-config/add_servers boolean false
krb5-config krb5-config/read_conf boolean true
krb5-admin-server krb5-admin-server/newrealm note
krb5-kdc krb5-kdc/debconf boolean false
SEL
  log=$(mktemp)
  # Another engineer's apt run may hold the lock: wait for it rather than fail.
  apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 "$@"; }
  if ! { apt_get install --no-install-recommends "${missing[@]}" > "$log" 2>&1 ||
         { apt_get update > "$log" 2>&1 &&
           apt_get install --no-install-recommends "${missing[@]}" > "$log" 2>&1; }; }; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "apt-get install ${missing[*]} failed" >&2
    exit 1
  fi
  rm -f "$log"
fi
echo "krb5 $(dpkg-query -W -f='${Version}' krb5-kdc) packages ($((SECONDS - t0)) s)"

t0=$SECONDS
installed=$("$python" -c 'import importlib.metadata as m; print(m.version("gssapi"))' 2>/dev/null || true)
if [ "$installed" != "$gssapi_version" ]; then
  if ! ls "$wheels"/gssapi-"$gssapi_version"-*.whl >/dev/null 2>&1; then
    echo "building the gssapi $gssapi_version wheel into $wheels (once, about 2 minutes)"
    mkdir -p "$wheels"
    "$python" -m pip wheel -q --no-deps "gssapi==$gssapi_version" -w "$wheels"
  fi
  # gssapi's one runtime dependency (decorator) is pure Python and comes from PyPI.
  "$python" -m pip install -q --root-user-action=ignore --find-links "$wheels" \
    "gssapi==$gssapi_version"
fi
"$python" -c 'import gssapi' || { echo "gssapi does not import in $python" >&2; exit 1; }
echo "gssapi $gssapi_version for $python ($((SECONDS - t0)) s)"

t0=$SECONDS
installed=$("$python" -c 'import importlib.metadata as m; print(m.version("requests-gssapi"))' \
  2>/dev/null || true)
if [ "$installed" != "$requests_gssapi_version" ]; then
  "$python" -m pip install -q --root-user-action=ignore --find-links "$wheels" \
    "gssapi==$gssapi_version" "requests-gssapi==$requests_gssapi_version"
fi
"$python" -c 'import requests_gssapi' || { echo "requests-gssapi does not import" >&2; exit 1; }
echo "requests-gssapi $requests_gssapi_version for $python ($((SECONDS - t0)) s)"
if ! curl -V 2>/dev/null | grep -q '^Features:.*SPNEGO'; then
  echo "installing curl (apt): the tests run curl --negotiate"
  curl_apt() { DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 "$@"; }
  curl_apt install --no-install-recommends curl libcurl4 > /dev/null 2>&1 ||
    { curl_apt update > /dev/null && curl_apt install --no-install-recommends curl libcurl4 > /dev/null; }
  curl -V | grep -q '^Features:.*SPNEGO' || { echo "curl has no SPNEGO support" >&2; exit 1; }
fi
