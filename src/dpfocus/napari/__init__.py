"""napari integration: thin wrappers that turn core results into layers (Qt lives only here)."""
