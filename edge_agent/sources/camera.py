"""`camera`: a local camera by index (`uri: "0"`), reopened with back-off when it vanishes (USB unplugged)."""

from hgen.edge_agent.errors import SourceSettingError
from hgen.edge_agent.sources.base import SOURCES, CaptureSource


@SOURCES.register("camera")
class CameraSource(CaptureSource):
    live = True

    def _target(self) -> int:
        try:
            return int(self.config.uri)
        except ValueError:
            raise SourceSettingError(f"camera uri must be a device index such as '0', got {self.config.uri!r}") from None
