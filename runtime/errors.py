"""Exception root of `hgen.runtime`; `HGenError` is the common base every package root derives from.

CLIs catch `HGenError` in `main` and map the concrete type to an exit code; library code only raises.
"""


class HGenError(Exception):
    """Base of all hgen errors: a CLI prints the message, without a traceback."""


class HGenRuntimeError(HGenError):
    """Root of every error raised by `hgen.runtime`."""


class InvalidInputError(HGenRuntimeError, ValueError):
    """An argument or array has the wrong value, shape or type."""


class PlainKeyError(KeyError):
    """A KeyError that prints its message as written (KeyError quotes it): the base of every "no such name" error
    whose message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownChoiceError(HGenRuntimeError, PlainKeyError):
    """A name was looked up in a registry that does not hold it; the message lists the valid names."""


class RegistrationError(HGenRuntimeError, ValueError):
    """Two backends claim one name in a registry (a plugin was copied without renaming it)."""


class ConfigError(HGenRuntimeError, ValueError):
    """A configuration failed validation; the message lists every problem by key path."""
