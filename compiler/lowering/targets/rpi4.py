"""Raspberry Pi 4 (64-bit OS): Cortex-A72, AArch64 with NEON."""

from hgen.compiler.lowering.targets import TARGETS, TargetProfile

TARGETS.add(
    "rpi4",
    TargetProfile(
        name="rpi4",
        description="Raspberry Pi 4, aarch64 Linux, Cortex-A72 + NEON",
        tvm_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]},
        machine="aarch64",
        compilers=("aarch64-linux-gnu-gcc",),
        compiler_env="HGEN_CC_AARCH64",
        link_hint="apt-get install gcc-aarch64-linux-gnu",
    ),
)
