#!/usr/bin/env bash
# Create the benchmark venvs under bench/.venvs/ (idempotent; pip downloads are cached).
#
#   bash bench/setup.sh [REPO_ROOT]
#
# kernelyard  kernelyard from REPO_ROOT (editable) + ipykernel + the benchmark client deps;
#             bench/run.py runs in this venv, and so does the direct ipykernel baseline
# jkg         jupyter_kernel_gateway==3.0.1 + ipykernel
# eg          jupyter_enterprise_gateway==3.3.0 + ipykernel (pip resolves its old pins)
#
# Env: PYTHON (interpreter for the venvs, default python3.11 or python3),
#      BENCH_WHEEL_CACHE (where downloaded wheels are kept, default bench/.venvs/.wheels;
#      later runs download only what is missing there).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${1:-$BENCH/..}" && pwd)"
VENVS="$BENCH/.venvs"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
WHEELS="${BENCH_WHEEL_CACHE:-$VENVS/.wheels}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

mkdir -p "$VENVS" "$WHEELS"

# pip_install VENV_DIR SPEC...: download the specs (and their deps) into the wheel cache,
# skipping files already there, then install from the cache only. ("-e PATH" installs
# PATH editable; its build requirements are cached too.)
pip_install() {
    local py="$1/bin/python"
    shift
    local download=() spec
    for spec in "$@"; do
        [[ "$spec" == "-e" ]] || download+=("$spec")
    done
    "$py" -m pip download -q -d "$WHEELS" "${download[@]}" "setuptools>=68" wheel
    "$py" -m pip install -q --no-index --find-links "$WHEELS" "$@"
}

# make_venv NAME STAMP IMPORT_CHECK SPEC...
# Installs only when STAMP (what should be installed) changed or the import check fails.
make_venv() {
    local name="$1" stamp="$2" check="$3"
    shift 3
    local dir="$VENVS/$name"
    local stamp_file="$dir/.bench-stamp"
    if [[ -x "$dir/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] \
        && (cd / && "$dir/bin/python" -c "$check") 2>/dev/null; then
        echo "[setup] $name: up to date"
        return 0
    fi
    echo "[setup] $name: installing $*"
    rm -f "$stamp_file"
    [[ -x "$dir/bin/python" ]] || "$PYTHON" -m venv "$dir"
    if ! pip_install "$dir" "$@"; then
        echo "[setup] $name: pip install FAILED (see the error above)" >&2
        return 1
    fi
    (cd / && "$dir/bin/python" -c "$check")
    echo "$stamp" > "$stamp_file"
    echo "[setup] $name: ok"
}

pyproject_sum="$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)"
failed=()

make_venv kernelyard "kernelyard $REPO $pyproject_sum" \
    "import kernelyard, ipykernel, websocket, jupyter_client, zmq" \
    -e "$REPO" "ipykernel>=6.29" "websocket-client>=1.8" || failed+=(kernelyard)

make_venv jkg "jupyter_kernel_gateway==3.0.1" \
    "import kernel_gateway, ipykernel" \
    "jupyter_kernel_gateway==3.0.1" ipykernel || failed+=(jkg)

make_venv eg "jupyter_enterprise_gateway==3.3.0" \
    "import enterprise_gateway, ipykernel" \
    "jupyter_enterprise_gateway==3.3.0" ipykernel || failed+=(eg)

for name in kernelyard jkg eg; do
    py="$VENVS/$name/bin/python"
    [[ -x "$py" ]] || continue
    (cd / && "$py" - "$name") <<'EOF' || true
import importlib.metadata as md, sys
pkgs = ["kernelyard", "jupyter_kernel_gateway", "jupyter_enterprise_gateway",
        "jupyter_server", "jupyter_client", "ipykernel", "pyzmq", "tornado"]
found = []
for p in pkgs:
    try:
        found.append(f"{p}=={md.version(p)}")
    except md.PackageNotFoundError:
        pass
print(f"[setup] {sys.argv[1]}: " + " ".join(found))
EOF
done

if ((${#failed[@]})); then
    echo "[setup] FAILED: ${failed[*]} (bench/run.py skips targets whose venv is broken)" >&2
    exit 1
fi
echo "[setup] done"
