"""napari-dpfocus: dual-pixel defocus analysis and refocusing (Qt-free core)."""

__version__ = "0.1.0"
