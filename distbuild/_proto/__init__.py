"""Generated protobuf and gRPC code (see scripts/gen-proto)."""
