"""`video`: a video file read through OpenCV (FFmpeg / MJPG backends); ends at EOF unless `loop`."""

from hgen.edge_agent.sources.base import SOURCES, CaptureSource


@SOURCES.register("video")
class VideoFileSource(CaptureSource):
    """Not live: the end of the file is the end of the stream (or, with `loop`, its restart)."""
