"""The serving side: ONNX decoder, Redis Streams queue, batching worker and FastAPI app (no torch)."""
