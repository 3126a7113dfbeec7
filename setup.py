"""pip install of the pure-Python part (the model, runtime, tools; no ROS messages).

For library users: `pip install .` gives `import flashocc_ros.config`, the model and the
offline tools. The ROS 2 package (messages, node executables, launch files) is built by colcon
from CMakeLists.txt instead; `scripts/setup.sh` does that for this checkout.
"""

from __future__ import annotations

from setuptools import find_packages, setup

setup(
    name="flashocc_ros",
    version="0.1.0",
    description="FlashOCC camera-only 3D semantic occupancy (ROS-free core of flashocc_ros)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["flashocc_ros", "flashocc_ros.*"]),
    package_data={"flashocc_ros": ["py.typed", "**/*.yaml", "**/*.json", "weights/*"]},
    # Loose on purpose: requirements.txt pins the versions this project is tested with.
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "pyyaml>=6",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "safetensors>=0.4",
        "pillow>=10",
        "tqdm>=4.60",
    ],
    extras_require={"onnx": ["onnx>=1.15", "onnxruntime>=1.17"]},
)
