"""ROS-free building blocks of the node: camera sync, TF buffer, image decoding, voxel outputs.
In: plain Python/numpy data from callbacks. Out: bundles, transforms, BGR images, voxel arrays.
"""
