#!/usr/bin/env bash
# Enterprise Gateway's own integration tests (enterprise_gateway/itests) and its test
# client, from EG's wheel on PyPI, for tests/e2e/test_eg_itests.py, which runs them
# unchanged against kernelyard. Only the wheel is downloaded (no dependencies: EG pins
# jupyter_server<2, which must not enter the venv); the itests need requests,
# websocket-client and tornado, which the test venv has. Cached: downloaded once.
# Prints the folder to put on PYTHONPATH (its enterprise_gateway/ holds client/, itests/).
set -euo pipefail
version=${KY_EG_VERSION:-3.3.0}
cache=${KY_EG_ITESTS_CACHE:-$HOME/.cache/kernelyard/eg-itests}
dest="$cache/$version"
python=${PYTHON:-python}
if [ ! -f "$dest/enterprise_gateway/itests/test_python_kernel.py" ]; then
  mkdir -p "$cache/wheels"
  wheel=$(ls "$cache/wheels"/jupyter_enterprise_gateway-"$version"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    "$python" -m pip download -q --no-deps --only-binary :all: \
      "jupyter_enterprise_gateway==$version" -d "$cache/wheels"
    wheel=$(ls "$cache/wheels"/jupyter_enterprise_gateway-"$version"-*.whl | head -1)
  fi
  tmp=$(mktemp -d "$cache/.unpack.XXXXXX")
  "$python" - "$wheel" "$tmp" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
keep = ("enterprise_gateway/__init__.py", "enterprise_gateway/_version.py",
        "enterprise_gateway/client/", "enterprise_gateway/itests/")
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith(keep)])
PY
  rm -rf "$dest"
  mv "$tmp" "$dest"
fi
echo "$dest"
