"""A built model: its manifest, loading and verification, the ONNX Runtime runner (the only
onnxruntime import), execution providers, the int8 weight file for this CPU and the number of
inference streams."""
