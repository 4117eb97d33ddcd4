"""Transports that carry hgen.v1 messages between devices and the hub: gRPC and MQTT."""
