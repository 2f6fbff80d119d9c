"""torch checkpoint -> model package (ONNX decoder + manifest), checked against torch."""
