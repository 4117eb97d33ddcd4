"""hgen.protos: the wire format (protobuf messages and the gRPC service), package `hgen.v1`."""
