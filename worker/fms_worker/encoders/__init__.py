"""Encoder models (embed, classify): pure modules, loader, dynamic batcher and the service that ties them."""
