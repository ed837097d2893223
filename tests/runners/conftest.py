"""Fixtures of the runner tests: the pipeline tests' GitHub stand-in and repository."""

from tests.pipelines.conftest import github, repo

__all__ = ["github", "repo"]
