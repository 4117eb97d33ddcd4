"""Smartwatch-class 32-bit ARM: Cortex-A7, ARMv7-A hard-float with NEON/VFPv4."""

from hgen.compiler.lowering.targets import TARGETS, TargetProfile

TARGETS.add(
    "armv7",
    TargetProfile(
        name="armv7",
        description="ARMv7-A Cortex-A7 Linux, hard-float, NEON",
        tvm_target={
            "kind": "llvm",
            "mtriple": "armv7a-linux-gnueabihf",
            "mcpu": "cortex-a7",
            "mattr": ["+neon", "+vfp4"],
            "mfloat-abi": "hard",
        },
        machine="arm",
        compilers=("arm-linux-gnueabihf-gcc",),
        compiler_env="HGEN_CC_ARMHF",
        link_hint="apt-get install gcc-arm-linux-gnueabihf",
    ),
)
