"""The names hub.yaml and the hub's commands take for things that name files, topics and accounts elsewhere.

A device id is an MQTT user name and topic level and a row key every transport looks up, so it is ASCII letters,
digits and . _ - (the agent's `device_id` rule too). `hgen-hub add-device` refused `Kamera Süd` while hub.yaml's
`devices` and `retrain.models[].devices` took it silently: a device listed there could never get a credential, and
the operator learnt it only when it never connected. `\\Z`, not `$`: `$` lets a trailing newline through, which
would end a line of the broker's password file early.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hgen.runtime.class_names import unclear_class_names

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # also safe as an MQTT user name and topic level
DEVICE_ID_RULE = "1-128 letters a-z/A-Z, digits and . _ - (starting with a letter or digit)"


def refuse_bad_device_ids(ids: Iterable[str]) -> None:
    """ValueError naming the first few ids the hub could never enrol (pydantic turns it into the config's typed
    error, by key path)."""
    bad = [device_id for device_id in ids if not DEVICE_ID.match(device_id)]
    if bad:
        raise ValueError(f"device ids are {DEVICE_ID_RULE}, as hgen-hub add-device and the agent's device_id take "
                         f"them; got {', '.join(map(repr, bad[:3]))}")


def refuse_unclear_class_names(names: Iterable[str]) -> None:
    """ValueError for a blank name or one listed twice (hgen.runtime.class_names): people pick a class by its name on
    a button, and two buttons reading the same (or nothing) cannot be told apart."""
    problem = unclear_class_names(names)
    if problem is not None:
        raise ValueError(problem)
