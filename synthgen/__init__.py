"""synthgen: bulk synthetic faces from an adversarial autoencoder, served from a Redis job queue."""

__version__ = "0.1.0"
