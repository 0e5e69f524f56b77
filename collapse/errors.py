"""Errors that are the user's to fix: the CLI prints them as one line and exits 2."""


class CollapseError(Exception):
    """Bad input (config, corpus, sizes): reported as one line, exit code 2."""


class ConfigError(CollapseError):
    """A config key is unknown, of the wrong type or out of range."""
