"""The one exception type users see for bad input.

Every message is a single line that names the problem and, where there is one, the fix. The CLI
prints it without a traceback and exits with code 2.
"""


class InterpICLError(ValueError):
    """Bad input: a malformed config, impossible task parameters, a wrong checkpoint, ..."""


class ConfigError(InterpICLError):
    """A config field has a value that cannot be used."""


class CheckpointError(InterpICLError):
    """A run directory or checkpoint file is missing, truncated, foreign or inconsistent."""


class TokenError(InterpICLError):
    """Token ids that are out of range or of the wrong shape."""


def require(condition: bool, message: str, error: type[InterpICLError] = ConfigError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds."""
    if not condition:
        raise error(message)
