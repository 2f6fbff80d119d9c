"""The contract every layer shares: what an image is, what a model package is, what a job's states are.

Training (``aae``), export (``export``), the service (``service``) and the client all import these
modules, and these modules import none of them, nor torch, Redis, FastAPI or onnx: numpy, Pillow and
jsonschema only. A change here is a change of the product's contract.
"""
