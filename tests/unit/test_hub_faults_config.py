"""Audit faults in the hub configuration: a misspelt aggregator is refused at start-up (by key path), not by every
sample's submit afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from hgen.hub.aggregators import aggregator_names
from hgen.hub.cli import main
from hgen.hub.config import parse_hub_config, read_labels
from hgen.hub.errors import HubConfigError


def test_a_misspelt_aggregator_is_refused_naming_the_key_and_the_valid_names() -> None:
    with pytest.raises(HubConfigError) as raised:
        parse_hub_config({"aggregator": "majorty"})
    message = str(raised.value)
    assert "aggregator: " in message and "'majorty'" in message
    assert all(name in message for name in aggregator_names())


@pytest.mark.parametrize("name", aggregator_names())
def test_every_registered_aggregator_is_accepted(name: str) -> None:
    assert parse_hub_config({"aggregator": name}).aggregator == name


def test_check_config_exits_with_the_config_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("aggregator: majorty\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "aggregator: " in capsys.readouterr().err


def model_with_classes(tmp_path: Path, name: str, classes: int) -> dict[str, str]:
    from hgen.edge_agent.testing import make_keys, null_bundle

    bundle = null_bundle(tmp_path / name, make_keys(tmp_path / f"{name}-keys"), name=name, classes=classes)
    return {"name": name, "keras_model": str(tmp_path / "model.keras"), "bundle": str(bundle)}


def test_people_answer_in_the_models_classes_unless_told_otherwise(tmp_path: Path) -> None:
    """A 3-class model's hub left at the old default of 10 showed ten buttons and stored answers the model has no
    class for, which failed every retrain after."""
    three = model_with_classes(tmp_path, "shapes", 3)
    assert parse_hub_config({"retrain": {"models": [three]}}).num_classes == 3
    assert parse_hub_config({"num_classes": 3, "retrain": {"models": [three]}}).num_classes == 3
    assert parse_hub_config({}).num_classes == 10  # no model to read: the built-in data sets' classes
    with pytest.raises(HubConfigError, match="num_classes is 10, but the bundle of retrain model 'shapes' lists 3"):
        parse_hub_config({"num_classes": 10, "retrain": {"models": [three]}})
    with pytest.raises(HubConfigError, match="bundles list different classes"):
        parse_hub_config({"retrain": {"models": [three, model_with_classes(tmp_path, "digits", 10)]}})
    from hgen.edge_agent.testing import make_keys, null_bundle

    labels = list(read_labels(three["bundle"]) or ())
    reordered = null_bundle(tmp_path / "reordered", make_keys(tmp_path / "reordered-keys"), name="other", classes=3,
                            labels=labels[::-1])  # the same count, another order: answers would mean other classes
    other = {"name": "other", "keras_model": three["keras_model"], "bundle": str(reordered)}
    with pytest.raises(HubConfigError, match="bundles list different classes"):
        parse_hub_config({"retrain": {"models": [three, other]}})
    assert parse_hub_config({"num_classes": 1}).num_classes == 1  # a one-class detector (person, defect): boxes

def test_a_misspelt_key_names_the_key_it_most_likely_meant() -> None:
    with pytest.raises(HubConfigError) as raised:
        parse_hub_config({"grpc": {"prot": 5}, "retrain": {"enabeld": True, "models": [{"nmae": "x"}]}})
    message = str(raised.value)
    assert "grpc.prot: unknown key (did you mean 'port'?)" in message
    assert "retrain.enabeld: unknown key (did you mean 'enabled'?)" in message
    assert "retrain.models.0.nmae: unknown key (did you mean 'name'?)" in message
    with pytest.raises(HubConfigError, match=r"zzz: unknown key$"):  # nothing close: no guess
        parse_hub_config({"zzz": 1})


def test_a_second_hub_on_a_taken_grpc_port_refuses_to_start(tmp_path: Path) -> None:
    """With SO_REUSEPORT both hubs listened, and a device's calls went to either: half were refused as unknown."""
    from hgen.edge_agent.testing import start_hub

    first = start_hub(tmp_path / "a.db", ["cam-1"])
    try:
        port = int(first.grpc_url.rsplit(":", 1)[1])
        with pytest.raises(HubConfigError, match=rf"grpc: cannot listen on 127.0.0.1:{port} \(in use"):
            start_hub(tmp_path / "b.db", ["cam-1"], grpc_port=port)
    finally:
        first.stop()


