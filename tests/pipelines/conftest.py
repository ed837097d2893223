"""Fixtures of the pipeline tests: the GitHub stand-in and a repository on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from github import Auth, Github

from blogflow.local.github import GitHubStandIn

#: The token the backup tests link their users with.
TOKEN = "ghp_backup_pipeline_token_0123456789"


def client(github: GitHubStandIn, token: str = TOKEN) -> Github:
    """A PyGithub client of the stand-in, without retries or pacing."""
    return Github(
        auth=Auth.Token(token),
        base_url=github.url,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    """The GitHub stand-in, for this test."""
    with GitHubStandIn() as server:
        yield server


@pytest.fixture
def repo(github: GitHubStandIn, unique_name: str) -> Iterator[Any]:
    """A repository of this test's own on the stand-in, owned by ``TOKEN``'s user."""
    gh = client(github)
    created = gh.get_user().create_repo(unique_name, auto_init=True)
    yield created
    gh.close()
