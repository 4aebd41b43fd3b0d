"""Booted Debian containers for the end-to-end test: systemd-nspawn on an overlay of a cached root.

Contract:
- `cached_root(suite)` builds (once, with tests/e2e/mkroot.sh) and returns a minimal bootable
  Debian root under $NODEHOSTS_E2E_CACHE (default /var/cache/nodehosts-e2e). The cached root is
  never written to: each `Container` boots an overlay of it whose upper layer is thrown away.
- `Container(suite, root)` as a context manager: mounts the overlay, boots it with
  `systemd-nspawn --register=no --keep-unit --boot` sharing the host's network (so the container
  reaches the fake API server on the host's loopback, and the Debian archive), waits for
  `systemctl is-system-running`, and on exit powers it off, unmounts and deletes the overlay.
- `run(*cmd)` runs a command inside (nsenter into the container's init: all its namespaces)
  with a clean environment, returns CompletedProcess; `check=True` raises with the output.
- `path(p)` is the host path of the container's file p (writes land in the overlay).
- `report(commands)` runs each command inside and returns "$ command" and its output per
  command, never raising (for failure messages); `diagnostics()` is that for the nodehosts unit.
- Also for other harnesses on these containers (tests/lab): `host(*cmd)` runs a command on the
  host with the system PATH and raises ContainerError with its stderr; `claim(directory)` marks
  a work directory as this process's and `owner_alive(directory)` says whether the process that
  claimed it still runs (what a killed earlier run left is cleaned up on the next start).
- The suite's downloaded .debs are kept between runs in the cache's apt-archives/<suite>: they
  are hard-linked into the container's /var/cache/apt/archives before it boots, and the ones it
  downloaded are linked back when it stops, so a warm run downloads only the package indexes.
  (Not a bind mount: concurrent runs would fight over apt's lock on the directory.)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("NODEHOSTS_E2E_CACHE", "/var/cache/nodehosts-e2e"))
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerError(RuntimeError):
    pass


def host(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run CMD on the host (root's tools: mount, ip, ...), text output captured."""
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "PATH": SYSTEM_PATH},
    )  # fmt: skip
    if check and result.returncode != 0:
        raise ContainerError(f"{shlex.join(cmd)} exited {result.returncode}: {result.stderr}")
    return result


def claim(directory: Path) -> None:
    """Mark DIRECTORY as this process's (see `owner_alive`)."""
    (directory / "owner.pid").write_text(str(os.getpid()))


def owner_alive(directory: Path) -> bool:
    """Whether the process that claimed DIRECTORY still runs (False: unclaimed or gone)."""
    try:
        return Path(f"/proc/{int((directory / 'owner.pid').read_text())}").exists()
    except (OSError, ValueError):
        return False


