"""Exceptions with messages meant for the person running the pipeline."""


class XaipipeError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class ConfigError(XaipipeError):
    """The configuration is invalid; the message names the key path."""


class DataError(XaipipeError):
    """An input file is missing, corrupt or inconsistent; the message names the file."""
