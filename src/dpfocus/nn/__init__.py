"""The network backend: model, training, shipped weights, tiled inference (see backend.py)."""

from pathlib import Path

#: the shipped weights; the ``network`` backend is offered when this file exists
WEIGHTS_PATH = Path(__file__).parent / "weights" / "dpkernelnet.pt"
