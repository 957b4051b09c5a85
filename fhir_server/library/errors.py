"""Library loading errors."""


class LoadError(Exception):
    """A library file that cannot be loaded; the message names the file and what is wrong."""
