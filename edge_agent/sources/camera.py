"""`camera`: a local camera by index (`uri: "0"`) or, on Linux, by V4L2 device path (`/dev/video0`, or the stable
`/dev/v4l/by-id/...` name that survives replugging and reboots), reopened with back-off when it vanishes.

OpenCV opens a device path by name through its V4L2 backend (cap_v4l.cpp opens the path it is given), so a path is
opened with CAP_V4L2: left to CAP_ANY, FFmpeg would try it first as a video file.
"""

import re

from hgen.edge_agent.config import camera_index
from hgen.edge_agent.errors import SourceSettingError
from hgen.edge_agent.sources.base import SOURCES, CaptureSource

DEVICE_PATH = re.compile(r"/dev/(video\d+|v4l/by-(id|path)/[^/\s]+)")


@SOURCES.register("camera")
class CameraSource(CaptureSource):
    live = True

    @classmethod
    def uri_problem(cls, uri: str) -> str | None:
        """Anything but an index or a V4L2 device path would only fail at `run`, and without naming the key."""
        if camera_index(uri) is not None or DEVICE_PATH.fullmatch(uri):
            return None
        return (f"a camera is a device index such as '0' or a V4L2 device path such as /dev/video0 or "
                f"/dev/v4l/by-id/<name>, got {uri!r} (a video file is kind video, a stream kind url)")

    def _target(self) -> int | str:
        problem = self.uri_problem(self.config.uri)
        if problem is not None:
            raise SourceSettingError(f"source.uri: {problem}")
        index = camera_index(self.config.uri)
        return self.config.uri if index is None else index

    def _api(self) -> int:
        """V4L2 for a device path (the backend that opens one by name); any backend for an index, as before."""
        return int(self._cv2.CAP_V4L2) if camera_index(self.config.uri) is None else super()._api()
