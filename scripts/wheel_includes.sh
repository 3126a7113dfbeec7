#!/usr/bin/env bash
# Make the include folders named by the ROS 2 wheels' CMake exports exist (a defect of the wheels).
# In: a Python environment holding the ros-jazzy-* wheels. Out: links under /opt/python/cp3XX-cp3XX/
# to that Python's headers and numpy's headers; prints the numpy link (for -DPython3_NumPy_...).
#
# Usage: scripts/wheel_includes.sh VENV_PREFIX
# The message packages' exports (share/*/cmake/*Export.cmake) name the folders of the machine the
# wheels were built on (/opt/python/cp311-cp311/include/python3.11, .../numpy/_core/include; the
# same under cp312-cp312 for 3.12). CMake refuses targets whose include folders do not exist.
# A link that resolves is left alone (another checkout made it), unless it leads to numpy headers
# of another ABI (numpy 1.x vs 2): a message package compiled against numpy 1.x headers does not
# import under numpy 2, so such a link is re-pointed (headers are read at build time only).
# Used by scripts/setup.sh and .ci/workspace; an apt ROS 2 does not need it.
set -euo pipefail
PREFIX="${1:?usage: wheel_includes.sh VENV_PREFIX}"
PY="$PREFIX/bin/python"
say() { printf 'include-paths: %s\n' "$*" >&2; }
die() { printf 'include-paths: FAILED: %s\n' "$*" >&2; exit 1; }
numpy_abi() { # numpy_abi INCLUDE_DIR -> "0x02000000" (empty for Python's own include folder)
    grep -ho 'NPY_ABI_VERSION 0x[0-9a-fA-F]*' "$1/numpy/_numpyconfig.h" 2>/dev/null || true
}

PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
PY_VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
NP_INC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
[[ -f "$PY_INC/Python.h" ]] || die "no Python.h in $PY_INC (Debian: apt-get install python$PY_VER-dev)"
WANTED="$(grep -ho '/opt/python/cp3[0-9]*-cp3[0-9]*/[^;" ]*include[^;" ]*' \
    "$PREFIX"/share/*/cmake/*.cmake 2>/dev/null | sort -u || true)"
NP_LINK=""
for path in $WANTED; do
    case "$path" in
        */numpy/_core/include) target="$NP_INC" NP_LINK="$path" ;;
        */include/python3.*) target="$PY_INC" ;;
        *) die "unexpected include folder $path in the wheels' CMake exports" ;;
    esac
    if [[ -e "$path" && "$(numpy_abi "$path")" == "$(numpy_abi "$target")" ]]; then
        continue
    fi
    say "linking $path -> $target"
    if ! { mkdir -p "$(dirname "$path")" && ln -sfn "$target" "$path"; } 2>/dev/null; then
        [[ -e "$path" ]] && { say "cannot re-point $path (kept: $(readlink -f "$path"))"; continue; }
        die "cannot create $path (needs write access to /opt; run once as root:
    sudo mkdir -p $(dirname "$path") && sudo ln -sfn $target $path)"
    fi
done
echo "${NP_LINK:-$NP_INC}"
