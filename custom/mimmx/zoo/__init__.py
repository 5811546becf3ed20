"""Sharing a trained bundle: a self-contained model-zoo artefact generated from the one ``mimmx`` package."""

from mimmx.zoo.bundle import export_bundle, sha256

__all__ = ["export_bundle", "sha256"]
