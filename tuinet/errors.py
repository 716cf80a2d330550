"""Errors that the command line reports as one clear line instead of a traceback."""


class TuinetError(Exception):
    """Base class for every error tuinet reports to the user as a single line."""


class DataError(TuinetError):
    """A dataset could not be found, read or prepared."""


class ModelError(TuinetError):
    """A model specification or architecture is invalid."""


class CheckpointError(TuinetError):
    """A checkpoint file is missing, corrupted, or does not fit the model."""


class ConfigError(TuinetError):
    """A configuration file or option value is invalid."""
