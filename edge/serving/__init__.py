"""Serving on the device: signed bundles, keys, ONNX Runtime and LiteRT runners, sensor sources, sinks and the device loop. May import edge.wire."""
