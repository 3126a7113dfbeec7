"""The node layer: the only package that imports rclpy and ROS message types.
In: ROS messages and parameters. Out: ROS messages built from the ROS-free core's numpy outputs.
"""
