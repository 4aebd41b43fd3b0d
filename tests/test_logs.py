"""nodehosts.logs: one JSON object per line, whichever threads log at once."""

from __future__ import annotations

import json
import threading
import time

import structlog

from nodehosts import logs


class SlowStream:
    """A stream whose write hands the GIL over between characters, as a pipe that takes a
    long line in several pieces would: lines interleave unless the writers take turns."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        for char in text:
            self.parts.append(char)
            time.sleep(0)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_lines_from_several_threads_never_interleave() -> None:
    """The watch thread and the event loop log at the same time: every line must stay one
    whole JSON object. (Each log call built its own logger with its own lock, so the lock
    kept nobody out.)"""
    stream = SlowStream()
    before = structlog.get_config()
    logs.configure("json", "info", stream=stream)  # type: ignore[arg-type]
    try:
        log = structlog.get_logger("test")

        def many(thread: int) -> None:
            for number in range(20):
                log.info("line", thread=thread, number=number, padding="x" * 40)

        threads = [threading.Thread(target=many, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        lines = "".join(stream.parts).splitlines()
        assert len(lines) == 80
        seen = {(entry["thread"], entry["number"]) for entry in map(json.loads, lines)}
        assert len(seen) == 80
    finally:
        structlog.configure(**before)
