"""Waiting in tests for something another process does."""

import time


def wait_for(condition, timeout: float, what: str = "the condition", interval: float = 0.2):
    """``condition()``'s first truthy value, polled every ``interval`` seconds; after ``timeout``
    seconds the test fails saying ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s: {what}")
