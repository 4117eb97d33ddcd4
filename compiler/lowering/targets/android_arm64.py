"""Android phones (arm64-v8a): AArch64 with NEON, bionic libc, linked only with an NDK clang."""

from hgen.compiler.lowering.targets import TARGETS, TargetProfile

TARGETS.add(
    "android-arm64",
    TargetProfile(
        name="android-arm64",
        description="Android arm64-v8a (aarch64-linux-android), NEON",
        tvm_target={"kind": "llvm", "mtriple": "aarch64-linux-android", "mcpu": "cortex-a55", "mattr": ["+neon"]},
        machine="aarch64",
        compilers=("aarch64-linux-android24-clang", "aarch64-linux-android-clang"),
        compiler_env="HGEN_ANDROID_CC",
        link_hint="set HGEN_ANDROID_CC to an Android NDK clang (e.g. .../aarch64-linux-android24-clang)",
    ),
)
