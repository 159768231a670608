"""The network backend: model, training, shipped weights, tiled inference (see backend.py)."""
