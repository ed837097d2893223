"""``blogflow local``: start, inspect and stop the local stack from a shell.

``up`` leaves the servers running in the background after it exits; ``env`` prints their
addresses as ``KEY=VALUE`` lines; ``down`` stops exactly the processes ``up`` started::

    blogflow local up
    eval "$(blogflow local env | sed 's/^/export /')"
    blogflow local down
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from blogflow.local.stack import (
    ALL_SERVICES,
    DEFAULT_STATE_DIR,
    FLINK_SERVICES,
    FLINK_SLOTS,
    LocalStack,
    LocalStackError,
    load_env,
)

__all__ = ["local"]

_LOGGER = logging.getLogger(__name__)

_STATE_DIR_OPTION = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Directory that holds the stack's state file, logs and server files.",
)


@click.group()
def local() -> None:
    """Run real servers (Redis, MongoDB, SQS/Kinesis, Pub/Sub, GitHub, Flink) on free loopback
    ports."""


@local.command()
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the KEY=VALUE env file.  [default: <state-dir>/local.env]",
)
@_STATE_DIR_OPTION
@click.option(
    "--no-pubsub",
    is_flag=True,
    default=False,
    help="Do not start the Pub/Sub emulator (it is the slowest server to start).",
)
@click.option(
    "--flink",
    is_flag=True,
    default=False,
    help=f"Also start a standalone Flink cluster (a JobManager and a TaskManager with "
    f"{FLINK_SLOTS} slots): run jobs on it with --runner flink --flink_master $FLINK_MASTER.",
)
def up(env_file: Path | None, state_dir: Path, no_pubsub: bool, flink: bool) -> None:
    """Start the servers in the background and write the env file."""
    services = [name for name in ALL_SERVICES if not (no_pubsub and name == "pubsub")]
    if flink:
        services += FLINK_SERVICES
    stack = LocalStack(state_dir=state_dir, env_file=env_file, services=services)
    try:
        stack.up()
    except LocalStackError as error:
        raise click.ClickException(str(error)) from error
    if stack.reused:
        click.echo(f"A local stack is already running from {stack.state_file}; reusing it.")
    for name, address in stack.addresses.items():
        record = stack.records[name]
        click.echo(
            f"{name:<17} {address:<30} pid {record.pid:<7} up in {record.startup_seconds:.2f} s"
        )
    for name, reason in stack.skipped.items():
        click.echo(f"{name:<17} skipped: {reason}")
    click.echo(f"env file: {stack.env_file}")
    where = f" --state-dir {state_dir}" if state_dir != DEFAULT_STATE_DIR else ""
    click.echo(f"load it:  eval \"$(blogflow local env{where} | sed 's/^/export /')\"")
    click.echo(f"stop:     blogflow local down{where}")


@local.command()
@_STATE_DIR_OPTION
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds each server gets to exit after SIGTERM before it gets SIGKILL.",
)
def down(state_dir: Path, timeout: float) -> None:
    """Stop exactly the processes that `up` started, by pid."""
    stack = LocalStack(state_dir=state_dir)
    try:
        outcomes = stack.down(timeout=timeout)
    except LocalStackError as error:
        raise click.ClickException(str(error)) from error
    if not outcomes:
        click.echo(f"No local stack is recorded in {state_dir}.")
        return
    for name, outcome in outcomes.items():
        click.echo(f"{name:<17} {outcome}")


@local.command()
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The env file to print.  [default: the one `up` wrote]",
)
@_STATE_DIR_OPTION
def env(env_file: Path | None, state_dir: Path) -> None:
    """Print the running stack's KEY=VALUE lines, for `eval` in a shell."""
    stack = LocalStack(state_dir=state_dir)
    try:
        running = stack.running()
        recorded = stack.recorded_env_file()
    except LocalStackError as error:
        raise click.ClickException(str(error)) from error
    if not running:
        raise click.ClickException(
            f"no local stack is running from {state_dir}: start one with `blogflow local up`"
        )
    path = env_file or recorded
    if path is None or not path.is_file():
        raise click.ClickException(f"the env file {path} does not exist: run `blogflow local up`")
    for key, value in load_env(path).items():
        click.echo(f"{key}={value}")
