"""The errors of image file reading and writing: each message names the file, the problem and the fix."""


class ImageFileError(ValueError):
    """An image file cannot be read or written as asked (unreadable, corrupt, unsupported, too large)."""


class OutputExistsError(ImageFileError, FileExistsError):
    """The output file exists (perhaps written by another program during the run) and was not replaced."""
