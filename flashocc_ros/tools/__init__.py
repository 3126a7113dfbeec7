"""Command-line tools (ROS-free)."""
