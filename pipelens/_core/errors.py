"""PipeLens's exceptions.

The whole tree::

    PipelensError                 anything PipeLens raises on purpose
    ├── ConfigurationError        a bad argument to configure() or a transport (names the option)
    └── TransportError            a transport could not be set up (names the path or URL)

PipeLens never raises into the user's program from instrumentation: these are raised only by
public functions the user calls directly with a wrong argument.
"""

from __future__ import annotations


class PipelensError(Exception):
    """Base class of every error PipeLens raises on purpose."""


class ConfigurationError(PipelensError, ValueError):
    """An option has a value PipeLens cannot use; the message names the option and the fix."""


class TransportError(PipelensError):
    """A transport could not be created (an unwritable file, a malformed URL)."""


def check_strings(where: str, *, optional: bool = False, **options: object) -> None:
    """Raise ``TypeError`` naming the first option that is not a string (``where(name=value)``).

    With ``optional``, ``None`` is accepted (the option's default applies).
    """
    for name, value in options.items():
        if not isinstance(value, str) and not (optional and value is None):
            raise TypeError(f"{where}({name}={value!r}): expected a string")
