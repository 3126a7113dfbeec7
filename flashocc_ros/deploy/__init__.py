"""Deployment: ONNX export of the network split at the calibration-dependent BEV pooling.
In: a FlashOCC model + its ModelConfig. Out: two ONNX graphs + metadata, and checks on them.

`onnx_export` writes graph A (images -> depth, context) and graph B (BEV -> logits) with a JSON
metadata file; `trt_ops` checks those graphs against TensorRT 10's ONNX operator support. The
runtime side is `flashocc_ros.runtime.onnx_backend`; see docs/deployment.md.
"""
