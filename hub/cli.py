"""`hgen-hub`: serve the annotation hub, migrate its knowledge base, or check a config. Exit codes live here."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hgen.hub import cli_labels as labels
from hgen.hub.app import HubApp
from hgen.hub.config import load_hub_config
from hgen.hub.devices import DeviceCredentialError
from hgen.hub.errors import (BadInputError, ExportError, GoldFolderError, HubConfigError, HubError,
                             InvalidRequestError, KnowledgeBaseError, ReleaseError, UnknownModelError)
from hgen.hub.kb.engine import make_engine
from hgen.hub.kb.migrate import current_revision, upgrade
from hgen.runtime.errors import HGenError
from hgen.runtime.quiet import add_verbose_argument, quiet_unless_verbose

if TYPE_CHECKING:
    from hgen.hub.retrain.release import Releases

EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = ((HubConfigError, 2), (UnknownModelError, 2),
                                                           (ReleaseError, 2),  # the operator's release refused
                                                           (ExportError, 2),  # nothing to export, a taken folder
                                                           (GoldFolderError, 2),  # a folder naming no class
                                                           # an unknown device, an account that exists, a bad name
                                                           (BadInputError, 2), (DeviceCredentialError, 2),
                                                           (KnowledgeBaseError, 3), (HGenError, 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hgen-hub", description="H-Gen annotation hub.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    verbs = {}
    for name, help_text in (("serve", "run the hub until SIGINT/SIGTERM"),
                            ("migrate", "upgrade the knowledge base schema to the latest revision"),
                            ("check-config", "validate a config file and print it resolved"),
                            ("retrain", "retrain a model now (in this process) and print the outcome"),
                            ("versions", "list a model's versions, newest first, and how each was made"),
                            ("export", "write a model's human labels as a data set: class folders, or the YOLO "
                                       "layout for boxes (hgen-compile reads both)"),
                            ("rollback", "publish an earlier version again, as the next version"),
                            ("publish", "publish bundles compiled offline (hgen-compile) as the next version"),
                            ("add-gold", "add gold tasks from a folder of class folders (GOLD/<class name>/*.jpg)"),
                            ("list-gold", "list the gold tasks, the ones people dispute most first"),
                            ("retire-gold", "take wrong gold tasks out of the gold set; resume the people they "
                                            "paused"),
                            ("add-user", "create a web account with a password (stdin) or an invite link token"),
                            ("add-device", "enrol a device: print its secret once (stored only hashed)"),
                            ("revoke-device", "withdraw a device's credential (the broker drops it within seconds)"),
                            ("rotate-device", "replace a device's secret: print the new one once")):
        verb = sub.add_parser(name, help=help_text, description=help_text)
        verb.add_argument("--config", required=True, help="hub YAML config")
        verbs[name] = verb
    verbs["export"].add_argument("--model", required=True, help="the model (bundle) name its devices report")
    for name in ("retrain", "versions", "rollback", "publish"):
        verbs[name].add_argument("--model", required=True, help="a name under retrain.models")
    verbs["rollback"].add_argument("--to", metavar="VERSION",
                                   help="the version to restore (default: the one the deployed version replaced)")
    verbs["publish"].add_argument("--bundle", type=Path, action="append", required=True,
                                  help="a signed bundle folder; once per target the model's devices run")
    verbs["publish"].add_argument("--keras", type=Path, required=True,
                                  help="the compile's model.keras: where the next retrain starts")
    verbs["export"].add_argument("--out", type=Path, required=True, help="a new folder to write the data set into")
    verbs["export"].add_argument("--min-agreement", type=float, default=0.0, metavar="SHARE",
                                 help="leave out labels the people agreed on less than this (0..1; default 0: all)")
    verbs["retrain"].add_argument("--research", action="store_true",
                                  help="also search a new compression plan and tau (needs the model's compile_config)")
    verbs["add-gold"].add_argument("--folder", type=Path, required=True,
                                   help="a folder of class folders named as people see the classes")
    verbs["list-gold"].add_argument("--disputed", action="store_true",
                                    help="only those 3 or more people answered, more of them giving one other "
                                         "class than the known one")
    verbs["retire-gold"].add_argument("--sample", action="append", required=True, metavar="ID",
                                      help="a gold task's sample id (from list-gold); repeat for several")
    verbs["add-user"].add_argument("--name", required=True, help="user (annotator) name")
    verbs["add-user"].add_argument("--role", choices=("annotator", "operator"),
                                   help="default: annotator for a new account; an existing one keeps its role")
    verbs["add-user"].add_argument("--invite", action="store_true",
                                   help="print a single-use invite token instead of reading a password")
    verbs["add-user"].add_argument("--replace", action="store_true",
                                   help="reset an existing account's password (its sessions end; its role stays "
                                        "unless --role is given)")
    for name in ("add-device", "revoke-device", "rotate-device"):
        verbs[name].add_argument("device", metavar="NAME", help="device id (letters, digits, . _ -)")
    verbs["add-device"].add_argument("--target", help="the only target whose bundles the device may fetch")
    for name in ("add-device", "rotate-device"):
        verbs[name].add_argument("--secret-file", type=Path,
                                 help="write the secret alone to this file (mode 0600) instead of printing it: "
                                      "what tools/flash/build_kit.py --secret-file reads")
    verbs["add-device"].add_argument("--certificate-dir", help="also issue a client certificate named by the device "
                                     "id, signed by grpc.tls.client_ca_file with client_ca_key_file, into this folder")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    add_verbose_argument(parser)
    return parser


def serve(config_path: str) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    app = HubApp(load_hub_config(config_path)).start()
    print(f"hgen-hub: serving ({app.describe()})", flush=True)
    try:
        stop.wait()
    finally:
        app.stop()


def check_config(config_path: str) -> None:
    """Print the resolved config, then refuse what `serve` would refuse at start-up: the retrain files too."""
    config = load_hub_config(config_path)
    print(config.model_dump_json(indent=2))
    config.retrain.require_files()


def migrate(config_path: str) -> None:
    engine = make_engine(load_hub_config(config_path).knowledge_base.url)
    try:
        upgrade(engine)
        print(f"hgen-hub: knowledge base at revision {current_revision(engine)}")
    finally:
        engine.dispose()


def retrain(config_path: str, model: str, research: bool = False) -> int:
    """Runs the pipeline here; the new bundle is registered in the knowledge base, where serving hubs' gRPC
    WatchUpdates streams see it (MQTT retained notices are sent by a serving hub's own worker only)."""
    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore
    from hgen.hub.retrain.worker import LEASE_TTL_S, LeaseKeeper, holder_id

    config = load_hub_config(config_path)
    kb = KnowledgeBase.of_config(config.knowledge_base)
    try:
        store = RetrainStore(kb)
        pipeline = RetrainPipeline(config.retrain, store, HubPublisher(kb))
        pipeline.model_config(model)  # UnknownModelError before anything is stored
        if research:
            pipeline.check_research(model)
        holder = holder_id("cli")  # a serving hub may be retraining this model: the lease says who goes
        run = store.claim_run(model, "cli", pipeline.current(model).version, holder, LEASE_TTL_S,
                              research=research)
        keeper = LeaseKeeper(store, holder, LEASE_TTL_S, lambda: (model,)).start()
        try:
            outcome = pipeline.execute(run)
        finally:
            keeper.stop()
            store.release_lease(model, holder)
    finally:
        kb.close()
    print(f"hgen-hub retrain: run {outcome.id} {outcome.status} {outcome.from_version} -> "
          f"{outcome.to_version or outcome.from_version}; human samples used {outcome.samples_used}, filtered out "
          f"{outcome.filtered_out}{'; ' + outcome.error if outcome.error else ''}")
    return 0 if outcome.status == "published" else 1


@contextmanager
def _releases(config_path: str) -> Iterator[Releases]:
    """The releases API on the configured knowledge base (notices as `retrain` sends them from the CLI)."""
    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore
    from hgen.hub.retrain.release import Releases

    config = load_hub_config(config_path)
    kb = KnowledgeBase.of_config(config.knowledge_base)
    try:
        yield Releases(RetrainPipeline(config.retrain, RetrainStore(kb), HubPublisher(kb)))
    finally:
        kb.close()


def versions(config_path: str, model: str) -> None:
    with _releases(config_path) as releases:
        entries = releases.history(model)
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created_at))
        run = f"run {entry.run_id}" if entry.run_id is not None else ""
        print(f"{'*' if entry.deployed else ' '} {entry.version:<12} {when} UTC  {entry.how:<24} {run}".rstrip())


