"""`hgen-hub export`: a real hub (SQLite, its annotator API) collects people's labels; the export writes them as a
data set and the compiler's own readers (`folder`, `yolo`) read every image and label back, in the hub's held-out
split. Annotators here are SIMULATED (the annotator API driven by the test), and the export's index says so."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from sqlalchemy import update

from hgen.compiler.data import load_dataset
from hgen.compiler.data.formats import scan
from hgen.hub.cli import main
from hgen.hub.config import HubConfig, parse_hub_config
from hgen.hub.errors import ExportError, InvalidRequestError
from hgen.hub.export.run import ExportSettings, export_labels
from hgen.hub.kb.models import Sample
from hgen.hub.retrain.data import held_out
from hgen.hub.service import HubService
from hgen.hub.testing.detection import BoxAnnotator, BoxCrowd, detection_sample
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.protos import hub_pb2
from hgen.runtime.hdnn.yolo import Detections
from hgen.runtime.orientation import decode_upright

CLASSES = ("cat", "dog", "fox")


def hub_config(tmp_path: Path, url: str | None = None) -> HubConfig:
    return parse_hub_config({"devices": ["cam"], "num_classes": 3, "web": {"class_names": list(CLASSES)},
                             "knowledge_base": {"url": url or f"sqlite:///{tmp_path / 'hub.db'}",
                                                "image_dir": str(tmp_path / "images")}})


@pytest.fixture
def service(tmp_path: Path, kb_url: str) -> Iterator[HubService]:  # noqa: F811
    """A hub on SQLite, and on PostgreSQL (the export's paged query and its count of SIMULATED answers)."""
    service = HubService.from_config(hub_config(tmp_path, kb_url))
    try:
        yield service
    finally:
        service.close()


def sideways_jpeg() -> hub_pb2.Image:
    """A phone's picture stored sideways with an EXIF orientation tag (6: turn 90 degrees clockwise to show)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
        buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_JPEG, data=buffer.getvalue(), height=20, width=30, channels=3)


def raw_image() -> hub_pb2.Image:
    pixels = np.random.default_rng(7).integers(0, 256, (12, 14, 3), dtype=np.uint8)
    return hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_RAW_U8, data=pixels.tobytes(), height=12, width=14, channels=3)


def label(service: HubService, answers: dict[str, int], person: str = "p", simulated: bool = False) -> None:
    """`person` answers every open task with the class `answers` gives its sample."""
    service.annotators.register(person, simulated=simulated)
    while (task := service.annotators.next_task(person)) is not None:
        service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=person,
                                                        class_id=answers[task.sample_id], operations=1, latency_s=1.0))


def labelled_classes(service: HubService, n: int = 24) -> tuple[list[hub_pb2.Sample], dict[str, int]]:
    images = [png_image(seed=i, channels=3) for i in range(n - 2)] + [sideways_jpeg(), raw_image()]
    samples = [make_sample("cam", num_classes=3, top=i % 3, image=image, sample_id=str(uuid.UUID(int=i + 1)))
               for i, image in enumerate(images)]  # fixed ids: the held-out split is a hash of the id
    service.submit(make_request("cam", samples, m=1), "grpc")
    answers = {s.sample_id: i % 3 for i, s in enumerate(samples)}
    label(service, answers)
    return samples, answers


def test_class_labels_come_back_through_the_folder_reader_in_the_hubs_held_out_split(
        service: HubService, tmp_path: Path) -> None:
    samples, answers = labelled_classes(service)
    settings = ExportSettings.of_hub(hub_config(tmp_path))
    assert settings.classes == CLASSES and settings.holdout_share == 0.2
    report = export_labels(service.kb, "lenet5", tmp_path / "labels", settings)
    assert report.data_format == "folder" and report.written == {"train": 17, "val": 7} and not report.skipped

    catalog = scan(tmp_path / "labels")  # the compiler's reader, the layout detected from the files
    assert catalog.format == "folder" and catalog.labels == CLASSES
    by_id = {r.path.stem: r for r in catalog.records}
    assert set(by_id) == set(answers)
    for sample in samples:
        record = by_id[sample.sample_id]
        assert record.label == answers[sample.sample_id]
        assert record.split == ("val" if held_out(sample.sample_id, 0.2, 0) else "train")
    png, jpeg, raw = samples[0], samples[-2], samples[-1]
    assert by_id[png.sample_id].path.read_bytes() == png.image.data  # as it came: no second compression
    turned = cv2.imread(str(by_id[jpeg.sample_id].path), cv2.IMREAD_UNCHANGED)
    assert by_id[jpeg.sample_id].path.suffix == ".png" and turned.shape == (30, 20, 3)  # upright, as people saw it
    np.testing.assert_array_equal(turned, decode_upright(jpeg.image.data))
    np.testing.assert_array_equal(cv2.imread(str(by_id[raw.sample_id].path), cv2.IMREAD_UNCHANGED),
                                  np.frombuffer(raw.image.data, np.uint8).reshape(12, 14, 3))

    data = load_dataset(f"folder:{tmp_path / 'labels'}?size=16", seed=0)  # what hgen-compile trains on
    assert data.labels == CLASSES and len(data.train.x) + len(data.val.x) + len(data.test.x) == 24

    with (tmp_path / "labels" / "samples.csv").open(encoding="utf-8") as index:
        rows = {row["sample_id"]: row for row in csv.DictReader(index)}
    row = rows[png.sample_id]
    assert row["label"] == CLASSES[answers[png.sample_id]] and row["answers"] == "1"
    assert row["simulated_answers"] == "0" and row["device_id"] == "cam" and row["labelled_at"].endswith("Z")
    manifest = json.loads((tmp_path / "labels" / "export.json").read_text())
    assert manifest["classes"] == list(CLASSES) and sum(manifest["written"].values()) == 24


def test_only_what_a_retrain_learns_is_exported_and_what_is_left_out_is_counted(service: HubService,
                                                                               tmp_path: Path) -> None:
    """A paused annotator's answers, a sample whose image retention removed, a class only in the held-out split."""
    first = [make_sample("cam", num_classes=3, image=png_image(seed=i, channels=3)) for i in range(6)]
    service.submit(make_request("cam", first, m=1), "grpc")
    label(service, {s.sample_id: 0 for s in first}, person="careful")
    later = [make_sample("cam", num_classes=3, image=png_image(seed=10 + i, channels=3)) for i in range(4)]
    service.submit(make_request("cam", later, m=1), "grpc")
    label(service, {s.sample_id: 1 for s in later}, person="bot", simulated=True)
    gone = make_sample("cam", num_classes=3, image=png_image(size=200, seed=99, channels=3))  # stored as a file
    service.submit(make_request("cam", [gone], m=1), "grpc")
    label(service, {gone.sample_id: 2}, person="careful")
    with service.kb.session() as s:
        path = s.get(Sample, gone.sample_id).image_path
    assert path is not None
    (tmp_path / "images" / path).unlink()
    with service.kb.session() as s:  # what retention leaves of an image it removed
        s.execute(update(Sample).where(Sample.id == first[0].sample_id).values(image_bytes=b"", image_path=None))

    settings = ExportSettings.of_hub(hub_config(tmp_path))
    report = export_labels(service.kb, "lenet5", tmp_path / "all", settings)
    assert sum(report.written.values()) == 9 and report.simulated == 4
    assert report.skipped == {"image removed by retention (knowledge_base.keep_labelled_images)": 1,
                              f"image file unreadable (image file {path} cannot be read: No such file or directory)": 1}

    service.gold.pause("bot", "gold accuracy below 60%")
    report = export_labels(service.kb, "lenet5", tmp_path / "without-bot", settings)
    assert sum(report.written.values()) == 5 and report.simulated == 0
    assert (tmp_path / "without-bot" / "classes.txt").read_text() == "cat\n"
    assert any("2 class(es) without labels" in note for note in report.notes)


def test_box_labels_come_back_through_the_yolo_reader(service: HubService, tmp_path: Path) -> None:
    image = np.full((16, 16, 1), 0.25, np.float32)
    samples = [detection_sample("cam", "det", image, Detections.empty(), 0.2) for _ in range(8)]
    truth = {s.sample_id: np.array([[2.0, 3.0, 9.0, 12.0, i % 3]]) for i, s in enumerate(samples)}
    truth[samples[0].sample_id] = np.zeros((0, 5))  # nothing there: an image without objects
    truth[samples[1].sample_id] = np.array([[2.0, 3.0, 9.0, 12.0, 1], [10.0, 1.0, 15.0, 6.0, 2]])
    service.submit(make_request("cam", samples, m=2), "grpc")
    people = (BoxAnnotator("p1", corner_noise_px=0.0, miss=0.0, wrong_class=0.0),
              BoxAnnotator("p2", corner_noise_px=0.0, miss=0.0, wrong_class=0.0))
    BoxCrowd(service.annotators, people, truth, 10).run_until_idle()

    report = export_labels(service.kb, "det", tmp_path / "boxes", ExportSettings.of_hub(hub_config(tmp_path)))
    assert report.data_format == "yolo" and sum(report.written.values()) == 8
    described = yaml.safe_load((tmp_path / "boxes" / "data.yaml").read_text())
    assert described["names"] == dict(enumerate(CLASSES))
    catalog = scan(tmp_path / "boxes")
    assert catalog.format == "yolo" and catalog.labels == CLASSES
    by_id = {r.path.stem: r for r in catalog.records}
    for sample in samples:
        expected = truth[sample.sample_id].copy()
        expected[:, :4] /= 16
        found = by_id[sample.sample_id].boxes
        order = np.lexsort(found.T[::-1])
        np.testing.assert_allclose(found[order], expected[np.lexsort(expected.T[::-1])], atol=1e-5)


def test_an_export_is_all_or_nothing_and_refuses_what_it_cannot_write(service: HubService, tmp_path: Path) -> None:
    settings = ExportSettings.of_hub(hub_config(tmp_path))
    with pytest.raises(ExportError, match="no samples of model 'lenet5'.*models with samples: none"):
        export_labels(service.kb, "lenet5", tmp_path / "out", settings)
    unanswered = make_sample("cam", num_classes=3, image=png_image(size=200, seed=3, channels=3))  # a file
    service.submit(make_request("cam", [unanswered], m=1), "grpc")
    with pytest.raises(ExportError, match="no human labels"):
        export_labels(service.kb, "lenet5", tmp_path / "out", settings)
    label(service, {unanswered.sample_id: 2})
    regions = make_sample("cam", num_classes=3, kind=hub_pb2.HDNN_KIND_FASTER_RCNN)
    regions.bundle_name = "rcnn"
    service.submit(make_request("cam", [regions], m=1, aggregator="region_gmm"), "grpc")
    with pytest.raises(ExportError, match="faster_rcnn.*regions without a class"):
        export_labels(service.kb, "rcnn", tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial folder left behind

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("the team's own file")
    with pytest.raises(ExportError, match="exists"):
        export_labels(service.kb, "lenet5", tmp_path / "taken", settings)
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["mine.txt"]
    (tmp_path / "empty").mkdir()
    assert sum(export_labels(service.kb, "lenet5", tmp_path / "empty", settings).written.values()) == 1
    with pytest.raises(ExportError, match="classes 'a/b' and 'a_b' would both be folder 'a_b'"):
        export_labels(service.kb, "lenet5", tmp_path / "names", ExportSettings(("cat", "a/b", "a_b"), 0.2))
    (tmp_path / "link").symlink_to(tmp_path / "empty-target", target_is_directory=True)
    (tmp_path / "empty-target").mkdir()
    with pytest.raises(ExportError, match="symbolic link"):
        export_labels(service.kb, "lenet5", tmp_path / "link", settings)
    shutil.rmtree(tmp_path / "images")  # the export run where the hub's images are not
    with pytest.raises(ExportError, match="image_dir .* is not a folder here, and samples' images are files"):
        export_labels(service.kb, "lenet5", tmp_path / "elsewhere", settings)
    assert not (tmp_path / "names").exists() and not (tmp_path / "elsewhere").exists()


def labelled_hub_file(tmp_path: Path) -> Path:
    """A hub config file whose SQLite knowledge base holds six labelled samples, as the CLI reads it."""
    service = HubService.from_config(hub_config(tmp_path))
    try:
        labelled_classes(service, n=6)
    finally:
        service.close()
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"devices": ["cam"], "num_classes": 3, "web": {"class_names": list(CLASSES)},
                                    "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}",
                                                       "image_dir": str(tmp_path / "images")}}))
    return path


