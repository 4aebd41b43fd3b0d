"""Helpers shared by the tests: real counterparts and ways to wait for them.

- `dnsmasq.Dnsmasq`: a real dnsmasq on a free loopback port (a hosts-file consumer, or a stand-in
  upstream DNS server); `dnsmasq.dnsmasq_version()`; `coredns.CoreDNS`: the real CoreDNS. Both
  are a `dnsserver.DnsServerProcess` (start on a free port with retry, stop, dig against it).
- `dig.query` / `dig.dig` / `dig.wait_for_answer`: the real dig, parsed into `dig.Response`.
- `net.free_port`: a loopback port free for both UDP and TCP (may be taken before it is bound:
  start servers with `net.with_free_port`); `net.refusing_port`: a held port that refuses.
- `polling.wait_until`: poll with a deadline instead of sleeping.
- `csrs`: CertificateSigningRequest objects with real x509 requests.
- `daemon.start_daemon` / `daemon.DaemonProcess`: `nodehosts run` as a subprocess;
  `daemon.start_listening_daemon` / `start_dns_daemon`: with DNS/metrics on free ports, retried;
  `daemon.nodehosts` and `daemon.nodehosts_dump`: the other commands, run to completion.
- `cluster.lab_node` / `cluster.fake_api`: Nodes of the lab and a fake API server serving them.
- `files.read_text_or_empty` / `files.wait_for_line` / `files.replace_by_rename`: files a
  daemon writes or watches.
- `service`: the service manager's side (NOTIFY_SOCKET, HTTP probes, metrics).
- `records.node_host`: a Node's Host as the record builder makes it.

Import from the submodules (`from tests.helpers.dnsmasq import Dnsmasq`); the suite runs as
`python -m pytest` from the repository root, which puts `tests` on the import path.
"""
