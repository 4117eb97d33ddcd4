"""hgen.edge_agent: camera to fused answer on the device (no TensorFlow)."""
