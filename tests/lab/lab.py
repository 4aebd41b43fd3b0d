"""The lab's machines as booted Debian containers on a private network (tests/lab).

Contract:
- `Network(workdir)`: a network namespace of our own holding a bridge with 10.240.0.2/24
  (cluster.env's DHCP_SERVER_IP) and dnsmasq as the DHCP server on it (range
  10.240.0.101-200), the way VirtualBox's host-only network with a DHCP server behaves. The
  lab's 10.240.0.0/24 exists only there: the host's own routes never see it.
- `Node(name, ...)`: a booted container (tests/e2e/nspawn.py, the cached `bookworm-lab` root)
  with its own network namespace and a veth `eth1` into the bridge: lb-0 and controller-N get
  their static address and a default route via the bridge (a VM's NAT interface gives it
  one), workers run dhclient (dnsmasq gives them the same route). Laid out like a Vagrant
  machine: the provisioning files in /opt/lab/provisioning, its secrets bundle in
  /opt/lab/bundle, the binaries in /opt/lab-binaries (LAB_BINARIES: symlinks into the
  upstream binaries, mounted at /opt/lab-upstream, plus the stand-in calico.yaml), the image
  tars in /opt/lab-images; `env` is added to every script's environment (test_lab.lab_env).
- What a container needs for a kubelet and containerd, and a VM has anyway (see
  /work/shared/notes/upstream.md "A kubelet + containerd inside systemd-nspawn"), set up here
  and never by the provisioning scripts:
  * all capabilities, no nspawn syscall filter (runc needs keyrings and bpf), /dev/kmsg;
  * /var/lib/containerd and /var/lib/kubelet on the host's disk (overlayfs cannot be an upper
    directory on the container's overlay root);
  * the cgroup v1 hierarchies writable inside, each container in a cgroup of its own (the
    host has cgroup v1 controllers), and a kubelet drop-in `failCgroupV1: false` (Kubernetes
    1.35+ refuses cgroup v1 by default; a Debian 12 VM has cgroup v2);
  * containerd's restrict_oom_score_adj (a drop-in): this host withholds CAP_SYS_RESOURCE,
    so nothing may lower an oom_score_adj below 0 (the pod sandbox asks for -998);
  * only /proc/sys/net writable (the node's own network namespace): the kernel settings the
    kubelet wants (vm.overcommit_memory=1, kernel.panic=10, ...) are shown to it in bind-mounted
    files instead of being applied to the shared host kernel;
  * a modules.builtin naming overlay and br_netfilter (built into this kernel, which has no
    module files), so node.sh's modprobe finds them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "provisioning"
sys.path.insert(0, str(REPO / "tests/e2e"))

from nspawn import SYSTEM_PATH, Container, ContainerError, host  # noqa: E402

PREFIX = "10.240.0"
BRIDGE_IP = f"{PREFIX}.2"
LB_IP = f"{PREFIX}.40"
DHCP_RANGE = (f"{PREFIX}.101", f"{PREFIX}.200")
SUITE = "bookworm"
# What the lab runs with here: one controller, two workers (the CI memory budget).
LAB_ENV = {"CONTROLLER_COUNT": "1", "WORKER_COUNT": "2", "LB_COUNT": "1"}
# The kubelet's kernel settings (pkg/kubelet/cm setupKernelTunables), shown, not applied.
KUBELET_KERNEL = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
KUBELET_DROPIN_DIR = "/etc/kubernetes/kubelet.conf.d"
UPSTREAM_MOUNT = "/opt/lab-upstream"  # NODEHOSTS_UPSTREAM_BIN inside each node


sh = host  # root's tools on the host (ip, mount, ...): nspawn.py's, output captured


def cleanup_stale_labs(cache: Path) -> None:
    """What a killed earlier run left (ours only: its owner process is gone): dnsmasq, the
    network namespace, the cgroups, the work directory. Its containers' overlays are
    cleaned by nspawn.py."""
    for workdir in cache.glob("lab-*"):
        try:
            owner = int((workdir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((workdir / "net/dnsmasq.pid").read_text())
            if "dnsmasq" in Path(f"/proc/{pid}/comm").read_text():
                os.kill(pid, signal.SIGTERM)
        sh("ip", "netns", "del", f"nhlab-{owner}", check=False)
        for own in _own_cgroups().values():
            for cgroup in own.glob(f"nodehosts-lab-{owner}-*"):
                _rmdir_tree(cgroup)
        shutil.rmtree(workdir, ignore_errors=True)


def _rmdir_tree(cgroup: Path) -> None:
    """Remove a cgroup and its children (cgroup directories go with rmdir, deepest first)."""
    subs = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for sub in [*subs, cgroup]:
        with contextlib.suppress(OSError):
            sub.rmdir()


class Network:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ns = f"nhlab-{os.getpid()}"
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.hostsfile = workdir / "dhcp-hosts"
        self.leases = workdir / "dnsmasq.leases"
        self.log = workdir / "dnsmasq.log"
        self._veths = 0

    def __enter__(self) -> Network:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sh("ip", "netns", "add", self.ns)
        ip = ("ip", "-n", self.ns)
        sh(*ip, "link", "set", "lo", "up")
        sh(*ip, "link", "add", "br0", "type", "bridge")
        sh(*ip, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0")
        sh(*ip, "link", "set", "br0", "up")
        self.hostsfile.write_text("")
        with self.log.open("wb") as log:
            self.dnsmasq = subprocess.Popen(
                [
                    "ip", "netns", "exec", self.ns, "dnsmasq", "--keep-in-foreground",
                    "--conf-file=/dev/null", "--port=0", "--interface=br0", "--bind-interfaces",
                    f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},255.255.255.0,2m",
                    f"--dhcp-leasefile={self.leases}", f"--dhcp-hostsfile={self.hostsfile}",
                    "--dhcp-authoritative", "--log-dhcp", "--log-facility=-", "--user=root",
                    f"--pid-file={self.workdir / 'dnsmasq.pid'}",
                ],
                stdout=log, stderr=subprocess.STDOUT, env={"PATH": SYSTEM_PATH},
            )  # fmt: skip
        time.sleep(0.5)
        if self.dnsmasq.poll() is not None:
            raise ContainerError("dnsmasq exited:\n" + self.log.read_text(errors="replace"))

    def plug(self, init_pid: int, ifname: str = "eth1") -> None:
        """A veth from the bridge into the network namespace of INIT_PID, named IFNAME there."""
        self._veths += 1
        host_end = f"vl{os.getpid() % 100000}-{self._veths}"
        sh("ip", "-n", self.ns, "link", "add", host_end, "type", "veth",
           "peer", "name", ifname, "netns", str(init_pid))  # fmt: skip
        sh("ip", "-n", self.ns, "link", "set", host_end, "master", "br0", "up")

    def assign(self, mac: str, address: str) -> None:
        """From now on, DHCP gives MAC the address ADDRESS (a new lease; the old one is refused)."""
        self.hostsfile.write_text(f"{mac},{address}\n")
        assert self.dnsmasq is not None
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.workdir / "dnsmasq.pid").read_text())
            os.kill(pid, signal.SIGHUP)

    def stop(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.dnsmasq.wait(timeout=10)
        self.dnsmasq = None
        sh("ip", "netns", "del", self.ns, check=False)


def _own_cgroups() -> dict[str, Path]:
    """Mount point -> this process's cgroup directory, for every hierarchy it is in."""
    dirs: dict[str, Path] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mount = Path("/sys/fs/cgroup/unified")
        elif controllers.startswith("name="):
            mount = Path("/sys/fs/cgroup") / controllers[len("name=") :]
        else:
            mount = Path("/sys/fs/cgroup") / controllers.split(",")[0]
        if (mount / "cgroup.procs").exists():
            dirs[str(mount)] = mount / path.lstrip("/")
    return dirs


