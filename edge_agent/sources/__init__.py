"""Frame sources through OpenCV, one module per kind (video file, image folder, camera index, rtsp/http URL).

`open_source(config)` looks the kind up in `SOURCES`; live kinds reopen a dropped stream with back-off.
"""

from hgen.edge_agent.sources.base import SOURCES, Frame, FrameSource, SourceStats, is_live, open_source

__all__ = ["SOURCES", "Frame", "FrameSource", "SourceStats", "is_live", "open_source"]
