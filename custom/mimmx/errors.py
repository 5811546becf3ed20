"""Errors that name the offending file, row or config id, so a user can fix input without reading code."""


class MimmxError(Exception):
    """Base class of every error raised on bad user input."""


class ConfigError(MimmxError, ValueError):
    """A bundle config value is missing or malformed; the message names the config id."""


class DataError(MimmxError, ValueError):
    """A cohort table, data list or image is unusable; the message names the file and row."""


class SplitError(DataError):
    """A split cannot be built as requested (for example a bucket too small for the requested rho)."""


class TrainingError(MimmxError, RuntimeError):
    """Training cannot go on (for example a NaN loss); the message names the iteration."""


class CheckpointError(MimmxError, RuntimeError):
    """A model or checkpoint file is missing, altered (SHA-256 mismatch) or does not fit the configured network."""


class InputRejected(DataError):
    """An image is outside what the bundle scores (wrong modality, SOP class, geometry); the message says why."""
