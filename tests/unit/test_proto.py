"""The generated protobuf/gRPC modules match the .proto files, and the wire format round-trips."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from hgen.protos import hub_pb2, hub_pb2_grpc

PROTO_DIR = Path(hub_pb2.__file__).parent


def _codegen():
    spec = importlib.util.spec_from_file_location("codegen_under_test", PROTO_DIR / "codegen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """protoc runs in a fresh interpreter: in-process, its bundled protobuf crashes once TensorFlow is loaded."""
    out = tmp_path_factory.mktemp("regen")
    script = (
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        "spec = importlib.util.spec_from_file_location('codegen', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.generate(Path(sys.argv[2]), Path(sys.argv[3]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(PROTO_DIR / "codegen.py"), str(PROTO_DIR), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_generated_files_are_byte_identical_to_a_fresh_generation(regenerated: Path) -> None:
    names = _codegen().generated_names(PROTO_DIR)
    assert names, "no .proto files found"
    for name in names:
        assert (PROTO_DIR / name).read_bytes() == (regenerated / name).read_bytes(), (
            f"{name} is stale: reinstall (`pip install -e .`) to regenerate from the .proto")


def test_the_install_requires_the_grpcio_and_protobuf_its_stubs_were_written_for() -> None:
    """Generated stubs refuse to import under an older grpcio/protobuf than the grpcio-tools that wrote them (a new
    grpcio-tools in the isolated build env once broke every gRPC import), so the metadata must ask for them."""
    requires = importlib.metadata.requires("hgen") or []
    grpc = hub_pb2_grpc.GRPC_GENERATED_VERSION
    protobuf = re.search(r"^# Protobuf Python Version: ([0-9.]+)", Path(hub_pb2.__file__).read_text(), re.MULTILINE)
    assert protobuf is not None
    for extra in ("edge", "hub"):
        assert f'grpcio>={grpc}; extra == "{extra}"' in requires, requires
        assert f'protobuf>={protobuf.group(1)}; extra == "{extra}"' in requires, requires


def test_loaded_descriptor_matches_the_proto_source(regenerated: Path) -> None:
    source = (regenerated / "hub_pb2.py").read_text()
    # Compare descriptors rather than text: the serialized FileDescriptorProto is what the runtime uses.
    start = source.index("AddSerializedFile(") + len("AddSerializedFile(")
    literal = source[start:source.index(")\n", start)]
    fresh = descriptor_pb2.FileDescriptorProto.FromString(eval(literal, {}))  # noqa: S307 (generated literal)
    loaded = descriptor_pb2.FileDescriptorProto()
    hub_pb2.DESCRIPTOR.CopyToProto(loaded)
    assert fresh.package == "hgen.v1"
    assert loaded == fresh


def test_service_exposes_the_four_rpcs() -> None:
    service = hub_pb2.DESCRIPTOR.services_by_name["AnnotationHub"]
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods}
    assert methods == {
        "Submit": ("AnnotationRequest", "SampleReply", True),
        "FetchBundle": ("BundleRequest", "BundleChunk", True),
        "WatchUpdates": ("WatchUpdatesRequest", "ModelUpdate", True),
        "ReportStatus": ("DeviceStatus", "StatusAck", False),
    }
    assert hasattr(hub_pb2_grpc, "AnnotationHubStub")


def test_request_round_trips_with_detection_and_class_shapes() -> None:
    box = hub_pb2.Box(x_min=1, y_min=2, x_max=10, y_max=12, class_id=3, score=0.4)
    sample = hub_pb2.Sample(
        sample_id="6f1c6bb0-1f4e-4c1d-9d0e-1a2b3c4d5e6f", device_id="dev-1", bundle_name="lenet", bundle_version="1",
        image=hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=b"\x89PNG", height=28, width=28, channels=1),
        output=hub_pb2.ModelOutput(class_probabilities=[0.5, 0.5], boxes=[box], confidence=0.5,
                                   kind=hub_pb2.HDNN_KIND_YOLO))
    request = hub_pb2.AnnotationRequest(batch_id="b", device_id="dev-1", samples=[sample], annotators_wanted=3,
                                        labour_budget=12.5, aggregator="box_union")
    request.deadline.GetCurrentTime()
    decoded = hub_pb2.AnnotationRequest.FromString(request.SerializeToString())
    assert decoded == request
    answer = hub_pb2.Answer(task_id="t", class_id=0)
    assert answer.WhichOneof("label") == "class_id"  # class 0 is distinguishable from "no class"
    regions = hub_pb2.Answer(regions=hub_pb2.RegionList(regions=[hub_pb2.Region(x_max=1, y_max=1, weight=1)]))
    assert regions.WhichOneof("label") == "regions"


def test_missing_stub_gives_a_typed_error() -> None:
    from hgen.protos import ProtoStubsMissingError, load

    with pytest.raises(ProtoStubsMissingError, match="pip install -e"):
        load("does_not_exist_pb2")
