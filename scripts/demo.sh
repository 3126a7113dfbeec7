#!/usr/bin/env bash
# The demo, for now: a synthetic 200 x 200 x 16 Occupancy grid crosses real DDS (Fast DDS)
# from one process to two others: the installed `occupancy_echo` executable prints it, and a
# checker compares every field with what was sent. Run after scripts/setup.sh (`make demo`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
source scripts/env.sh

export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 90 + 10))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset ROS_LOCALHOST_ONLY
TOPIC=/flashocc_demo/occupancy
ECHO="$ROOT/install/flashocc_ros/lib/flashocc_ros/occupancy_echo"
SEED="${DEMO_SEED:-7}"

echo "demo: ROS 2 Jazzy (rclpy from PyPI wheels), RMW ${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}," \
    "domain $ROS_DOMAIN_ID, discovery $ROS_AUTOMATIC_DISCOVERY_RANGE"
echo "demo: process 1 = occupancy_echo (installed executable), topic $TOPIC"
"$ECHO" --count 1 --timeout 60 --ros-args -r "~/input/occupancy:=$TOPIC" &
ECHO_PID=$!
echo "demo: process 2 = receiver that checks every field (scripts/dds_check.py receive)"
python scripts/dds_check.py receive --topic "$TOPIC" --seed "$SEED" --timeout 60 &
RECV_PID=$!
cleanup() { kill "$ECHO_PID" "$RECV_PID" 2>/dev/null || true; }
trap cleanup EXIT
echo "demo: process 3 = publisher of one seeded Occupancy grid (scripts/dds_check.py publish)"
python scripts/dds_check.py publish --topic "$TOPIC" --seed "$SEED" --subscribers 2 \
    --timeout 60 --linger 10 || { echo "demo: FAILED: publisher" >&2; exit 1; }
status=0
wait "$ECHO_PID" || { echo "demo: FAILED: occupancy_echo exited $?" >&2; status=1; }
wait "$RECV_PID" || { echo "demo: FAILED: receiver exited $?" >&2; status=1; }
trap - EXIT
if [[ $status -eq 0 ]]; then
    echo "demo: OK: the grid crossed DDS between separate processes with every field intact"
fi
exit "$status"
