"""The adversarial autoencoder: model, priors, data and training."""
