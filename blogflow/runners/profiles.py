"""Runner profiles: short names for the runners blogflow is run on, offline-safe by default.

Beam's default DirectRunner first tries to download the Prism binary; blogflow never relies
on it. Batch jobs and drains default to ``FnApiRunner``; TestStream and Pub/Sub streaming
run on ``BundleBasedDirectRunner``; clusters take Beam's own runner names or these
profiles.
"""

from __future__ import annotations

__all__ = ["DEFAULT_RUNNER", "PROFILES", "resolve_runner"]

#: The runner used when none is given: in-process, portable, runs Splittable DoFns.
DEFAULT_RUNNER = "FnApiRunner"

PROFILES: dict[str, str] = {
    "fnapi": "FnApiRunner",
    "direct": "BundleBasedDirectRunner",
    "prism": "PrismRunner",
    "dask": "apache_beam.runners.dask.dask_runner.DaskRunner",
    "flink": "FlinkRunner",
    "dataflow": "DataflowRunner",
}


def resolve_runner(name: str | None) -> str:
    """A Beam runner name for a profile name, a Beam runner name, or None (the default)."""
    if not name:
        return DEFAULT_RUNNER
    return PROFILES.get(name.lower(), name)
