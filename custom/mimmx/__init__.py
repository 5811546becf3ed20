"""MIMM-X: multi-factor mutual information minimisation for shortcut-free medical image classification."""

__version__ = "0.1.0"
