#!/usr/bin/env bash
# Install what the end-to-end tests (tests/e2e) need, on Debian 12 as root.
# Idempotent: each step is skipped when its result is already there.
#
#   - Debian's Chromium (/usr/bin/chromium), driven headless by playwright-core
#     (Playwright's own browser download cannot be used here);
#   - JupyterLab 4 (brings jupyter_server), the real clients of kernelyard;
#   - playwright-core into ci/e2e/node_modules, pinned by package-lock.json.
#
# Env: PYTHON (default: python3) is the interpreter the tests run with.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

log() { printf '[e2e-install] %s\n' "$*"; }

# --- Chromium --------------------------------------------------------------
if [ -x /usr/bin/chromium ]; then
    log "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "ci/e2e/install.sh: installing chromium needs root (apt-get)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when they are missing or do not know chromium.
    if ! apt-cache show chromium >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -qq
    fi
    log "apt-get install chromium"
    if ! apt-get install -y -qq --no-install-recommends chromium; then
        # Stale lists (a package version gone from the mirror): refresh once and retry.
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium
    fi
    /usr/bin/chromium --version
fi

# --- JupyterLab 4 ----------------------------------------------------------
if "$PYTHON" - <<'EOF' 2>/dev/null
import sys
import jupyterlab
import jupyter_server
sys.exit(0 if int(jupyterlab.__version__.split(".")[0]) == 4 else 1)
EOF
then
    log "jupyterlab: present ($("$PYTHON" -c 'import jupyterlab; print(jupyterlab.__version__)'))"
else
    log "pip install jupyterlab 4"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check 'jupyterlab>=4,<5'
fi

# --- playwright-core -------------------------------------------------------
if ! command -v npm >/dev/null 2>&1; then
    echo "ci/e2e/install.sh: npm (Node 20) is required and was not found" >&2
    exit 1
fi
wanted="$(cd "$here" && node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')"
have="$(cd "$here" && node -p 'try { require("./node_modules/playwright-core/package.json").version } catch (e) { "" }')"
if [ "$have" = "$wanted" ]; then
    log "playwright-core: present ($have)"
else
    log "npm ci (playwright-core $wanted)"
    # No browser download: Playwright drives Debian's /usr/bin/chromium.
    (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

log "done"
