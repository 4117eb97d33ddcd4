"""Exception root of `hgen.compiler`."""

from hgen.runtime.errors import HGenError


class CompilerError(HGenError):
    """Root of every error raised by `hgen.compiler`."""


class DatasetError(CompilerError):
    """A dataset spec is invalid or its files cannot be read."""


class DatasetSpecError(DatasetError, ValueError):
    """A dataset spec string has bad syntax or parameters."""


class DatasetNotFoundError(DatasetError):
    """No copy of the dataset was found; the message names the paths tried and how to install it."""


class UnknownNameError(CompilerError, KeyError):
    """A name is not registered (dataset, model, operator, device, strategy, target...); lists the valid ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(CompilerError, ValueError):
    """An argument has a value outside its documented range."""


class ModelCostError(CompilerError):
    """The cost model (MACs, activations, weights) does not know a layer of the model."""
