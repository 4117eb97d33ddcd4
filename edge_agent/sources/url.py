"""`url`: an RTSP/HTTP(MJPEG) stream through OpenCV, reconnected with back-off when it drops.

A stream that ends is treated as dropped (network cameras do not end), so the source reopens it.
"""

from hgen.edge_agent.sources.base import SOURCES, CaptureSource


@SOURCES.register("url")
class UrlSource(CaptureSource):
    live = True