def release(config_path: str, verb: str, model: str, to: str | None = None, bundles: Sequence[Path] = (),
            keras: Path | None = None) -> None:
    with _releases(config_path) as releases:
        if verb == "rollback":
            run = releases.rollback(model, to)
        else:
            assert keras is not None
            run = releases.publish(model, bundles, keras)
    restored = run.metrics.get("restored")
    print(f"hgen-hub {verb}: {model} {run.from_version} -> {run.to_version} published"
          f"{f' (the files of {restored})' if restored else ''} for {', '.join(run.metrics['targets'])} "
          f"(run {run.id}); serving hubs tell their devices")


def add_user(config_path: str, name: str, role: str | None, invite: bool, replace: bool = False) -> None:
    """A new account, or with `replace` a reset one. Without it an existing name is refused: `add-user alice`
    used to replace an operator's password and demote her to annotator, and said it had succeeded."""
    import getpass

    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.web.auth import Accounts, check_name

    config = load_hub_config(config_path)
    kb = KnowledgeBase.open(config.knowledge_base.url, migrate=config.knowledge_base.migrate)
    try:
        accounts = Accounts(kb)
        name = check_name(name)  # its stored form (NFC), or a clear refusal before anything is written
        existing = accounts.get(name)
        if existing is not None and not replace:
            raise InvalidRequestError(f"an account {name!r} ({existing.role}) exists: choose another name, or pass "
                                      "--replace to reset its password")
        role = role or (existing.role if existing is not None else "annotator")
        if invite:
            token = accounts.invite(name, role, config.web.invite_ttl_s, replace=True)
            base = (config.web.public_url or config.web.bound_url()).rstrip("/")  # after "#": never sent or logged
            print(f"invite for {name} ({role}): open {base}/join#token={token}")
        else:
            password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
            account = accounts.create(name, role, password)
            done = "created" if account.epoch == 0 else "existed: password replaced, its sessions ended"
            print(f"account {name} ({role}) {done}")
    finally:
        kb.close()


