"""The local stack: real servers on free loopback ports for the demo and the tests.

`LocalStack` starts them (``blogflow local up`` from a shell, see `blogflow.local.cli`),
`load_env` reads the env file it writes.
"""

from blogflow.local.stack import (
    ALL_SERVICES,
    DEFAULT_ENV_FILE,
    DEFAULT_STATE_DIR,
    FLINK_SERVICES,
    LocalStack,
    LocalStackError,
    ProcessRecord,
    StackAlreadyRunningError,
    find_pubsub_emulator,
    find_redis_server,
    load_env,
)

__all__ = [
    "ALL_SERVICES",
    "DEFAULT_ENV_FILE",
    "FLINK_SERVICES",
    "DEFAULT_STATE_DIR",
    "LocalStack",
    "LocalStackError",
    "ProcessRecord",
    "StackAlreadyRunningError",
    "find_pubsub_emulator",
    "find_redis_server",
    "load_env",
]
