"""Daemon, thread-control and store commands of damocles-worker (sealing threads)."""


def add_commands(sub) -> None:
    """Registered by issue #3's daemon; nothing yet."""
