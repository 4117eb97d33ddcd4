"""Where results go: `jsonl` file, `mqtt` topic (from agent.yaml) and a Python callback (from code)."""

from hgen.edge_agent.sinks.base import SINKS, Sink, open_sinks
from hgen.edge_agent.sinks.callback import CallbackSink

__all__ = ["SINKS", "CallbackSink", "Sink", "open_sinks"]