def device_verb(config_path: str, verb: str, device: str, target: str | None = None,
                certificate_dir: str | None = None, secret_file: Path | None = None) -> None:
    """add/revoke/rotate through the hub's own API: the knowledge base and, with mqtt.access, the broker."""
    from hgen.hub.broker_acl import open_registry

    config = load_hub_config(config_path)
    tls = config.grpc.tls
    if certificate_dir is not None and (tls is None or tls.client_ca_file is None or tls.client_ca_key_file is None):
        raise HubConfigError("--certificate-dir needs grpc.tls.client_ca_file and grpc.tls.client_ca_key_file")
    if secret_file is not None:
        _check_writable(secret_file)
    if target is not None:
        _check_target(target)
    with open_registry(config) as devices:
        if verb == "revoke-device":
            devices.revoke(device)
            print(f"device {device} revoked")
            return
        issued = devices.add(device, target) if verb == "add-device" else devices.rotate(device)
    if secret_file is not None:
        _write_secret(secret_file, issued.secret, device)
        print(f"device {device}: secret written to {secret_file} (mode 0600, printed nowhere; "
              f"tools/flash/build_kit.py --secret-file puts it in agent.yaml as hub.secret)")
    else:
        print(f"device {device}: secret {issued.secret}\n(shown once: put it in the agent config as hub.secret, "
              f"file mode 0600; the gRPC bearer token is {device}:<secret>)")
    if certificate_dir is not None:
        from hgen.hub.device_certs import issue_certificate

        assert tls is not None and tls.client_ca_file is not None and tls.client_ca_key_file is not None
        files = issue_certificate(device, tls.client_ca_file, tls.client_ca_key_file, Path(certificate_dir))
        print(f"client certificate {files.cert_file} and key {files.key_file} (mode 0600)")
    if issued.unsynced:  # after everything the device needs was handed out
        raise HubError(f"device {device}: its credentials are issued (above), but the broker did not take them yet: "
                       f"{issued.unsynced}; the hub's gRPC accepts them now, MQTT once the broker reloads "
                       "(`hgen-hub serve` syncs at start)")


def _check_target(target: str) -> None:
    """A target no profile names (`rpi9`) enrolled a device that no bundle would ever be served to."""
    from hgen.compiler.lowering.targets import TARGETS  # the registry only: no TVM

    if target not in TARGETS:
        raise HubConfigError(f"--target {target!r} is not a target profile; valid choices: {', '.join(TARGETS.names())}")


def _check_writable(path: Path) -> None:
    """Before anything is issued: a secret that cannot be written would exist nowhere."""
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK) or path.is_dir():
        raise HubConfigError(f"--secret-file {path}: cannot write a file there")


def _write_secret(path: Path, secret: str, device: str) -> None:
    """The secret alone (what build_kit.py reads), mode 0600 from its creation, replacing `path` in one step."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise HubConfigError(f"device {device}: its new secret could not be written to {path} ({exc}); "
                             "run rotate-device to issue another") from None


def main(argv: Sequence[str] | None = None) -> int:
    quiet_unless_verbose(argv)  # first: TensorFlow (retrain) sets up its logging when it is imported
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:  # Alembic's "Context impl SQLiteImpl" on every command, and
        for chatty in ("alembic", "tf2onnx"):  # tf2onnx's conversion steps on every retrain's lowering
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        if args.verb == "serve":
            serve(args.config)
        elif args.verb == "migrate":
            migrate(args.config)
        elif args.verb == "retrain":
            return retrain(args.config, args.model, args.research)
        elif args.verb == "versions":
            versions(args.config, args.model)
        elif args.verb == "export":
            return labels.export(args.config, args.model, args.out, args.min_agreement)
        elif args.verb in ("rollback", "publish"):
            release(args.config, args.verb, args.model, getattr(args, "to", None), getattr(args, "bundle", ()),
                    getattr(args, "keras", None))
        elif args.verb == "add-gold":
            return labels.add_gold(args.config, args.folder)
        elif args.verb == "list-gold":
            return labels.list_gold(args.config, args.disputed)
        elif args.verb == "retire-gold":
            return labels.retire_gold(args.config, args.sample)
        elif args.verb == "add-user":
            add_user(args.config, args.name, args.role, args.invite, args.replace)
        elif args.verb in ("add-device", "revoke-device", "rotate-device"):
            device_verb(args.config, args.verb, args.device, getattr(args, "target", None),
                        getattr(args, "certificate_dir", None), getattr(args, "secret_file", None))
        else:
            check_config(args.config)
    except HGenError as error:
        print(f"hgen-hub {args.verb}: error: {error}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES if isinstance(error, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