def cached_root(suite: str, variant: str = "") -> Path:
    """The cached root of SUITE (and VARIANT: "lab"), built with mkroot.sh when absent
    (about 40 s, downloads)."""
    result = subprocess.run(
        ["bash", str(HERE / "mkroot.sh"), suite, *([variant] if variant else [])],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": SYSTEM_PATH, "NODEHOSTS_E2E_CACHE": str(CACHE)},
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise ContainerError(f"mkroot.sh {suite} failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def _cleanup_stale_runs() -> None:
    """Unmount and delete overlays left by an earlier run that was killed (ours only)."""
    runs = CACHE / "runs"
    if not runs.is_dir():
        return
    for run_dir in runs.iterdir():
        if owner_alive(run_dir):
            continue  # a live test process owns it
        host("umount", "-l", str(run_dir / "merged"), check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


class Container:
    def __init__(
        self,
        suite: str,
        root: Path,
        *,
        boot_timeout: float = 90.0,
        machine: str | None = None,
        nspawn_args: Sequence[str] = (),
        nspawn_env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """MACHINE names the container (default nodehosts-e2e-SUITE); NSPAWN_ARGS and
        NSPAWN_ENV are added to systemd-nspawn's command line and environment, PREEXEC_FN
        runs in its process before exec (tests/lab: own network, binds, cgroups)."""
        self.suite = suite
        self.root = root
        self.boot_timeout = boot_timeout
        self.machine = machine or f"nodehosts-e2e-{suite}"
        self.nspawn_args = list(nspawn_args)
        self.nspawn_env = dict(nspawn_env or {})
        self.preexec_fn = preexec_fn
        self.run_dir = Path()  # set by start(): a fresh directory under CACHE/runs
        self.merged = Path()
        self.console_log = Path()
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None
        self.boot_seconds: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Container:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        _cleanup_stale_runs()
        (CACHE / "runs").mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{self.suite}-", dir=CACHE / "runs"))
        self.merged = self.run_dir / "merged"
        self.console_log = self.run_dir / "console.log"
        for sub in ("upper", "work", "merged"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        claim(self.run_dir)
        self._seed_apt_archives()
        host(
            "mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={self.root},upperdir={self.run_dir / 'upper'},"
            f"workdir={self.run_dir / 'work'}",
            str(self.merged),
        )  # fmt: skip
        started = time.monotonic()
        with self.console_log.open("wb") as console:
            self.nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    "-D", str(self.merged),
                    "--register=no",
                    "--keep-unit",
                    "--boot",
                    "--console=passive",
                    f"--machine={self.machine}",
                    *self.nspawn_args,
                ],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env={**os.environ, "PATH": SYSTEM_PATH, **self.nspawn_env},
                start_new_session=True,
                # The lab moves nspawn into its own cgroups before exec (a few writes, no locks).
                preexec_fn=self.preexec_fn,  # noqa: PLW1509
            )  # fmt: skip
        self.init_pid = self._wait_for_init()
        state = self._wait_until_booted()
        self.boot_seconds = time.monotonic() - started
        if state not in ("running", "degraded"):
            raise ContainerError(f"{self.suite}: system state {state!r}\n{self.diagnostics()}")

    @property
    def _shared_archives(self) -> Path:
        return CACHE / "apt-archives" / self.suite

    @property
    def _own_archives(self) -> Path:
        # In the overlay's upper layer (same filesystem as the cache: hard links work).
        return self.run_dir / "upper" / "var" / "cache" / "apt" / "archives"

    def _seed_apt_archives(self) -> None:
        (self._own_archives / "partial").mkdir(parents=True, exist_ok=True)
        if self._shared_archives.is_dir():
            for deb in self._shared_archives.glob("*.deb"):
                with contextlib.suppress(OSError):
                    os.link(deb, self._own_archives / deb.name)

    def _harvest_apt_archives(self) -> None:
        if not self._own_archives.is_dir():
            return
        self._shared_archives.mkdir(parents=True, exist_ok=True)
        for deb in self._own_archives.glob("*.deb"):
            with contextlib.suppress(OSError):  # FileExistsError: already cached
                os.link(deb, self._shared_archives / deb.name)

    def _wait_for_init(self) -> int:
        assert self.nspawn is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise ContainerError(
                    f"systemd-nspawn exited with {self.nspawn.returncode}:\n"
                    + self.console_log.read_text(errors="replace")
                )
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    if comm == "systemd":
                        return int(pid)
            time.sleep(0.1)
        raise ContainerError("the container's systemd did not start within 30 s")

    def _wait_until_booted(self) -> str:
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            result = self.run("systemctl", "is-system-running", check=False, timeout=10)
            state = result.stdout.strip()
            if state in ("running", "degraded", "maintenance", "stopping"):
                return state
            time.sleep(0.2)
        return state or "unknown (timed out)"

    def stop(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            # SIGTERM to systemd-nspawn asks the container's systemd for a clean poweroff.
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=10)
        self.nspawn = None
        if self.run_dir == Path():
            return
        self._harvest_apt_archives()
        if self.merged.is_dir():
            host("umount", str(self.merged), check=False)
            if os.path.ismount(self.merged):
                host("umount", "-l", str(self.merged), check=False)
        if not os.path.ismount(self.merged):
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ------------------------------------------------------------------ inside

    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run CMD inside the container as root, with a clean environment."""
        assert self.init_pid is not None, "container not started"
        clean = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "TERM": "dumb", "HOME": "/root"}
        clean.update(env or {})
        full = [
            "nsenter", "-t", str(self.init_pid), "-a", "--wd=/",
            "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *cmd,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                full, capture_output=True, text=True, timeout=timeout, input=input, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise ContainerError(f"timed out after {timeout}s: {shlex.join(cmd)}") from error
        if check and result.returncode != 0:
            raise ContainerError(
                f"[{self.suite}] {shlex.join(cmd)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
            )
        return result

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, **kwargs)  # type: ignore[arg-type]

    def path(self, inside: str) -> Path:
        return self.merged / inside.lstrip("/")

    def report(self, commands: Iterable[Sequence[str]], *, timeout: float = 15) -> str:
        """Each command run inside, as "$ command" and its output; never raises."""
        parts = []
        for cmd in commands:
            with contextlib.suppress(Exception):
                result = self.run(*cmd, check=False, timeout=timeout)
                parts.append(f"$ {shlex.join(cmd)}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)

    def diagnostics(self) -> str:
        """What to print when something fails: failed units, the unit's journal, the console."""
        parts = [f"===== container {self.suite}"]
        parts.append(
            self.report(
                [
                    ["systemctl", "--failed", "--no-pager"],
                    ["systemctl", "status", "nodehosts", "--no-pager", "--lines=0"],
                    ["journalctl", "-u", "nodehosts", "--no-pager", "-n", "80", "-o", "short-iso"],
                ]
            )
        )
        with contextlib.suppress(OSError):
            parts.append(
                "--- console (tail)\n" + self.console_log.read_text(errors="replace")[-3000:]
            )
        return "\n".join(parts)