class Node:
    """One machine of the lab (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        root: Path,
        network: Network,
        workdir: Path,
        *,
        binaries: Path,
        upstream: Path,
        images: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.extra_env = dict(env or {})
        self.network = network
        self.workdir = workdir / name
        self.cgroups = [
            own / f"nodehosts-lab-{os.getpid()}-{name}" for own in _own_cgroups().values()
        ]
        state = self.workdir
        for sub in ("containerd", "kubelet"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "hostname").write_text(name + "\n")
        args = [
            "--private-network",
            "--capability=all",
            "--bind=/dev/kmsg",
            f"--bind={state / 'containerd'}:/var/lib/containerd",
            f"--bind={state / 'kubelet'}:/var/lib/kubelet",
            f"--bind-ro={state / 'hostname'}:/etc/hostname",
            f"--bind-ro={upstream}:{UPSTREAM_MOUNT}",
            f"--bind-ro={binaries}:/opt/lab-binaries",
            f"--bind-ro={images}:/opt/lab-images",
        ]
        self.container = Container(
            SUITE,
            root,
            machine=f"nhlab-{name}",
            nspawn_args=args,
            nspawn_env={"SYSTEMD_SECCOMP": "0", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
            preexec_fn=self._enter_cgroups,
            boot_timeout=180,
        )
        self.mac = ""
        self.address = ""

    @property
    def is_kubernetes_node(self) -> bool:
        return not self.name.startswith("lb-")

    # ------------------------------------------------------------------ lifecycle

    def _enter_cgroups(self) -> None:
        # In systemd-nspawn's process before exec: the container's cgroup namespace is rooted
        # in cgroups of its own, under ours.
        pid = str(os.getpid())
        for cgroup in self.cgroups:
            with contextlib.suppress(OSError):
                (cgroup / "cgroup.procs").write_text(pid)

    def _make_cgroups(self) -> None:
        for cgroup in self.cgroups:
            cgroup.mkdir(exist_ok=True)
            if cgroup.parent.name and (cgroup / "cpuset.cpus").exists():
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (cgroup / knob).write_text((cgroup.parent / knob).read_text())

    def _remove_cgroups(self) -> None:
        for cgroup in self.cgroups:
            if cgroup.is_dir():
                _rmdir_tree(cgroup)

    def start(self, static_ip: str | None) -> None:
        self._make_cgroups()
        self.container.start()
        run = self.container.run
        # The cgroup v1 hierarchies: nspawn mounts them read-only; the kubelet and runc create
        # cgroups in them (a per-mount flag, the superblock stays as it is).
        run("sh", "-c", 'for c in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$c"; done')
        script = ["set -e", "mkdir -p /run/lab-kernel"]
        for key, value in KUBELET_KERNEL.items():
            flat = key.replace("/", ".")
            script += [
                f"echo {value} >/run/lab-kernel/{flat}",
                f"mount --bind -o ro /run/lab-kernel/{flat} /proc/sys/{key}",
            ]
        script += [
            'm=/lib/modules/$(uname -r); mkdir -p "$m"',
            'printf "kernel/fs/overlayfs/overlay.ko\\nkernel/net/bridge/br_netfilter.ko\\n"'
            ' >"$m/modules.builtin"',
            "depmod",
        ]
        run("sh", "-c", "\n".join(script))
        assert self.container.init_pid is not None
        self.network.plug(self.container.init_pid)
        link = run("ip", "-o", "link", "show", "dev", "eth1").stdout
        self.mac = re.search(r"link/ether (\S+)", link).group(1)  # type: ignore[union-attr]
        if static_ip:
            run("ip", "addr", "add", f"{static_ip}/24", "dev", "eth1")
            run("ip", "link", "set", "eth1", "up")
            # A VM has a default route (VirtualBox's NAT); without one, a Service address
            # (10.32.0.1) is unreachable before kube-proxy's DNAT can apply. The bridge is
            # the gateway, as DHCP tells the workers; nothing lies beyond it.
            run("ip", "route", "add", "default", "via", BRIDGE_IP, "dev", "eth1")
            self.address = static_ip
        else:
            run("ip", "link", "set", "eth1", "up")
            self.address = self.dhcp()

    def dhcp(self, *, release: bool = False) -> str:
        """Run dhclient on eth1 as ifupdown does on the Vagrant box (a service of the
        container's systemd, so it stops with it); RELEASE gives the current lease back first.
        Returns the address it got."""
        run = self.container.run
        run("systemctl", "stop", "lab-dhclient-eth1", check=False)
        run("systemctl", "reset-failed", "lab-dhclient-eth1", check=False)
        lease = ("-pf", "/run/dhclient.eth1.pid", "-lf", "/var/lib/dhcp/dhclient.eth1.leases")
        if release:
            run("dhclient", "-r", *lease, "eth1", timeout=60)
        run("systemd-run", "--unit=lab-dhclient-eth1", "--service-type=simple",
            "dhclient", "-d", "-v", *lease, "eth1")  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            address = self.current_address()
            if address:
                return address
            time.sleep(0.5)
        journal = run("journalctl", "-u", "lab-dhclient-eth1", "--no-pager", check=False).stdout
        raise ContainerError(f"{self.name}: no DHCP lease on eth1 within 90 s\n{journal}")

    def current_address(self) -> str:
        out = self.container.run("ip", "-o", "-4", "addr", "show", "dev", "eth1").stdout
        match = re.search(r"inet (\S+)/", out)
        return match.group(1) if match else ""

    def stop(self) -> None:
        self.container.stop()
        self._remove_cgroups()

    # ------------------------------------------------------------------ the scripts

    def install_files(
        self, bundle: Path, *, deb: Path | None = None, extra: Iterable[tuple[str, str]] = ()
    ) -> None:
        """/opt/lab as the Vagrantfile uploads it: provisioning/, bundle/, coredns/, the .deb."""
        lab = self.container.path("/opt/lab")
        if lab.exists():
            shutil.rmtree(lab)
        ignore = shutil.ignore_patterns("generated", "__pycache__", "Vagrantfile")
        shutil.copytree(PROVISIONING, lab / "provisioning", ignore=ignore)
        shutil.copytree(bundle, lab / "bundle")
        if deb is not None:
            shutil.copytree(REPO / "coredns", lab / "coredns")
            shutil.copy(deb, lab / "nodehosts.deb")
        for path, content in extra:
            target = self.container.path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)

    def env(self, **more: str) -> dict[str, str]:
        return {
            **LAB_ENV,
            **self.extra_env,
            "LAB_NODE": self.name,
            "LAB_BUNDLE": "/opt/lab/bundle",
            "LAB_BINARIES": "/opt/lab-binaries",
            "LAB_IMAGES": "/opt/lab-images",
            "NODEHOSTS_DEB": "/opt/lab/nodehosts.deb",
            # CoreDNS forwards other names here: the lab network's gateway, where nothing
            # answers DNS (no names outside the lab). UPSTREAM_DNS=none leaves CoreDNS's
            # forward plugin without a server, and CoreDNS refuses to start.
            "UPSTREAM_DNS": BRIDGE_IP,
            **more,
        }

    def script(
        self, name: str, *, timeout: float = 900, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run provisioning/scripts/NAME as the Vagrantfile does; never raises."""
        return self.container.run(
            "bash", f"/opt/lab/provisioning/scripts/{name}",
            env=self.env(**env), check=False, timeout=timeout,
        )  # fmt: skip

    def install_kubelet_dropin(self) -> None:
        """The kubelet's unit as the scripts render it, plus `--config-dir` with the container
        drop-in (failCgroupV1: false). Rendered inside, by the scripts' own render_kubelet."""
        render = (
            "source /opt/lab/provisioning/lib/all.sh && lab_load_env && r=$(mktemp -d) && "
            f'render_kubelet "$r" {self.name} 0.0.0.0 && '
            'cat "$r/etc/systemd/system/kubelet.service"'
        )
        unit = self.container.run("bash", "-c", render, env=self.env()).stdout
        match = re.search(r"^ExecStart=(.*?[^\\])$", unit, re.M | re.S)
        assert match, unit
        exec_start = match.group(1) + f" \\\n  --config-dir={KUBELET_DROPIN_DIR}"
        dropin = self.container.path("/etc/systemd/system/kubelet.service.d/lab-container.conf")
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(
            "# tests/lab: the kubelet in a container on a cgroup v1 host (see tests/lab/lab.py).\n"
            f"[Service]\nExecStart=\nExecStart={exec_start}\n"
        )
        conf = self.container.path(f"{KUBELET_DROPIN_DIR}/50-lab-container.conf")
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
            "# The host's controllers are on cgroup v1 (a Debian 12 VM has v2).\n"
            "failCgroupV1: false\n"
        )

    def install_containerd_dropin(self) -> None:
        """containerd with the scripts' config plus restrict_oom_score_adj: this host withholds
        CAP_SYS_RESOURCE, so no process here may lower an oom_score_adj below 0, and runc
        fails on the pod sandbox's -998. Appended at start, so the scripts' file stays theirs."""
        extra = self.container.path("/etc/containerd/lab-container.toml")
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(
            "\n# tests/lab: no CAP_SYS_RESOURCE on this host (see tests/lab/lab.py).\n"
            "[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n"
        )
        dropin = self.container.path("/etc/systemd/system/containerd.service.d/lab-container.conf")
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(
            "# tests/lab: the scripts' config plus lab-container.toml (see tests/lab/lab.py).\n"
            "[Service]\n"
            "ExecStartPre=/bin/sh -c 'cat /etc/containerd/config.toml"
            " /etc/containerd/lab-container.toml >/run/lab-containerd.toml'\n"
            "ExecStart=\nExecStart=/usr/local/bin/containerd --config /run/lab-containerd.toml\n"
        )

    # ------------------------------------------------------------------ inside

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """kubectl as admin (a controller's admin kubeconfig), through the LB unless --server."""
        return self.container.run(
            "kubectl", "--kubeconfig=/etc/kubernetes/admin.kubeconfig",
            f"--request-timeout={int(timeout * 0.75)}s", *args,
            check=False, timeout=timeout,
        )  # fmt: skip

    def diagnostics(self) -> str:
        parts = [f"===== {self.name} ({self.address})"]
        cmds: list[list[str]] = [["systemctl", "--failed", "--no-pager"]]
        if self.is_kubernetes_node:
            cmds += [
                ["journalctl", "-u", "kubelet", "--no-pager", "-n", "60", "-o", "short-iso"],
                ["journalctl", "-u", "containerd", "--no-pager", "-n", "20", "-o", "short-iso"],
                ["crictl", "ps", "-a"],
            ]
        else:
            for unit in ("haproxy", "nodehosts", "coredns"):
                cmds.append(["journalctl", "-u", unit, "--no-pager", "-n", "30", "-o", "short-iso"])
        parts.append(self.container.report(cmds, timeout=20))
        if self.is_kubernetes_node:
            with contextlib.suppress(Exception):
                ids = self.container.run("crictl", "ps", "-a", "-q", check=False, timeout=20)
                for cid in ids.stdout.split()[:8]:
                    logs = self.container.run(
                        "crictl", "logs", "--tail", "25", cid, check=False, timeout=20
                    )
                    parts.append(f"$ crictl logs --tail 25 {cid}\n{logs.stdout}{logs.stderr}")
        return "\n".join(parts)