def test_the_cli_writes_the_export_and_exits_2_on_a_taken_folder(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = labelled_hub_file(tmp_path)
    out = tmp_path / "export"
    assert main(["export", "--config", str(path), "--model", "lenet5", "--out", str(out),
                 "--min-agreement", "0.5"]) == 0
    said = capsys.readouterr().out
    assert "6 labelled images of lenet5" in said and f"--dataset folder:{out}" in said
    assert main(["export", "--config", str(path), "--model", "lenet5", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--config", str(path), "--model", "lenet5", "--out", str(tmp_path / "x"),
                 "--min-agreement", "1.5"]) == 2
    elsewhere = tmp_path / "elsewhere.yaml"  # a relative database path, read from another working folder
    elsewhere.write_text(yaml.safe_dump({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'nowhere.db'}"}}))
    assert main(["export", "--config", str(elsewhere), "--model", "lenet5", "--out", str(tmp_path / "y")]) == 2
    assert "no knowledge base at" in capsys.readouterr().err and not (tmp_path / "nowhere.db").exists()


def test_a_class_people_named_only_in_held_out_samples_is_said(tmp_path: Path) -> None:
    """A compile refuses a class it never trains on: the export says which one, before someone runs it."""
    from hgen.hub.export import ExportImage, ExportSample
    from hgen.hub.export.folder import FolderWriter

    writer = FolderWriter(tmp_path, CLASSES)
    image = ExportImage(png_image(channels=3).data, ".png")
    writer.add(ExportSample("a", "a", "train", image, 0, b"", (28, 28)))
    writer.add(ExportSample("b", "b", "val", image, 1, b"", (28, 28)))
    notes = writer.finish()
    assert (tmp_path / "classes.txt").read_text() == "cat\ndog\n"
    assert any("class 'dog' has labels only in the held-out split" in note for note in notes)
    assert any("val/ has no labels of cat" in note and "class_names" in note for note in notes)
    assert any("1 class(es) without labels" in note and "fox" in note for note in notes)


def test_boxes_are_scaled_by_the_size_people_drew_on_and_data_yaml_has_no_path(tmp_path: Path) -> None:
    """A picture stored sideways is written upright (20 x 30) while people's boxes are in the stored image's
    measure (30 x 20), as the annotator page and the retrain scale them; Ultralytics reads an existing `path:`
    relative to where it runs, so the YAML names none."""
    from hgen.hub.export import ExportImage, ExportSample
    from hgen.hub.export.yolo import YoloWriter

    reply = hub_pb2.SampleReply(aggregated=hub_pb2.AggregatedLabel(boxes=hub_pb2.BoxList(boxes=[
        hub_pb2.Box(x_min=15, y_min=0, x_max=30, y_max=10, class_id=2, score=1.0)])))
    writer = YoloWriter(tmp_path, CLASSES)
    image = ExportImage(png_image(channels=3).data, ".png")
    writer.add(ExportSample("a", "a", "val", image, None, reply.SerializeToString(), (30, 20)))
    notes = writer.finish()
    assert (tmp_path / "labels" / "val" / "a.txt").read_text() == "2 0.750000 0.250000 0.500000 0.500000\n"
    assert "path" not in yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert any("every label is held out" in note for note in notes)


def test_an_operator_downloads_the_export_as_a_zip_and_nothing_is_left_on_the_hub(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator page's download (real hub, Flask test client): the same export, made in the background and
    zipped; an error is said on the page; annotators cannot start or download one; the temporary files go when the
    hub stops."""
    import tempfile
    import zipfile

    from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with web_hub(tmp_path) as hub:
        jobs = hub.web.app.extensions["hgen_web"].exports
        add_people(hub, annotators=("ann",), operators=("op",))
        samples = [make_sample("cam-1", image=png_image(seed=i, channels=3)) for i in range(5)]
        hub.service.submit(make_request("cam-1", samples, m=1), "grpc")
        label(hub.service, {s.sample_id: i % 2 for i, s in enumerate(samples)})
        operator = logged_in(hub, "op")
        token = csrf_token_of(operator.get("/operator").get_data(as_text=True))
        form = {"csrf_token": token, "model": "nope", "min_agreement": "0"}
        started = operator.post("/operator/export", data=form)
        assert started.status_code == 303 and jobs.wait(60)
        page = operator.get("/operator").get_data(as_text=True)
        assert "export of nope started" in page
        assert "The export of nope failed: no samples of model &#39;nope&#39;" in operator.get("/operator").get_data(
            as_text=True) and not any(scratch.iterdir())

        real_mkdtemp = tempfile.mkdtemp

        def full(*args: object, **kwargs: object) -> str:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(tempfile, "mkdtemp", full)  # TMPDIR full: said, and the next try is not locked out
        assert operator.post("/operator/export", data={**form, "model": "lenet5"}).status_code == 303
        assert "No space left on device" in operator.get("/operator").get_data(as_text=True)
        monkeypatch.setattr(tempfile, "mkdtemp", real_mkdtemp)
        assert operator.post("/operator/export", data={**form, "model": "lenet5"}).status_code == 303
        assert jobs.wait(60)
        page = operator.get("/operator").get_data(as_text=True)
        link = re.search(r'id="export-download" href="([^"]+)"', page)
        assert link is not None and "Download lenet5-labels.zip" in page
        for attempt in range(2):  # downloaded again until it expires or the next export replaces it
            response = operator.get(link.group(1), buffered=True)
            assert response.status_code == 200 and response.mimetype == "application/zip"
            assert "lenet5-labels.zip" in response.headers["Content-Disposition"]
        archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
        archive.extractall(tmp_path / "unzipped")
        catalog = scan(tmp_path / "unzipped" / "lenet5-labels")
        assert catalog.format == "folder" and len(catalog.records) == 5 and catalog.labels == ("0", "1")
        assert [p.name for p in scratch.rglob("*") if p.is_file()] == ["labels.zip"]  # the export folder went
        assert operator.get(link.group(1).rsplit("/", 1)[0] + "/not-it").status_code == 400

        annotator = logged_in(hub, "ann")
        token = csrf_token_of(annotator.get("/annotate").get_data(as_text=True))
        assert annotator.post("/operator/export", data={**form, "csrf_token": token}).status_code == 403
        assert annotator.get(link.group(1)).status_code == 403
    assert not list(scratch.rglob("*")), list(scratch.rglob("*"))  # the hub stopped: its zip went


def quick(folder: Path, stopped: Any) -> Path:
    (folder / "a.zip").write_bytes(b"a")
    return folder / "a.zip"


class ManualTimer:
    """A timer the test fires itself (the jobs' expiry), recording its delay."""

    made: list["ManualTimer"] = []

    def __init__(self, seconds: float, action: Any) -> None:
        self.seconds, self.action, self.daemon, self.cancelled = seconds, action, False, False
        ManualTimer.made.append(self)

    def start(self) -> None:
        pass

    def cancel(self) -> None:
        self.cancelled = True


def test_export_jobs_one_at_a_time_kept_until_expiry_and_cleaned_up(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The background export's life: busy while made, ready until its timer removes it (nobody needs to look) or
    the next export replaces it, a failure said, a bad id refused without a 500."""
    import tempfile
    import threading

    from hgen.hub.web.export_jobs import ExportBusyError, ExportJobs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ManualTimer.made.clear()
    now = [1000.0]  # the jobs' clock, moved by hand
    jobs = ExportJobs(keep_s=60, clock=lambda: now[0], timer=ManualTimer)
    gate = threading.Event()

    def slow(folder: Path, stopped: Any) -> Path:
        gate.wait(60)
        (folder / "labels.zip").write_bytes(b"zip")
        return folder / "labels.zip"

    first = jobs.start("m", "m-labels", slow)
    with pytest.raises(ExportBusyError, match="already being made"):
        jobs.start("m", "m-labels", slow)
    assert not jobs.wait(0) and jobs.current().state == "making"
    with pytest.raises(InvalidRequestError, match="no such export is ready"):
        jobs.open(first.id)
    gate.set()
    assert jobs.wait(60)
    handle, ready = jobs.open(first.id)
    with handle:
        assert handle.read() == b"zip" and ready.state == "ready" and ready.size == 3
    for wrong in ("é" * 22, first.id[:-1] + "x", "\x00"):
        with pytest.raises(InvalidRequestError):
            jobs.open(wrong)
    (timer,) = ManualTimer.made
    assert timer.seconds == 60 and timer.daemon and jobs.seconds_left(ready) == 60
    now[0] += 45
    assert jobs.seconds_left(ready) == 15 and jobs.age(ready) == 45
    timer.action()  # an hour later, with nobody looking
    assert jobs.current() is None and not any(tmp_path.iterdir())

    def broken(folder: Path, stopped: Any) -> Path:
        raise ValueError("a bug")

    jobs.start("m", "m-labels", broken)
    assert jobs.wait(60)
    failed = jobs.current()
    assert failed is not None and failed.state == "failed" and "internal error" in failed.message
    assert not any(tmp_path.iterdir())

    gate.clear()
    replaced = jobs.start("m", "m-labels", quick)
    assert jobs.wait(60) and jobs.current().id == replaced.id and list(tmp_path.rglob("a.zip"))
    jobs.start("m", "m-labels", slow)  # the next export replaces the ready zip
    assert ManualTimer.made[-1].cancelled and not list(tmp_path.rglob("a.zip"))
    gate.set()
    assert jobs.wait(60)


def test_a_hub_stopping_mid_export_stops_it_and_leaves_nothing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread was a daemon nobody waited for: the process exited with a partial export in TMPDIR, and a
    stopped hub kept reading its knowledge base. Now close() stops it between two labels and waits."""
    import tempfile
    import threading

    from hgen.hub.web.export_jobs import ExportBusyError, ExportJobs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    jobs = ExportJobs()
    working = threading.Event()
    labels_after_stop = []

    def endless(folder: Path, stopped: Any) -> Path:
        (folder / "partial.jpg").write_bytes(b"x")
        working.set()
        while not stopped():
            threading.Event().wait(0.01)  # a label written, then the next
        labels_after_stop.append(0)
        raise ExportError("stopped")

    jobs.start("m", "m-labels", endless)
    assert working.wait(60)
    jobs.close()
    assert labels_after_stop == [0] and jobs.current() is None and not any(tmp_path.iterdir())
    with pytest.raises(ExportBusyError, match="stopping"):
        jobs.start("m", "m-labels", endless)


def test_an_export_that_cannot_get_a_thread_leaves_nothing_claiming_to_be_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile
    import threading

    from hgen.hub.web.export_jobs import ExportJobs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    jobs = ExportJobs()

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        with pytest.raises(ExportError, match="can't start new thread"):
            jobs.start("m", "m-labels", quick)
    assert jobs.current() is None and not any(tmp_path.iterdir())
    jobs.start("m", "m-labels", quick)
    assert jobs.wait(60) and jobs.current().state == "ready"
    jobs.close()


def test_export_labels_stops_between_two_labels_when_asked(service: HubService, tmp_path: Path) -> None:
    labelled_classes(service, n=4)
    asked = []

    def stopped() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(ExportError, match="was stopped"):
        export_labels(service.kb, "lenet5", tmp_path / "out", ExportSettings.of_hub(service.config), stopped)
    assert len(asked) == 2 and not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_sigterm_mid_export_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """timeout, systemd and docker stop a job with SIGTERM: the partial folder went with it only on Ctrl-C."""
    import os
    import signal

    from hgen.hub.export.folder import FolderWriter

    path = labelled_hub_file(tmp_path)
    written = FolderWriter.add

    def add_then_stop(self: FolderWriter, sample: object) -> tuple[str, str]:
        if len(self.written) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled in this (main) thread before the next line runs
        return written(self, sample)  # type: ignore[arg-type]

    monkeypatch.setattr(FolderWriter, "add", add_then_stop)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out" / "labels"
    assert main(["export", "--config", str(path), "--model", "lenet5", "--out", str(out)]) == 130
    assert "interrupted; nothing written" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == [] and signal.getsignal(signal.SIGTERM) is before


def test_class_names_a_folder_cannot_hold_get_folders_that_read_back(tmp_path: Path) -> None:
    """FashionMNIST's "T-shirt/top" stopped `make demo`'s export; a leading dot, # or space cannot be a class folder
    or a classes.txt line either. Each gets a folder name, in the model's order, and the note says which."""
    from hgen.hub.export import ExportImage, ExportSample
    from hgen.hub.export.folder import FolderWriter

    classes = ("T-shirt/top", ".hidden", "#1", " cat ", "a\nb")
    writer = FolderWriter(tmp_path, classes)
    image = ExportImage(png_image(channels=3).data, ".png")
    for i in range(len(classes)):
        for split in ("train", "val"):
            writer.add(ExportSample(f"{split}{i}", f"{split}{i}", split, image, i, b"", (28, 28)))
    notes = writer.finish()
    catalog = scan(tmp_path)
    assert catalog.labels == ("T-shirt_top", "_.hidden", "_#1", "cat", "a_b")  # the model's order
    assert sorted((r.path.stem, r.label) for r in catalog.records) == sorted(
        (f"{split}{i}", i) for i in range(len(classes)) for split in ("train", "val"))
    assert any("'T-shirt/top' as 'T-shirt_top'" in note for note in notes)
