"""Named deployment targets for TVM: one module per profile, registered in `TARGETS`.

A profile says how to generate code (the TVM target in its JSON dict form, which `tvm.compile` requires)
and how to link it (a cross compiler looked up on PATH, overridable by an environment variable).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from hgen.compiler.errors import UnknownNameError
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    tvm_target: dict[str, Any]
    machine: str  # ELF machine of the produced code (x86_64, aarch64, arm)
    compilers: tuple[str, ...] = ()  # linkers to try; () = TVM's default host compiler
    compiler_env: str = ""  # environment variable naming a compiler that overrides `compilers`
    link_hint: str = ""
    native_cpu: bool = field(default=False)  # resolve "mcpu" to the host CPU at compile time

    def find_compiler(self) -> str | None:
        """Path of the linker to use, or None if none is installed (then objects are archived)."""
        override = os.environ.get(self.compiler_env) if self.compiler_env else None
        for candidate in ([override] if override else []) + list(self.compilers):
            found = shutil.which(candidate)
            if found:
                return found
        return None

    @property
    def is_host(self) -> bool:
        return not self.compilers


TARGETS: Registry[TargetProfile] = Registry("target", UnknownNameError, package=__name__)


def get_target(name: str) -> TargetProfile:
    return TARGETS.get(name)
