"""Peer services on the same harness: the write-up's architecture (flask_torchscript) and a
plain FastAPI + ONNX Runtime service (fastapi_ort). ``python -m bench.peers`` compares them
with the service."""
