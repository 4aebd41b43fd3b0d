"""nodehosts as the lab runs it on lb-0, against a real control plane on loopback.

Contract: `start_lab_daemon(plane, workdir, *extra)` starts `nodehosts run` (a `DaemonProcess`
subprocess) with lb-0's rendered /etc/nodehosts/config.toml, static-hosts and kubeconfig, with
only paths and listeners rewritten (assert-checked, one substitution each):
- `kubeconfig`, `static_hosts`, `hosts.file` -> files under `workdir`; the kubeconfig is the
  lab's nodehosts-lb-0.kubeconfig with its server at the test apiserver;
- `dns.listen = []` -> `["127.0.0.1:PORT"]` (the lab runs CoreDNS on the hosts file; here
  nodehosts also answers, so `dig` checks the same records);
- `dns.upstream = ["10.0.2.3"]` -> `[]` (VirtualBox's resolver; tests query only loopback);
- `metrics.listen` -> a free loopback port.
It returns once the daemon listens; a port another process took meanwhile is retried with new
ones (`tests.helpers.daemon.bound`). The control socket and state directory are under
`workdir`; the log level is debug (the list/watch loop's `list_complete`, `watch_bookmark`,
`watch_started` lines). `extra` flags override the file, e.g. `--label-selector`.
The returned `LabDaemon` is a context manager (the process is killed at the end) with
`hosts()` (name -> addresses from the hosts file), `dig(name)`, `dump()` (the daemon's
`nodehosts dump --format json --from daemon`) and `metric(name, labels)`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import urllib3

from tests.helpers.controlplane import ControlPlane
from tests.helpers.daemon import PORT_ATTEMPTS, DaemonProcess, bound, nodehosts
from tests.helpers.dig import dig
from tests.helpers.net import free_port

__all__ = ["LabDaemon", "start_lab_daemon"]


def _sub(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"lab config: expected {old!r} once"
    return text.replace(old, new)


class LabDaemon(DaemonProcess):
    def __init__(self, plane: ControlPlane, workdir: Path, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        lab = plane.rendered / "nodes" / "lb-0" / "etc" / "nodehosts"
        self.hosts_file = workdir / "hosts" / "nodes.hosts"
        self.hosts_file.parent.mkdir(exist_ok=True)
        self.dns_port = free_port()  # UDP and TCP
        self.metrics_port = free_port()
        self.control_socket = workdir / "control.sock"
        static_hosts = workdir / "static-hosts"
        shutil.copyfile(lab / "static-hosts", static_hosts)
        text = (lab / "config.toml").read_text()
        text = _sub(text, '"/etc/nodehosts/kubeconfig"', f'"{plane.kubeconfig("nodehosts-lb-0")}"')
        text = _sub(text, '"/etc/nodehosts/static-hosts"', f'"{static_hosts}"')
        text = _sub(text, '"/var/lib/nodehosts/hosts/nodes.hosts"', f'"{self.hosts_file}"')
        text = _sub(text, "listen = []", f'listen = ["127.0.0.1:{self.dns_port}"]')
        text = _sub(text, 'upstream = ["10.0.2.3"]', "upstream = []")
        text = _sub(text, '"127.0.0.1:9154"', f'"127.0.0.1:{self.metrics_port}"')
        self.config = workdir / "config.toml"
        self.config.write_text(text)
        (workdir / "state").mkdir(exist_ok=True)
        super().__init__(
            [
                "--config",
                str(self.config),
                "--control-socket",
                str(self.control_socket),
                "--state-dir",
                str(workdir / "state"),
                "--log-level",
                "debug",
                *extra,
            ],
            workdir=workdir,
        )

    def __enter__(self) -> LabDaemon:
        return self

    def hosts(self) -> dict[str, list[str]]:
        """Bare name -> addresses, from the hosts file ({} before it exists)."""
        if not self.hosts_file.exists():
            return {}
        result: dict[str, list[str]] = {}
        for line in self.hosts_file.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2:
                for name in fields[1:]:
                    if "." not in name:
                        result.setdefault(name, []).append(fields[0])
        return result

    def dig(self, name: str, qtype: str = "A") -> list[str]:
        return sorted(dig("127.0.0.1", self.dns_port, name, qtype))

    def dump(self) -> dict[str, Any]:
        result = nodehosts(
            "dump",
            "--from",
            "daemon",
            "--control-socket",
            str(self.control_socket),
            "--format",
            "json",
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        text = (
            urllib3.PoolManager()
            .request("GET", f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
            .data.decode()
        )
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$")
        for line in text.splitlines():
            match = pattern.match(line)
            if match and ",".join(sorted((match["labels"] or "").split(","))).strip(",") == want:
                return float(match["value"])
        return 0.0


def start_lab_daemon(plane: ControlPlane, workdir: Path, *extra: str) -> LabDaemon:
    """A LabDaemon once it listens; ports another process took meanwhile are retried."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        daemon = LabDaemon(plane, workdir, *extra)
        if bound(daemon, dns=True, metrics=True) or attempt == PORT_ATTEMPTS:
            return daemon
        daemon.__exit__(None, None, None)
    raise AssertionError("unreachable")
