"""A hub in its own process (HubApp plus the simulated crowd), so a test or the soak benchmark can `kill -9` it
the way a power cut or a redeployment would, and start it again on the same database, ports and MQTT client id.

Run as `python -m hgen.hub.testing.hub_process CONFIG.yaml`: prints `hub ready` once serving, then serves until
killed. The simulated people (labelled so) answer with the model's runner-up, as in `edge_agent.testing.start_hub`.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

READY = "hub ready"


@dataclass
class HubProcess:
    """One restartable hub process; `config` is the hub's YAML config as a dict (fixed ports and client id)."""

    config_path: Path
    config: dict[str, Any]
    process: subprocess.Popen | None = None
    kills: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.config['grpc']['port']}"

    def start(self, timeout_s: float = 60.0) -> None:
        from hgen.hub.testing.services import _wait_for_line

        self.config_path.write_text(yaml.safe_dump(self.config))
        self.process = subprocess.Popen([sys.executable, "-m", "hgen.hub.testing.hub_process", str(self.config_path)],
                                        stderr=subprocess.PIPE, text=True)
        _wait_for_line(self.process, READY, timeout_s)

    def kill9(self) -> None:
        from hgen.hub.testing.services import kill9

        assert self.process is not None
        kill9(self.process)
        self.kills += 1

    def stop(self) -> None:
        from hgen.hub.testing.services import stop_process

        if self.process is not None:
            stop_process(self.process, grace_s=15.0)


def hub_process_config(workdir: Path, db_url: str, devices: list[str], grpc_port: int,
                       mqtt: dict[str, Any] | None = None) -> dict[str, Any]:
    """A hub config for `HubProcess`: fixed gRPC port, and (with `mqtt`) the caller's broker section, whose
    client_id must stay the same across restarts so the broker keeps the hub's session and queued samples."""
    data: dict[str, Any] = {"devices": devices, "knowledge_base": {"url": db_url, "image_dir": str(workdir / "images")},
                            "grpc": {"port": grpc_port, "reply_poll_s": 0.1}}
    if mqtt is not None:
        data["mqtt"] = mqtt
    return data


def main(argv: list[str]) -> int:
    from hgen.edge_agent.testing import ranked_class
    from hgen.hub.app import HubApp
    from hgen.hub.config import parse_hub_config
    from hgen.hub.crowd import SimulatedCrowd
    from hgen.hub.testing.crowd import CrowdDriver

    app = HubApp(parse_hub_config(yaml.safe_load(Path(argv[0]).read_text()))).start()
    kb = app.service.kb
    CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(3, 1.0, 10, seed=0),
                lambda sample_id: ranked_class(kb, sample_id, 1)).start()
    print(READY, file=sys.stderr, flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


def kb_counts(db_url: str) -> tuple[set[str], int, int]:
    """(ids of the samples stored, replies stored, samples with more than one reply) in a hub's database,
    read with a connection of our own (the hub may be dead or alive)."""
    from sqlalchemy import func, select

    from hgen.hub.kb.models import Reply, Sample
    from hgen.hub.kb.store import KnowledgeBase

    kb = KnowledgeBase.open(db_url, migrate=False)
    try:
        with kb.session() as s:
            samples = set(s.scalars(select(Sample.id)))
            replies = s.scalar(select(func.count()).select_from(Reply))
            multi = s.scalar(select(func.count()).select_from(
                select(Reply.sample_id).group_by(Reply.sample_id).having(func.count() > 1).subquery()))
        return samples, int(replies or 0), int(multi or 0)
    finally:
        kb.close()
