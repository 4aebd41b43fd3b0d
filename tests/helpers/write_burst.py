"""A process that rewrites one hosts file with HostsFileWriter as fast as it can, for crash tests.

Run as `python -m tests.helpers.write_burst TARGET FIRST_GENERATION` from the repository root. It
prints one line, `writing`, once the writer exists, then writes `render(n)` for n = FIRST, FIRST+1,
... until it is killed. `render(n)` is large (about 100 KB) and alternates between 2000 and 1500
host lines, with the generation in the header and in the trailer, so a torn or mixed file can
never equal `render(n)` for the n its header names. A test kills the process at random moments
and checks the file with `render`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["main", "render"]


def render(generation: int) -> str:
    """The complete file of one generation: header, host lines, `# end N` trailer."""
    count = 2000 if generation % 2 == 0 else 1500
    lines = [f"# burst generation {generation} hosts {count}"]
    lines.extend(
        f"10.{(generation + i) % 250}.{i // 250}.{i % 250 + 1} "
        f"worker-{i}-g{generation}.node.internal worker-{i}-g{generation}"
        for i in range(count)
    )
    lines.append(f"# end {generation}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    import structlog

    # Quiet: a blocked stdout pipe would stall the burst.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from nodehosts.adapters.hostsfile import HostsFileWriter

    target, generation = Path(argv[1]), int(argv[2])
    writer = HostsFileWriter(target)
    print("writing", flush=True)
    while True:
        writer.write(render(generation))
        generation += 1


if __name__ == "__main__":
    main(sys.argv)
