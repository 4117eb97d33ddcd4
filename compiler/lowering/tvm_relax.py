"""TFLite/ONNX -> Apache TVM relax -> a library per target profile.

`tvm.compile` wants a `tvm.target.Target` from the JSON dict form. Host and cross targets are linked to a
shared library with the profile's compiler; without one, the objects are exported as a tar archive and the
result says how to link them, so nothing silently pretends to be deployable.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hgen.compiler.errors import CompilerError, LoweringError
from hgen.compiler.lowering.targets import TargetProfile, get_target
from hgen.runtime.bundle.elf import archive_machines, elf_machine

if TYPE_CHECKING:
    from hgen.compiler.lowering.tuning import TuneConfig

LibraryFormat = Literal["shared-library", "object-archive"]


@dataclass(frozen=True)
class TVMLibrary:
    """An exported TVM artifact and what it was checked to be."""

    path: Path
    format: LibraryFormat
    machine: str
    target: str
    message: str = ""


def import_tvm() -> Any:
    try:
        import tvm
        from tvm import relax  # noqa: F401  (checks the compiler part is installed)
    except ImportError:
        raise CompilerError("TVM lowering needs Apache TVM: pip install apache-tvm==0.27.0.post1") from None
    return tvm


def tflite_to_relax(content: bytes) -> Any:
    """Import a fixed-shape TFLite flatbuffer into a relax IRModule."""
    import_tvm()
    try:
        import tflite
        from tvm.relax.frontend.tflite import from_tflite
    except ImportError:
        raise CompilerError("the relax TFLite frontend needs the 'tflite' package: pip install tflite") from None
    try:
        return from_tflite(tflite.Model.GetRootAsModel(content, 0))
    except Exception as exc:  # OpNotImplemented, TVMError, AssertionError...
        raise LoweringError(f"relax TFLite import failed (is the batch fixed?): {exc}") from None


def tvm_target(profile: TargetProfile) -> Any:
    """The `tvm.target.Target` of a profile; `native_cpu` profiles ask LLVM for the host CPU name."""
    tvm = import_tvm()
    config = dict(profile.tvm_target)
    if profile.native_cpu:
        from tvm_ffi import get_global_func

        config["mcpu"] = get_global_func("tvm.codegen.llvm.GetHostCPUName")()
    return tvm.target.Target(config)


def compile_relax(mod: Any, profile: TargetProfile, *, pipeline: str | None = None) -> Any:
    """Compile a relax module for `profile` (default relax pipeline unless `pipeline` is named)."""
    tvm = import_tvm()
    target = tvm_target(profile)
    kwargs: dict[str, Any] = {"target": target}
    if pipeline is not None:
        kwargs["relax_pipeline"] = pipeline
    try:
        return tvm.compile(mod, **kwargs)
    except Exception as exc:
        raise LoweringError(f"TVM compile for target '{profile.name}' failed: {exc}") from None


def library_machine(path: Path, fmt: LibraryFormat) -> str:
    """The machine(s) TVM's export was built for; an unreadable or non-ELF export is a LoweringError naming the
    file, not a raw ValueError/TarError out of `hgen lower`."""
    try:
        if fmt == "shared-library":
            return elf_machine(path)
        return ",".join(sorted(archive_machines(path)))
    except (OSError, ValueError, tarfile.TarError, EOFError) as exc:  # NotElfError is a ValueError
        raise LoweringError(f"cannot read the machine type of the exported TVM library {path}: {exc}") from None


def _export(executable: Any, profile: TargetProfile, path: Path, **kwargs: Any) -> None:
    """TVM's export (and link) step; TVMError and the compiler's failures are not HGen errors."""
    try:
        executable.export_library(str(path), **kwargs)
    except Exception as exc:
        raise LoweringError(f"exporting the TVM library {path} for '{profile.name}' failed: {exc}") from None


def export_library(executable: Any, profile: TargetProfile, out_stem: Path) -> TVMLibrary:
    """Link to `<stem>.so` with the profile's compiler, else archive objects as `<stem>.tar`."""
    from tvm.support import cc

    compiler = profile.find_compiler()
    if profile.is_host or compiler:
        path = out_stem.parent / f"{out_stem.name}.so"
        _export(executable, profile, path, fcompile=cc.cross_compiler(compiler) if compiler else None)
        fmt: LibraryFormat = "shared-library"
        message = ""
    else:
        path = out_stem.parent / f"{out_stem.name}.tar"
        _export(executable, profile, path)
        fmt = "object-archive"
        message = (
            f"no linker for target '{profile.name}' ({', '.join(profile.compilers)} not found): exported unlinked "
            f"objects {path.name}; to get a loadable library: {profile.link_hint}"
        )
    machine = library_machine(path, fmt)
    if machine != profile.machine:
        raise LoweringError(f"TVM produced {machine} code for target '{profile.name}', expected {profile.machine}")
    return TVMLibrary(path, fmt, machine, profile.name, message)


def lower_tvm(content: bytes, target: str, out_stem: str | Path, *, tuning: TuneConfig | None = None) -> TVMLibrary:
    """TFLite bytes -> relax -> compiled (MetaSchedule-tuned on this host if `tuning` is given) and exported
    library for the named target profile."""
    profile = get_target(target)
    mod = tflite_to_relax(content)
    if tuning is None:
        executable = compile_relax(mod, profile)
    else:
        from hgen.compiler.lowering.tuning import tune_and_compile

        executable = tune_and_compile(mod, profile, tuning)
    return export_library(executable, profile, Path(out_stem))
