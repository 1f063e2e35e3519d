"""The Open Inference Protocol over gRPC: the grpc.aio server, the servicer and its bearer-token
interceptor."""
