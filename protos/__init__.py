"""hgen.protos: the wire format (protobuf messages and the gRPC service), package `hgen.v1`.

The `*_pb2*.py` modules are generated at build time from `hub.proto` (see codegen.py); import them as
`from hgen.protos import hub_pb2, hub_pb2_grpc`. `load()` gives a readable error when a source checkout
was never built.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hgen.runtime.errors import HGenError


# The revision of hgen.v1's behaviour an agent implements, sent in DeviceStatus.protocol_revision. Raise it when a
# release changes what agents send or expect (the message fields stay compatible either way), so a hub can tell
# the operator which devices still run an agent from before the change. 1: the first agents that report it; an
# agent that reports nothing (0) predates it.
PROTOCOL_REVISION = 1


class ProtoStubsMissingError(HGenError, ImportError):
    """The generated modules are absent: the checkout was not installed with `pip install -e .`."""


def load(name: str = "hub_pb2") -> ModuleType:
    """Import a generated module, explaining how to build it when it is missing."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise ProtoStubsMissingError(
            f"generated module {__name__}.{name} is missing; run `pip install -e .` (or "
            f"`python protos/codegen.py`) to generate it from the .proto files"
        ) from None
