"""gRPC transport: the only layer that imports grpc or the generated stubs."""
