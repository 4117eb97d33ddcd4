"""What the README and the operator guide tell a user to type must work as written: every `hgen*` command in their
shell blocks parses with the real parser (compile commands also build their settings, so device, strategy and model
names are checked), every YAML config block loads with the real loader, and the files they name exist."""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path

import pytest
import yaml
from hgen.compiler.cli.compile import config_from
from hgen.compiler.cli.main import build_parser as hgen_parser
from hgen.edge_agent.cli import _parser as agent_parser
from hgen.edge_agent.config import load_agent_config
from hgen.hub.cli import build_parser as hub_parser
from hgen.hub.config import load_hub_config, parse_hub_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/operator.md")
LOADERS = {"hub": load_hub_config, "agent": load_agent_config,
           "compile": lambda path: config_from(hgen_parser().parse_args(["compile", "--config", str(path)]))}
REPO_DIRS = ("compiler", "runtime", "hub", "edge_agent", "protos", "tools", "docs", "tests", "android_bridge")
BUILT = ("hub/web/device_app",)  # git-ignored: `make android-bridge` writes it


def blocks(doc: str, language: str) -> list[tuple[str, str]]:
    """(the line before the block, its body) of every fenced block in that language."""
    text = (ROOT / doc).read_text()
    return re.findall(rf"([^\n]*)\n```{language}\n(.*?)```", text, re.DOTALL)


def commands(doc: str) -> list[list[str]]:
    """The `hgen*` commands of the shell blocks, continuation lines joined, comments dropped."""
    found = []
    for _, body in blocks(doc, "sh"):
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens and tokens[0] in ("hgen", "hgen-compile", "hgen-hub", "hgen-agent"):
                found.append(tokens)
    return found


def parse(tokens: list[str]) -> None:
    program, args = tokens[0], tokens[1:]
    if program == "hgen-compile":
        program, args = "hgen", ["compile", *args]
    parser = {"hgen": hgen_parser, "hgen-hub": hub_parser, "hgen-agent": agent_parser}[program]()
    try:
        parsed = parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"documented command does not parse: {shlex.join(tokens)}")
    if program == "hgen" and parsed.verb in ("compile", "variants"):
        config_from(parsed)  # unknown device, strategy or model names fail here


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_parse_with_the_real_parsers(doc: str) -> None:
    found = commands(doc)
    assert len(found) >= 8, f"{doc}: the shell blocks were not found"
    for tokens in found:
        parse(tokens)


def test_a_wrong_flag_is_caught() -> None:
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse(["hgen-hub", "add-device", "cam-7", "--config", "hub.yaml", "--password", "x"])
    with pytest.raises(Exception, match="unknown device 'rpi9'"):
        parse(["hgen-compile", "--device", "rpi9"])


@pytest.mark.parametrize("doc", DOCS)
def test_documented_yaml_configs_load(doc: str, tmp_path: Path) -> None:
    """Every ```yaml block says which config it is (`<!-- config: hub -->` on the line before) and loads."""
    for marker, body in blocks(doc, "yaml"):
        kind = re.fullmatch(r"<!-- config: (\w+) -->", marker.strip())
        assert kind and kind.group(1) in LOADERS, f"{doc}: a yaml block without a config marker: {body[:60]!r}"
        path = tmp_path / f"{kind.group(1)}.yaml"
        # a secret the guide tells the reader to generate ("<generated: COMMAND>"): the config refuses it as typed
        path.write_text(re.sub(r'"<generated: [^"]*>"', lambda _: secrets.token_urlsafe(48), body))
        LOADERS[kind.group(1)](path)


def test_the_operator_guide_shows_a_hub_an_agent_and_a_compile_config() -> None:
    kinds = {marker.strip() for marker, _ in blocks("docs/operator.md", "yaml")}
    assert kinds == {"<!-- config: hub -->", "<!-- config: agent -->", "<!-- config: compile -->"}


def test_the_inline_aggregator_options_example_loads() -> None:
    text = (ROOT / "docs/operator.md").read_text()
    (snippet,) = re.findall(r"`(aggregator_options: \{[^`]*\})`", text)
    config = parse_hub_config(yaml.safe_load(snippet))
    assert config.aggregator_config("dawid_skene").history == 600


@pytest.mark.parametrize("doc", (*DOCS, "docs/protocol.md", "android_bridge/README.md"))
def test_named_files_and_links_exist(doc: str) -> None:
    page = ROOT / doc
    text = page.read_text()
    links = [t for t in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text) if "://" not in t]
    paths = [p for p in re.findall(r"`(\w[\w.-]*(?:/[\w.-]+)+/?)`", text)
             if p.split("/")[0] in REPO_DIRS or (page.parent != ROOT and (page.parent / p.split("/")[0]).is_dir())]
    missing = [p for p in links + paths if "NAME" not in p and not p.startswith(BUILT)
               and not ((ROOT / p).exists() or (page.parent / p).exists())]
    assert links + paths and not missing, f"{doc} names files that do not exist: {missing}"
