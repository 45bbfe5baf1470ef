"""Progress bars live in ``featurestore._progress`` (the bottom layer), so encoders and jobs share one."""

from featurestore._progress import ProgressCallback, progress_enabled, rich_progress

__all__ = ["ProgressCallback", "progress_enabled", "rich_progress"]
