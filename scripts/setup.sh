#!/usr/bin/env bash
# One setup step: .venv with pinned packages, the CMake include-path workaround, colcon build.
# In: this checkout and a Python 3.11. Out: .venv/, build/ install/ log/ (and, where tf2_msgs is
# missing, build_test/ install_test/ log_test/ with a tf2_msgs test shim). Idempotent: a second
# run with nothing changed takes about a second. Non-interactive (no stdin needed, CI=true fine).
#
# Environment: PYTHON (interpreter for the venv, default python3.11 or python3),
#              FLASHOCC_SETUP_FORCE=1 (ignore the stamps and redo every step).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STEP="start"
# Stamps live inside what they describe, so deleting .venv or install/ also forgets the stamp.
VENV_STAMP="$VENV/.flashocc_setup_stamp"
BUILD_STAMP="$ROOT/install/.flashocc_build_stamp"
SHIM_STAMP="$ROOT/install_test/.flashocc_build_stamp"

log() { printf 'setup: %s\n' "$*"; }
fail() {
    printf 'setup: FAILED in step "%s": %s\n' "$STEP" "$*" >&2
    exit 1
}
trap 'rc=$?; printf "setup: FAILED in step \"%s\" (exit %s, line %s: %s)\n" \
    "$STEP" "$rc" "$LINENO" "$BASH_COMMAND" >&2; exit "$rc"' ERR

hash_of() { # hash_of FILE... -> one sha256 over names and contents
    sha256sum "$@" | sha256sum | cut -c1-32
}
stamp_ok() { # stamp_ok FILE HASH
    [[ -z "${FLASHOCC_SETUP_FORCE:-}" && -f "$1" && "$(cat "$1")" == "$2" ]]
}
source_quietly() { # colcon's setup.bash does not like `set -u`
    set +u
    # shellcheck disable=SC1090
    source "$1"
    set -u
}

# --- 1. virtual environment with pinned packages ------------------------------------------------
STEP="venv"
REQ_FILES=(requirements.txt requirements-dev.txt requirements-typing.txt)
for f in "${REQ_FILES[@]}"; do [[ -f "$f" ]] || fail "missing $f"; done
REQ_HASH="$(hash_of "${REQ_FILES[@]}")"
if stamp_ok "$VENV_STAMP" "$REQ_HASH" && "$VENV/bin/python" -c "" 2>/dev/null; then
    log "venv: up to date ($VENV)"
else
    PY="${PYTHON:-}"
    if [[ -z "$PY" ]]; then
        PY="$(command -v python3.11 || command -v python3 || true)"
    fi
    [[ -n "$PY" ]] || fail "no python3 found (set PYTHON=/path/to/python3.11)"
    PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ||
        fail "$PY does not run"
    [[ "$PYVER" == "3.11" ]] ||
        fail "$PY is Python $PYVER; the pinned ROS 2 wheels are built for CPython 3.11"
    rm -f "$VENV_STAMP"
    if [[ -d "$VENV" ]] && ! "$VENV/bin/python" -c "" 2>/dev/null; then
        log "venv: $VENV is broken, recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "venv: creating $VENV with $PY ($PYVER)"
        "$PY" -m venv "$VENV" || fail "python -m venv failed (Debian: apt-get install python3-venv)"
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    PIP_LOG="$VENV/setup-pip.log"
    log "venv: installing pinned packages (requirements-dev.txt, includes requirements.txt)"
    if ! "$VENV/bin/python" -m pip install -r requirements-dev.txt >"$PIP_LOG" 2>&1 </dev/null
    then
        grep -v -e "^WARNING: Location" -e "^Requirement already satisfied" "$PIP_LOG" |
            tail -n 30 >&2 || true
        fail "pip install -r requirements-dev.txt failed (full output: $PIP_LOG)"
    fi
    # Stub packages only, without their dependencies (a stub package may declare the real
    # library, e.g. TensorRT, whose install downloads from an index we cannot reach).
    if ! "$VENV/bin/python" -m pip install --no-deps -r requirements-typing.txt \
        >>"$PIP_LOG" 2>&1 </dev/null; then
        grep -v -e "^WARNING: Location" -e "^Requirement already satisfied" "$PIP_LOG" |
            tail -n 30 >&2 || true
        fail "pip install --no-deps -r requirements-typing.txt failed (full output: $PIP_LOG)"
    fi
    # tensorrt-stubs was pinned here before; its stub-only `tensorrt/` folder imports as an
    # empty namespace package and its stubs do not parse under mypy (typings/ replaces them).
    if "$VENV/bin/python" -m pip show tensorrt-stubs >/dev/null 2>&1 </dev/null; then
        log "venv: removing tensorrt-stubs (replaced by typings/tensorrt)"
        "$VENV/bin/python" -m pip uninstall -y tensorrt-stubs >>"$PIP_LOG" 2>&1 </dev/null ||
            fail "pip uninstall tensorrt-stubs failed (full output: $PIP_LOG)"
    fi
    "$VENV/bin/python" -m pip check >/dev/null 2>&1 ||
        log "venv: note: pip check reports issues (see pip check)"
    echo "$REQ_HASH" >"$VENV_STAMP"
    log "venv: ready"
fi

# Build environment: the ROS 2 wheels put their CMake packages under the venv prefix.
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
PYTHON_BIN="$VENV/bin/python"

