"""Errors a user can act on: each message names the problem and the fix."""


class RestoreXError(Exception):
    """Base class of every RestoreX error."""


class CheckpointError(RestoreXError, ValueError):
    """A checkpoint is corrupt, truncated, foreign, or does not match its config."""


class ClipWeightsError(RestoreXError, ValueError):
    """A CLIP file holds the wrong architecture or format."""


class MissingWeightsError(RestoreXError, FileNotFoundError):
    """A weight file is not where it must be; the message says where to put it and where to get it."""


class ImageInputError(RestoreXError, ValueError):
    """An image tensor or file cannot be processed (NaN/inf, channel count, empty batch, format)."""


class TileError(RestoreXError, ValueError):
    """A tile size and overlap that cannot be run without seams; the message names every problem at once."""


class DeviceError(RestoreXError, ValueError):
    """A device or precision that this machine cannot run; the message names the ones it can."""
