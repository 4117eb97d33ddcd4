"""Generate the protobuf / gRPC Python modules from the .proto files beside this file.

Run by setup.py at build time (so `pip install .` on a fresh machine gets the stubs) and by the test
that checks the generated modules still match the .proto files. Standard library + grpc_tools only:
setup.py loads this file by path, before `hgen` is importable.

The .proto files are staged under `hgen/protos/` so the generated `*_pb2_grpc.py` imports
`hgen.protos.<name>_pb2` (protoc derives Python imports from the include path).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

PACKAGE_PATH = ("hgen", "protos")
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class CodegenError(RuntimeError):
    """protoc failed; the message carries protoc's exit code."""


def proto_files(proto_dir: Path) -> list[Path]:
    return sorted(Path(proto_dir).glob("*.proto"))


def generated_names(proto_dir: Path) -> list[str]:
    """File names generation produces for the .proto files in `proto_dir`."""
    return [f"{p.stem}{suffix}" for p in proto_files(proto_dir) for suffix in SUFFIXES]


def generate(proto_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Compile every .proto in `proto_dir` into `out_dir` (default: `proto_dir`); return the written files."""
    from grpc_tools import protoc  # build-time dependency (pyproject build-system.requires)
    import grpc_tools

    proto_dir = Path(proto_dir)
    out_dir = Path(out_dir or proto_dir)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp, "src", *PACKAGE_PATH)
        stage.mkdir(parents=True)
        gen = Path(tmp, "gen")
        gen.mkdir()
        for proto in proto_files(proto_dir):
            shutil.copyfile(proto, stage / proto.name)
        args = ["grpc_tools.protoc", f"-I{Path(tmp, 'src')}", f"-I{well_known}",
                f"--python_out={gen}", f"--pyi_out={gen}", f"--grpc_python_out={gen}"]
        args += ["/".join((*PACKAGE_PATH, p.name)) for p in proto_files(proto_dir)]
        code = protoc.main(args)
        if code != 0:
            raise CodegenError(f"protoc exited with {code} for {proto_dir}")
        written = []
        for name in generated_names(proto_dir):
            target = out_dir / name
            shutil.copyfile(Path(gen, *PACKAGE_PATH, name), target)
            written.append(target)
        return written


if __name__ == "__main__":
    for path in generate(Path(__file__).parent):
        print(path)
