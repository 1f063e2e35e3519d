"""The Open Inference Protocol over gRPC:

server.py    the grpc.aio server on IMGCLS_GRPC_PORT, its options and handler table
calls.py     the frame every call runs in: method label, request id, errors, metrics
auth.py      the bearer-token interceptor (refuses before any of the message is read)
receive.py   how a request message is read: only when asked, a turn at a time
servicer.py  the methods, on the protocol's engine (service/oip/)
"""
