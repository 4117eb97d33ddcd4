"""One distribution, `hgen`: the top-level folders become `hgen.<folder>` import packages.

The repository layout is fixed (compiler/, runtime/, ...), while users import `hgen.compiler` etc.,
so the folders are mapped with `package_dir`; `hgen` itself is a namespace package.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
FOLDERS = {
    "hgen.compiler": "compiler",
    "hgen.runtime": "runtime",
    "hgen.edge_agent": "edge_agent",
    "hgen.hub": "hub",
    "hgen.protos": "protos",
}


def _packages() -> list[str]:
    packages: list[str] = []
    for package, folder in FOLDERS.items():
        packages.append(package)
        packages.extend(f"{package}.{sub}" for sub in find_packages(str(HERE / folder)))
    return packages


def _codegen():
    """protos/codegen.py, loaded by path: `hgen` is not importable while it is being built."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hgen_protos_codegen", HERE / "protos" / "codegen.py")
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    return codegen


def _stub_requirements() -> list[str]:
    """grpcio and protobuf at least as new as the stubs this build writes: generated code refuses to import under an
    older runtime than the grpcio-tools that wrote it (a new grpcio-tools on PyPI once broke installs of an older
    grpcio). Without grpc_tools (metadata read outside a build) nothing is added."""
    import re
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            text = "\n".join(path.read_text() for path in _codegen().generate(HERE / "protos", Path(tmp)))
    except ImportError:
        return []
    grpc = re.search(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'", text, re.MULTILINE)
    protobuf = re.search(r"^# Protobuf Python Version: ([0-9.]+)", text, re.MULTILINE)
    return ([f"grpcio>={grpc.group(1)}"] if grpc else []) + ([f"protobuf>={protobuf.group(1)}"] if protobuf else [])


STUBS = _stub_requirements()


class BuildPyWithProtos(build_py):
    """Generate the protobuf/gRPC stubs (protos/codegen.py) before collecting modules, so installs ship them; a
    wheel also ships the phone app's build (hub/web/device_app), built here first if npm is installed."""

    def run(self) -> None:
        _codegen().generate(HERE / "protos")
        if not getattr(self, "editable_mode", False):  # editable installs read hub/web/device_app in place
            _build_phone_app()
        super().run()


def _build_phone_app() -> None:
    """npm ci + npm run build in android_bridge/ unless built; without npm the wheel has no phone page (the hub
    then answers /device with the build command)."""
    import shutil
    import subprocess

    if (HERE / "hub" / "web" / "device_app" / "device.js").is_file() or not (HERE / "android_bridge").is_dir():
        return
    if shutil.which("npm") is None:
        print("warning: npm not found: this build ships no phone app (make android-bridge, then build again)")
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE / "android_bridge", check=True)
    subprocess.run(["npm", "run", "build"], cwd=HERE / "android_bridge", check=True)


# Device-only dependencies: never TensorFlow (tests check `hgen.runtime` and `hgen.edge_agent` import without it).
EDGE = [
    "numpy>=2.0",
    "ai-edge-litert>=1.4",  # 2.x on x86-64; the aarch64 kit pins 1.4.0 (tools/flash/build_kit.py)
    "opencv-python-headless>=4.9",
    "paho-mqtt>=2.1",
    "grpcio>=1.70",
    "protobuf>=5.29",
    "cryptography>=42",
    *STUBS,
]
COMPILER = [
    "tensorflow-cpu==2.21.0",
    "keras>=3.10,<4",
    "apache-tvm==0.27.0.post1",
    # 0.1.15.x segfaults serialising PrimFuncs (tvm.ir.save_json), which MetaSchedule tuning needs.
    "apache-tvm-ffi==0.1.14.post1",
    "psutil>=5.9",
    "tflite>=2.18",
    "onnx>=1.17",
    "onnxruntime>=1.20",
    "tf2onnx>=1.16",
    "scikit-learn>=1.5",
    "matplotlib>=3.8",
    "pillow>=10",  # user image folders: header check before decoding, resize (compiler/data/images.py)
    "optuna>=4.0",
]
HUB = [
    "sqlalchemy>=2.0",
    "alembic>=1.13",
    "crowd-kit>=1.4",
    "pandas>=2.2",
    "pillow>=10",  # retraining reads user image folders through the same data layer
    "opencv-python-headless>=4.9",
    "scikit-learn>=1.5",
    "grpcio>=1.70",
    "grpcio-health-checking>=1.70",
    "paho-mqtt>=2.1",
    "psycopg[binary]>=3.2",
    "flask>=3.0",
    *STUBS,
]
DEV = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "pytest-xdist>=3.6",  # `make test` runs two workers (--dist loadfile; loadgroup ignores its marks on pytest 9.2)
    "grpcio-tools>=1.70",
    "playwright>=1.45",
]

setup(
    name="hgen",
    version="0.1.0",
    description="Human-in-the-loop DNNs for the edge (H-Gen): compile, deploy, annotate, retrain.",
    python_requires=">=3.11",
    packages=_packages(),
    package_dir=FOLDERS,
    include_package_data=True,
    package_data={"": ["*.proto", "*.json", "*.yaml", "*.html", "*.css", "*.js", "*.ini", "*.mako"],
                  # folders that are not packages: pages, their files, the phone app's build (android_bridge/build.mjs)
                  "hgen.hub.web": ["templates/*", "static/*", "device_app/*"]},
    install_requires=["numpy>=2.0", "pydantic>=2.6", "pyyaml>=6"],
    cmdclass={"build_py": BuildPyWithProtos},
    extras_require={"edge": EDGE, "compiler": COMPILER, "hub": HUB, "dev": DEV},
    entry_points={
        "console_scripts": [
            "hgen=hgen.compiler.cli.main:main",
            "hgen-compile=hgen.compiler.cli.compile_main:main",
            "hgen-hub=hgen.hub.cli:main",
            "hgen-agent=hgen.edge_agent.cli:main",
        ]
    },
)
