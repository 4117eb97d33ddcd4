"""The build host (x86-64 Linux): generic code, or `x86_64-native` tuned to this machine's CPU."""

from hgen.compiler.lowering.targets import TARGETS, TargetProfile

TARGETS.add(
    "x86_64",
    TargetProfile(
        name="x86_64",
        description="x86-64 Linux host, generic CPU (portable to any x86-64 machine)",
        tvm_target={"kind": "llvm", "mtriple": "x86_64-linux-gnu"},
        machine="x86_64",
    ),
)
TARGETS.add(
    "x86_64-native",
    TargetProfile(
        name="x86_64-native",
        description="x86-64 Linux host with -mcpu set to this machine's CPU (not portable)",
        tvm_target={"kind": "llvm", "mtriple": "x86_64-linux-gnu"},
        machine="x86_64",
        native_cpu=True,
    ),
)
