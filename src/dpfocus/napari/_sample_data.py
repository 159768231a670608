"""Sample-data contributions (File > Open Sample > DP Focus)."""

from __future__ import annotations

from ..samples import load_sample
from ._layers import pair_layer_data


def _sample(name: str):
    return pair_layer_data(load_sample(name))


def garden():
    return _sample("garden")


def workshop():
    return _sample("workshop")


def gallery():
    return _sample("gallery")


def microscope():
    return _sample("microscope")