# --- 2. CMake include-path workaround -----------------------------------------------------------
# The message packages' CMake exports (share/*/cmake/*Export.cmake) name the include folders of
# the machine the wheels were built on, under /opt/python/cp311-cp311/. CMake refuses targets
# whose include folders do not exist, so make them exist as links to this Python's headers
# and numpy's headers. A link that already resolves is left alone (another checkout made it).
STEP="include-paths"
PY_INC="$("$PYTHON_BIN" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$PYTHON_BIN" -c 'import numpy; print(numpy.get_include())')"
[[ -f "$PY_INC/Python.h" ]] ||
    fail "no Python.h in $PY_INC (Debian: apt-get install python3.11-dev)"
WANTED="$(grep -ho '/opt/python/cp311-cp311/[^;" ]*include[^;" ]*' \
    "$VENV"/share/*/cmake/*.cmake 2>/dev/null | sort -u || true)"
for path in $WANTED; do
    case "$path" in
        */numpy/_core/include) target="$NP_INC" ;;
        */include/python3.11) target="$PY_INC" ;;
        *) fail "unexpected include folder $path in the wheels' CMake exports" ;;
    esac
    if [[ -e "$path" ]]; then
        continue
    fi
    log "include-paths: linking $path -> $target"
    if ! { mkdir -p "$(dirname "$path")" && ln -sfn "$target" "$path"; } 2>/dev/null; then
        fail "cannot create $path (needs write access to /opt; run once as root:
    sudo mkdir -p $(dirname "$path") && sudo ln -sfn $target $path)"
    fi
done

# --- 3. colcon build of this package ------------------------------------------------------------
# Keyed on everything that shapes the install tree: build files, the message, the list of
# installed files. With --symlink-install the Python files are links into the checkout, so
# editing one needs no rebuild; adding or removing one does (the file list is in the hash).
STEP="colcon-build"
build_inputs() {
    printf '%s\n' package.xml CMakeLists.txt msg/*.msg
    find flashocc_ros scripts/ros launch config -type f ! -path '*/__pycache__/*' \
        ! -name '*.pyc' 2>/dev/null | sort
}
BUILD_HASH="$( { build_inputs; cat package.xml CMakeLists.txt msg/*.msg; echo "$REQ_HASH"; } |
    sha256sum | cut -c1-32)"
# numpy's headers are named through the /opt link made above: the venv lies inside this
# package's source folder, and CMake refuses exported include folders inside the source tree.
NP_LINK="$(printf '%s\n' $WANTED | grep '/numpy/_core/include$' | head -n 1)"
[[ -n "$NP_LINK" && -e "$NP_LINK" ]] || NP_LINK="$NP_INC"
COLCON_ARGS=(--event-handlers console_direct- --cmake-args
    "-DPython3_EXECUTABLE=$PYTHON_BIN" "-DPython3_NumPy_INCLUDE_DIR=$NP_LINK"
    -DBUILD_TESTING=OFF -Wno-dev)
if stamp_ok "$BUILD_STAMP" "$BUILD_HASH" && [[ -f install/setup.bash ]]; then
    log "colcon: flashocc_ros up to date (install/)"
else
    rm -f "$BUILD_STAMP"
    log "colcon: building flashocc_ros into build/ install/ (log/ has the full output)"
    mkdir -p log
    if ! colcon build --symlink-install --base-paths "$ROOT" "${COLCON_ARGS[@]}" \
        >"$ROOT/log/setup-colcon.txt" 2>&1 </dev/null; then
        tail -n 40 "$ROOT/log/setup-colcon.txt" >&2 || true
        fail "colcon build of flashocc_ros failed (full output: log/setup-colcon.txt)"
    fi
fi

# --- 4. tf2_msgs test shim (only where no real tf2_msgs exists) ---------------------------------
STEP="tf2_msgs-shim"
SHIM_HASH="$(hash_of test/support/tf2_msgs/package.xml test/support/tf2_msgs/CMakeLists.txt \
    test/support/tf2_msgs/msg/*.msg)"
if [[ -f install_test/setup.bash ]] && stamp_ok "$SHIM_STAMP" "$SHIM_HASH"; then
    log "tf2_msgs: test shim up to date (install_test/)"
elif "$PYTHON_BIN" -c "import tf2_msgs.msg" >/dev/null 2>&1; then
    log "tf2_msgs: using the installed tf2_msgs"
else
    rm -f "$SHIM_STAMP"
    log "tf2_msgs: not installed; building the test shim into build_test/ install_test/"
    mkdir -p log_test
    if ! colcon --log-base log_test build --base-paths test/support/tf2_msgs \
        --build-base build_test --install-base install_test "${COLCON_ARGS[@]}" \
        >log_test/setup-colcon.txt 2>&1 </dev/null; then
        tail -n 40 log_test/setup-colcon.txt >&2 || true
        fail "colcon build of the tf2_msgs shim failed (full output: log_test/setup-colcon.txt)"
    fi
    echo "$SHIM_HASH" >"$SHIM_STAMP"
fi

# --- 5. check the result the way users import it ------------------------------------------------
STEP="import-check"
if ! stamp_ok "$BUILD_STAMP" "$BUILD_HASH"; then
    # Fresh interpreter outside the checkout, environment as scripts/env.sh makes it.
    if ! (cd / && env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE bash -c \
        'source "$1/scripts/env.sh" && python -c "
from flashocc_ros.msg import Occupancy
import flashocc_ros.config
from tf2_msgs.msg import TFMessage
assert Occupancy().LAYOUT_XYZ_Z_FASTEST == 0 and hasattr(TFMessage(), \"transforms\")
"' _ "$ROOT"); then
        fail "the built package does not import (flashocc_ros.msg, flashocc_ros.config, tf2_msgs)"
    fi
    echo "$BUILD_HASH" >"$BUILD_STAMP"
    log "colcon: built; flashocc_ros.msg, flashocc_ros.config and tf2_msgs.msg import"
fi
log "done. Use it with: source scripts/env.sh"
