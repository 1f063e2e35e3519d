"""The Open Inference Protocol v2 (KServe's V2 protocol, as Triton and OpenVINO Model Server
speak it) on the service's one data plane, over REST (service/http/v2.py) and gRPC.

    plane.py        what the protocol needs from the Classifier (logits, labels, readiness)
    errors.py       the protocol's own errors (unknown model or version)
    tensors.py      tensor values: datatypes, shapes, raw bytes and JSON lists, both ways
    metadata.py     server and model metadata, and which model/version a request names
    engine.py       one inference request, transport-neutral: inputs -> images -> outputs
    schemas.py      the REST JSON bodies (requests: msgspec, data kept as JSON text)
    rest_codec.py   the REST wire: JSON tensors and Triton's binary tensor extension

The transports are service/http/v2.py and service/grpc/.
"""
