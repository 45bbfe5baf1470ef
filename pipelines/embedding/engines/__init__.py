"""Engines that run an embedding job's encoding somewhere other than this process: importing this package registers
them with the job (``pipelines.embedding._job.register_engine``), which looks them up by name and never imports them.
Ray itself is imported only when a job runs on it."""

from pipelines.embedding.engines import _ray  # noqa: F401 - registers engine="ray"

__all__: list[str] = []  # nothing to import from here: engines are chosen by name (engine="ray")
