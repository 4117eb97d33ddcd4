"""The wire enum (hgen.v1.HdnnKind) of each registered H-DNN kind, so device and hub never keep a table of them.

A kind's descriptor (`hgen.runtime.hdnn.<kind>`) names its enum value; this module resolves the name both ways.
The runtime itself stays free of protobuf, hence the resolution lives here.
"""

from __future__ import annotations

from collections.abc import Callable

from hgen.protos import hub_pb2
from hgen.runtime.hdnn import DEFAULT_KIND, HDNNKind, get_kind, kind_names


def wire_kind(name: str) -> int:
    """The HdnnKind value of the registered kind `name` (UnknownChoiceError lists the registered kinds)."""
    return hub_pb2.HdnnKind.Value(get_kind(name).proto_enum)


def kind_of_wire(value: int) -> HDNNKind | None:
    """The registered kind a sample's HdnnKind value names (UNSPECIFIED: the default kind, as older devices send);
    None for a value no registered kind claims."""
    if value == hub_pb2.HDNN_KIND_UNSPECIFIED:
        return get_kind(DEFAULT_KIND)
    found = [get_kind(name) for name in kind_names() if wire_kind(name) == value]
    return found[0] if found else None


def wire_kinds(where: Callable[[HDNNKind], bool]) -> tuple[int, ...]:
    """HdnnKind values of the registered kinds `where` holds for (e.g. `lambda k: k.label == "boxes"`)."""
    return tuple(wire_kind(name) for name in kind_names() if where(get_kind(name)))
