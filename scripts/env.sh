# Source me (bash): the project's venv plus the built package, as scripts/setup.sh made them.
#   source scripts/env.sh
# Afterwards `python`, `colcon`, `pytest` are the venv's, `from flashocc_ros.msg import Occupancy`
# works, and so does `from tf2_msgs.msg import TFMessage`: the real one from the ROS 2 tools in
# .venv/ros2-kit (with `ros2 launch`, launch_testing, tf2_ros, ...) where setup built them, else
# the test shim in install_test/. Never both: their C libraries clash.
_flashocc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -x "$_flashocc_root/.venv/bin/python" || ! -f "$_flashocc_root/install/setup.bash" ]]; then
    echo "env.sh: $_flashocc_root is not set up; run scripts/setup.sh (or make setup) first" >&2
    unset _flashocc_root
    return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
VIRTUAL_ENV_DISABLE_PROMPT="${VIRTUAL_ENV_DISABLE_PROMPT:-1}" \
    source "$_flashocc_root/.venv/bin/activate"
case ":${AMENT_PREFIX_PATH:-}:" in
    *":$VIRTUAL_ENV:"*) ;;
    *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
case ":${CMAKE_PREFIX_PATH:-}:" in
    *":$VIRTUAL_ENV:"*) ;;
    *) export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;;
esac
# colcon's setup scripts reference unset variables; tolerate a caller's `set -u`.
_flashocc_nounset="$(set +o | grep nounset)"
set +u
if [[ -f "$VIRTUAL_ENV/ros2-kit/setup.bash" ]]; then
    # shellcheck disable=SC1091
    source "$VIRTUAL_ENV/ros2-kit/setup.bash"
elif [[ -f "$_flashocc_root/install_test/setup.bash" ]]; then
    # shellcheck disable=SC1091
    source "$_flashocc_root/install_test/setup.bash"
fi
# shellcheck disable=SC1091
source "$_flashocc_root/install/setup.bash"
eval "$_flashocc_nounset"
unset _flashocc_root _flashocc_nounset