def test_retraining_with_a_key_or_model_that_is_not_there_is_refused_at_start(tmp_path: Path) -> None:
    """A wrong signing_key passed serve, and the operator's "Retrain now" was a 500. Only a hub that serves checks:
    a command such as revoke-device must work from any folder."""
    from hgen.hub.app import HubApp

    three = model_with_classes(tmp_path, "shapes", 3)  # its keras_model was never written
    config = parse_hub_config({"retrain": {"enabled": True, "store_dir": str(tmp_path / "store"),
                                           "signing_key": str(tmp_path / "nope.key"), "models": [three]}})
    with pytest.raises(HubConfigError, match=r"these files do not exist .*retrain.signing_key "
                                             r".*nope.key; retrain.models\[0\].keras_model .*model.keras"):
        HubApp(config)
    assert parse_hub_config({"retrain": {"models": [three]}}).retrain.missing_files() == []  # not retraining


def test_check_config_refuses_the_missing_retrain_files_serve_would(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """check-config passed a config that serve then refused, so it could not be trusted before a deployment."""
    import yaml

    three = model_with_classes(tmp_path, "shapes", 3)  # its keras_model was never written
    path = tmp_path / "hub.yaml"
    (tmp_path / "hub.key").write_bytes(b"a key")
    retrain = {"enabled": True, "store_dir": str(tmp_path / "store"), "signing_key": str(tmp_path / "hub.key"),
               "models": [three]}
    path.write_text(yaml.safe_dump({"retrain": retrain}))
    assert main(["check-config", "--config", str(path)]) == 2
    assert "retrain.models[0].keras_model" in capsys.readouterr().err
    (tmp_path / "model.keras").write_bytes(b"a model")
    assert main(["check-config", "--config", str(path)]) == 0
    assert '"enabled": true' in capsys.readouterr().out


def test_a_database_server_without_an_image_dir_is_said_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """Without it the first large image failed its device's whole batch at run time; now each such image is
    refused on its own, and the operator is told at start-up."""
    parse_hub_config({"knowledge_base": {"url": "postgresql+psycopg://hub@db/hgen"}})
    assert "knowledge_base.image_dir is not set: images over inline_image_max_bytes (65536) will be" in caplog.text


def test_a_large_image_with_nowhere_to_keep_it_refuses_that_sample_not_the_batch(tmp_path: Path) -> None:
    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.service import HubService
    from hgen.hub.testing.samples import make_request, make_sample, png_image
    from hgen.protos import hub_pb2

    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    kb.images.image_dir = None  # as a database server opened without one
    service = HubService(parse_hub_config({"devices": ["cam-1"]}), kb)
    try:
        large, small = make_sample("cam-1", image=png_image(size=300)), make_sample("cam-1")
        result = service.submit(make_request("cam-1", [large, small]), "grpc")
        assert result.accepted == [small.sample_id]
        (refused,) = result.immediate
        assert refused.sample_id == large.sample_id and refused.status == hub_pb2.REPLY_STATUS_REJECTED
        assert "no knowledge_base.image_dir is set to keep it" in refused.detail
        assert service.metrics.get("image_not_storable") == 1
    finally:
        service.close()


def test_cookies_are_secure_when_people_reach_the_hub_over_https() -> None:
    """The old default (False) left a hub behind an HTTPS proxy sending its session cookie over plain HTTP too."""
    web = {"enabled": True, "secret_key": "k9Qv2LxT7wPz4RbN8mYc3HdF6jGs1Ua5"}
    assert parse_hub_config({"web": web | {"public_url": "https://hub.example"}}).web.cookies_secure
    assert not parse_hub_config({"web": web | {"public_url": "http://10.0.0.2:8080"}}).web.cookies_secure
    assert not parse_hub_config({"web": web}).web.cookies_secure
    explicit = {"public_url": "https://hub.example", "secure_cookies": False}  # the operator's word stands
    assert not parse_hub_config({"web": web | explicit}).web.cookies_secure


@pytest.mark.parametrize("host,url", [("127.0.0.1", "http://127.0.0.1:8080"), ("::1", "http://[::1]:8080"),
                                      ("[::1]", "http://[::1]:8080")])
def test_invite_links_without_a_public_url_name_the_configured_host(host: str, url: str) -> None:
    assert parse_hub_config({"web": {"host": host}}).web.bound_url() == url
