"""The Open Inference Protocol v2 (KServe's V2 protocol, as Triton and OpenVINO Model Server
speak it) on the service's one data plane, over REST (service/http/v2.py) and gRPC.

    plane.py        what the protocol needs from the Classifier (logits, labels, readiness)
    errors.py       the protocol's own errors (unknown model or version)
    tensors.py      tensor values: datatypes, shapes, raw bytes and JSON lists, both ways
    metadata.py     server and model metadata, and which model/version a request names
    engine.py       one inference request, transport-neutral: inputs -> images -> outputs
    schemas.py      the REST JSON bodies
    rest.py         the REST wire: JSON tensors and Triton's binary tensor extension
    grpc_service.py inference.GRPCInferenceService (tritonclient's generated definitions)
    grpc_server.py  the grpc.aio server on IMGCLS_GRPC_PORT: start, drain, stop
"""
