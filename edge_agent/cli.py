"""`hgen-agent run --config agent.yaml` (runs until the source ends or SIGTERM/SIGINT) and
`hgen-agent check --config agent.yaml` (validate config, verify and open the bundle, open the source, exit).

Exit codes: 0 ok; 2 a configuration or bundle problem a restart cannot fix (message printed, no traceback); 1 the
agent failed (a source failing mid-stream, an outbox that cannot be written, ...: a supervisor should restart it).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from hgen.edge_agent.config import AgentConfig, load_agent_config
from hgen.runtime.bundle.errors import BundleError
from hgen.runtime.errors import ConfigError, HGenError
from hgen.runtime.quiet import add_verbose_argument, quiet_unless_verbose
from hgen.runtime.signing import KeyFileError, SignatureError

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, EXIT_CONFIG),  # agent.yaml (AgentConfigError) or a setting it passes on
    (BundleError, EXIT_CONFIG),  # bundle.path unreadable, tampered or built for another target
    (SignatureError, EXIT_CONFIG),  # ... or not signed by bundle.public_key
    (KeyFileError, EXIT_CONFIG),  # bundle.public_key unreadable
    (HGenError, EXIT_FAILURE),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hgen-agent", description="H-Gen edge agent: camera to fused answer.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the agent"), ("check", "validate config and bundle, then exit")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", required=True, help="agent.yaml")
        command.add_argument("--hub", help="override hub.url (grpc://host:50051 or mqtt://host:1883)")
        command.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_verbose_argument(parser)
    return parser


def _config(args: argparse.Namespace) -> AgentConfig:
    config = load_agent_config(args.config)
    if args.hub:
        from hgen.edge_agent.config import parse_agent_config

        data = config.model_dump(mode="python")
        data["hub"]["url"] = args.hub
        config = parse_agent_config(data, source=f"{args.config} with --hub")
    return config


def check(config: AgentConfig) -> dict[str, object]:
    """Everything `run` would refuse at start-up, without running: config, bundle (signature, target, hashes,
    engine opens), source opens; and which bundle a start resumes. Returns a summary."""
    from hgen.edge_agent.model import load_model
    from hgen.edge_agent.sources import is_live, open_source

    if config.hub.tls is not None:
        config.hub.tls.check_files()
    for sink in config.sinks:
        sink.check_files()
    model = load_model(config.bundle.path, config.bundle, tau=config.gate.tau, m=config.batching.annotators)
    try:
        summary = {"device_id": config.device_id, "bundle": f"{model.name} {model.version}",
                   "target": model.manifest.target, "engine": type(model.engine).__name__,
                   "input": list(model.manifest.input.shape), "tau": model.tau, "m": model.m,
                   "hub": config.hub.url or "(none: model answers only)"}
    finally:
        model.close()
    stop = threading.Event()
    stop.set()  # live sources must not block in back-off while checking
    source = None if is_live(config.source.kind) else open_source(config.source, stop)
    if source is not None:
        source.close()
    summary["source"] = f"{config.source.kind} {config.source.uri}" + (
        " (live: not opened here; `run` retries it until it opens)" if source is None else "")
    summary["resumes"] = _resumes(config)
    summary["outbox"] = _outbox(config)
    return summary


def _outbox(config: AgentConfig) -> str:
    """What `run` would find in outbox.path, refused as `run` refuses it when another device owns the file; a
    damaged file is reported, not refused, as `run` moves it aside and starts afresh."""
    from hgen.edge_agent.errors import OutboxDamagedError
    from hgen.edge_agent.outbox_file import inspect_outbox, owner_error

    path = config.outbox.path
    try:
        owner, waiting = inspect_outbox(path)
    except OutboxDamagedError as exc:
        return f"{path} (damaged: `run` moves it aside to {path.name}.corrupt-<UTC time> and starts a fresh one; {exc})"
    if owner is not None and owner != config.device_id:
        raise owner_error(path, owner, config.device_id)
    return f"{path} ({waiting} sample(s) waiting)" if owner is not None or waiting else f"{path} (new)"


def _resumes(config: AgentConfig) -> str:
    """Which bundle `run` starts from: the one recorded as running (verified when it starts), or `bundle.path`."""
    from hgen.edge_agent.store import BundleStore

    recorded = BundleStore(config.bundle.store_dir, config.bundle.path).resume_path() if config.bundle.resume else None
    return str(recorded) if recorded else "(nothing recorded: starts from bundle.path)"


def run(config: AgentConfig) -> None:
    from hgen.edge_agent.agent import Agent

    agent = Agent(config)

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("signal %d: stopping", signum)
        threading.Thread(target=agent.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.getLogger(__name__).info("%s running %s %s on %s; source %s %s; hub %s", config.device_id,
                                     agent.model.name, agent.model.version, type(agent.model.engine).__name__,
                                     config.source.kind, config.source.uri, config.hub.url or "(none)")
    agent.run()
    snapshot = agent.telemetry.snapshot()
    print(json.dumps({k: snapshot.get(k, 0) for k in ("frames", "escalated", "audits", "frames_unfamiliar", "fused",
                                                      "timeouts", "fps")}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    quiet_unless_verbose(argv)  # first: LiteRT's one-off XNNPACK INFO line
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _config(args)
        if args.command == "check":
            print(json.dumps(check(config), indent=2, ensure_ascii=False))  # paths as people named them
        else:
            run(config)
    except HGenError as exc:
        print(f"hgen-agent: {exc}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
