"""`hgen-hub`: serve the annotation hub, migrate its knowledge base, or check a config. Exit codes live here."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from hgen.hub.app import HubApp
from hgen.hub.config import load_hub_config
from hgen.hub.errors import HubConfigError, KnowledgeBaseError
from hgen.hub.kb.engine import make_engine
from hgen.hub.kb.migrate import current_revision, upgrade
from hgen.runtime.errors import HGenError

EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = ((HubConfigError, 2), (KnowledgeBaseError, 3),
                                                           (HGenError, 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hgen-hub", description="H-Gen annotation hub.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for name, help_text in (("serve", "run the hub until SIGINT/SIGTERM"),
                            ("migrate", "upgrade the knowledge base schema to the latest revision"),
                            ("check-config", "validate a config file and print it resolved")):
        verb = sub.add_parser(name, help=help_text, description=help_text)
        verb.add_argument("--config", required=True, help="hub YAML config")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def serve(config_path: str) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    app = HubApp(load_hub_config(config_path)).start()
    print(f"hgen-hub: serving (gRPC port {app.grpc_port or 'off'}, MQTT "
          f"{'on' if app.mqtt else 'off'})", flush=True)
    try:
        stop.wait()
    finally:
        app.stop()


def migrate(config_path: str) -> None:
    engine = make_engine(load_hub_config(config_path).knowledge_base.url)
    try:
        upgrade(engine)
        print(f"hgen-hub: knowledge base at revision {current_revision(engine)}")
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.verb == "serve":
            serve(args.config)
        elif args.verb == "migrate":
            migrate(args.config)
        else:
            print(load_hub_config(args.config).model_dump_json(indent=2))
    except HGenError as error:
        print(f"hgen-hub {args.verb}: error: {error}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES if isinstance(error, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
