"""Exception root of `hgen.compiler`."""

from hgen.runtime.errors import HGenError, PlainKeyError


class CompilerError(HGenError):
    """Root of every error raised by `hgen.compiler`."""


class DatasetError(CompilerError):
    """A dataset spec is invalid or its files cannot be read."""


class DatasetSpecError(DatasetError, ValueError):
    """A dataset spec string has bad syntax or parameters."""


class DatasetNotFoundError(DatasetError):
    """No copy of the dataset was found; the message names the paths tried and how to install it."""


class UnknownNameError(CompilerError, PlainKeyError):
    """A name is not registered (dataset, model, operator, device, strategy, target...); lists the valid ones."""


class InvalidArgumentError(CompilerError, ValueError):
    """An argument has a value outside its documented range."""


class LoweringError(CompilerError):
    """A model could not be lowered (imported, compiled, exported or checked) for a target; names the target or file."""


class DemandsNotMetError(CompilerError):
    """The compiled H-DNN misses a demand on the test split; its artifacts are written, the compile still fails."""


class OutputFolderError(CompilerError):
    """The output folder (--out) cannot be created, written or cleared; names the path and the OS reason."""


class UnreachableBudgetError(CompilerError):
    """No plan of the search space meets S_c and E_c even on paper; names the least S and E a plan reaches."""


class ModelCostError(CompilerError):
    """The cost model (MACs, activations, weights) does not know a layer of the model."""


class DatasetFormatError(DatasetError):
    """A data set's layout or manifest is malformed, or no registered format recognises the path."""


class EmptyDatasetError(DatasetError):
    """A data set (or one of its classes) holds no usable images; the message names the folder or class."""


class DatasetTooLargeError(DatasetError):
    """A data set that would not fit in this machine's free memory as the training reads it; names the need."""


class ImageTooLargeError(DatasetError):
    """An image's header declares more pixels than the decoding limit (decompression-bomb guard); names the file."""


class UnreadableImageError(DatasetError):
    """An image file cannot be decoded (or too many were unreadable under the skip policy); names the files."""


class MissingImageError(DatasetError):
    """A manifest or annotation file points at images that do not exist; names the manifest and the files."""


class LabelError(DatasetError):
    """A label is invalid (class out of range, box outside the image, unknown split); names the file and line."""
