#!/usr/bin/env bash
# The demo (`make demo` runs it after scripts/setup.sh): an unseen synthetic drive is rendered into
# a rosbag2, replayed over DDS into the real flashocc node with the shipped demo weights, and the
# node's occupancy is scored against the bag's ground truth. See flashocc_ros/tools/demo.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
source scripts/env.sh
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 90 + 10))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset ROS_LOCALHOST_ONLY
exec python -m flashocc_ros.tools.demo "$@"
