"""provisioning/scripts/smoke.sh: the logic of our script, NOT the health of a cluster.

The script runs for real (bash, our library), but `kubectl` and `nodehosts` on its PATH are a
stand-in that answers each command line with a canned answer: one set shaped like a healthy
lab, one like a lab with the failures the seed met (calico-node not Ready, no forwarding, a
name that does not resolve, metrics-server down, a serving CSR pending). What is checked is
that each check prints its one line, that a failure names the likely cause and an existing
TROUBLESHOOTING.md section, and the exit code. That the checks pass against a real cluster is
the booted-container lab's test (marker lab), not this one.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PROVISIONING, clean_env

pytestmark = pytest.mark.provisioning

SMOKE = PROVISIONING / "scripts/smoke.sh"

FAKE = f"""#!{sys.executable}
# A stand-in for a command: answers from the rules in $FAKE_RULES (first match wins).
import json, os, re, sys
args = [a for a in sys.argv[1:] if not a.startswith("--kubeconfig=")]
line = " ".join(args)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(os.path.basename(sys.argv[0]) + " " + line + "\\n")
sys.stdin.read() if "-f -" in line else None
for rule in json.loads(os.environ["FAKE_RULES"]):
    if re.search(rule["match"], line):
        sys.stdout.write(rule.get("out", ""))
        sys.stderr.write(rule.get("err", ""))
        sys.exit(rule.get("rc", 0))
sys.stderr.write("fake: no canned answer for: " + line + "\\n")
sys.exit(99)
"""

NODES = {
    "controller-0": ("controller", "10.240.0.10"),
    "controller-1": ("controller", "10.240.0.11"),
    "controller-2": ("controller", "10.240.0.12"),
    "worker-0": ("worker", "10.240.0.101"),
    "worker-1": ("worker", "10.240.0.102"),
    "worker-2": ("worker", "10.240.0.103"),
}
# busybox nslookup's header: the cluster DNS 10.32.0.10 (which contains "10.32.0.1").
SERVER = "Server:\t\t10.32.0.10\nAddress:\t10.32.0.10:53\n\n"
POD_IPS = {"worker-0": "10.200.3.2", "worker-1": "10.200.4.2", "worker-2": "10.200.5.2"}


def rule(match: str, out: str = "", rc: int = 0, err: str = "") -> dict[str, object]:
    return {"match": match, "out": out, "rc": rc, "err": err}


def healthy_rules() -> list[dict[str, object]]:
    lines = lambda rows: "".join(" ".join(r) + "\n" for r in rows)  # noqa: E731
    pods = [(f"smoke-{n}", n, ip, "smoke") for n, ip in POD_IPS.items()]
    pods += [(f"smoke-host-{n}", n, ip, "smoke-host") for n, (_, ip) in NODES.items()]
    return [
        rule(r"^get --raw=/readyz$", "ok"),
        rule(r"^get nodes -o jsonpath", lines((n, r, ip) for n, (r, ip) in NODES.items())),
        rule(r"^-n kube-system get pods -l k8s-app=calico-node", lines((n, "True") for n in NODES)),
        rule(r"^get namespace lab-smoke -o jsonpath=\{\.status\.phase\}$", "", 1),
        rule(r"^-n lab-smoke apply -f -$"),
        rule(r"^-n lab-smoke get daemonsets", "smoke 3 3\nsmoke-host 6 6\n"),
        rule(r"^-n lab-smoke get pods -o jsonpath", lines(pods)),
        rule(r"^-n lab-smoke exec smoke-worker-\d -- ping -c 2 -W 3 10\.200\.\d\.2$"),
        rule(
            r"nslookup worker-2\.node\.internal$",
            SERVER + "Name:\tworker-2.node.internal\nAddress: 10.240.0.103\n",
        ),
        rule(
            r"nslookup kubernetes\.default\.svc\.cluster\.local$",
            SERVER + "Name:\tkubernetes.default.svc.cluster.local\nAddress: 10.32.0.1\n",
        ),
        rule(r"nslookup registry\.k8s\.io$", "Name:\tregistry.k8s.io\nAddress: 192.0.2.7\n"),
        *[rule(rf"^-n lab-smoke logs smoke-{n}$", f"lab-smoke on {n}\n") for n in POD_IPS],
        rule(r"^-n lab-smoke exec smoke-worker-\d -- true$"),
        rule(r"^top nodes --no-headers$", lines((n, "90m", "4%", "700Mi", "40%") for n in NODES)),
        rule(r"^get --raw /api/v1/nodes/[\w-]+/proxy/healthz$", "ok"),
        rule(
            r"^get csr -o jsonpath",
            "csr-a kubernetes.io/kubelet-serving system:node:worker-0 Approved\n"
            "csr-b kubernetes.io/kube-apiserver-client-kubelet system:bootstrap:abcdef Approved\n",
        ),
        rule(r"exec smoke-host-[\w-]+ -- cat /proc/sys/net/ipv4/conf/all/forwarding$", "1\n"),
        rule(r"^delete namespace lab-smoke"),
    ]


def broken_rules() -> list[dict[str, object]]:
    """The seed's failures, each on one node; everything else healthy."""
    calico = "".join(f"{n} {'False' if n == 'worker-1' else 'True'}\n" for n in NODES)
    return [
        rule(r"^-n kube-system get pods -l k8s-app=calico-node", calico),
        rule(r"exec smoke-worker-0 -- ping -c 2 -W 3 10\.200\.4\.2$", "", 1),
        rule(r"nslookup worker-2\.node\.internal$", "** server can't find it: NXDOMAIN\n", 1),
        rule(r"^top nodes", "error: Metrics API not available\n", 1),
        rule(r"^get --raw /api/v1/nodes/worker-2/proxy/healthz$", "", 1),
        rule(
            r"^get csr -o jsonpath",
            "csr-a kubernetes.io/kubelet-serving system:node:worker-0 Approved\n"
            "csr-z kubernetes.io/kubelet-serving system:node:worker-2\n",
        ),
        rule(r"exec smoke-host-worker-2 -- cat /proc/sys/net/ipv4/conf/all/forwarding$", "0\n"),
        *healthy_rules(),
    ]


def run_smoke(
    tmp_path: Path, rules: list[dict[str, object]], *args: str, kubeconfig: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("kubectl", "nodehosts"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    config = tmp_path / "admin.kubeconfig"
    if kubeconfig:
        config.write_text("stand-in\n")
    log = tmp_path / "calls.log"
    env = clean_env(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        FAKE_RULES=json.dumps(rules),
        FAKE_LOG=str(log),
        SMOKE_KUBECONFIG=str(config),
        SMOKE_TIMEOUT="0",
    )
    result = subprocess.run(
        ["bash", str(SMOKE), *args], env=env, capture_output=True, text=True, check=False
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def verdicts(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("PASS", "FAIL", "SKIP"))]


def test_a_healthy_cluster_passes_every_check_with_one_line_each(tmp_path: Path) -> None:
    result, calls = run_smoke(tmp_path, healthy_rules(), "--cluster")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = verdicts(result.stdout)
    assert all(line.startswith("PASS") for line in lines), lines
    text = "\n".join(lines)
    for expected in (
        "PASS  the API answers through the LB (10.240.0.40:6443)",
        "PASS  calico-node Ready on every node (6)",
        "PASS  pod on worker-0 pings pod on worker-1 (10.200.4.2)",
        "PASS  pod on worker-1 pings pod on worker-2 (10.200.5.2)",
        "PASS  pod on worker-2 pings pod on worker-0 (10.200.3.2)",
        "PASS  pod DNS: node name worker-2.node.internal -> 10.240.0.103",
        "PASS  pod DNS: Service kubernetes.default.svc.cluster.local -> 10.32.0.1",
        "PASS  pod DNS: external name registry.k8s.io",
        "PASS  kubectl logs and exec on worker-0",
        "PASS  kubectl logs and exec on worker-2",
        "PASS  kubectl top nodes lists every node",
        "PASS  every kubelet's serving certificate approved and verified (6 nodes",
        "PASS  net.ipv4.conf.all.forwarding = 1 on every node (6)",
    ):
        assert expected in text, expected
    assert len(lines) == 15  # API, calico, pods, 3 pings, 3 DNS, 3 logs/exec, top, certs, fwd
    assert result.stdout.rstrip().endswith("smoke: all checks passed")
    assert "kubectl delete namespace lab-smoke --wait=false" in calls  # cleans up after itself


def test_a_broken_cluster_names_each_failure_its_cause_and_section(tmp_path: Path) -> None:
    result, _ = run_smoke(tmp_path, broken_rules(), "--cluster")
    assert result.returncode == 1
    fails = [line for line in verdicts(result.stdout) if line.startswith("FAIL")]
    expected = {
        "calico-node not Ready on worker-1": "calico-node-not-ready",
        "pod on worker-0 pings pod on worker-1 (10.200.4.2)": "pods-cannot-reach-each-other",
        "pod DNS: node name worker-2.node.internal does not resolve to 10.240.0.103": (
            "names-do-not-resolve"
        ),
        "kubectl top nodes does not list every node": "metrics-server-unavailable",
        "kubelet serving certificates: unverified on worker-2": "serving-csrs-pending",
        "net.ipv4.conf.all.forwarding is not 1 on worker-2=0": "pods-cannot-reach-each-other",
    }
    assert len(fails) == len(expected), fails
    for start, section in expected.items():
        (line,) = [f for f in fails if f.startswith(f"FAIL  {start}")]
        assert " -- likely: " in line
        assert line.endswith(f"; see TROUBLESHOOTING.md#{section}"), line
    assert any("pending CSRs csr-z (system:node:worker-2)" in f for f in fails)
    # The checks that still work say so.
    assert "PASS  pod on worker-1 pings pod on worker-2 (10.200.5.2)" in result.stdout
    assert "PASS  kubectl logs and exec on worker-1" in result.stdout
    assert result.stdout.rstrip().endswith("smoke: FAILED (see the FAIL lines above)")


def test_an_unreachable_api_stops_after_one_clear_line(tmp_path: Path) -> None:
    result, calls = run_smoke(tmp_path, [rule(r"^get --raw=/readyz$", "", 1)], "--cluster")
    assert result.returncode == 1
    (line,) = verdicts(result.stdout)
    assert line.startswith("FAIL  the API does not answer through the LB (10.240.0.40:6443)")
    assert line.endswith("#a-control-plane-static-pod-does-not-start")
    assert len(calls) == 1


def test_one_worker_skips_the_cross_node_ping_and_says_why(tmp_path: Path) -> None:
    rules = [
        rule(r"^get nodes -o jsonpath", "controller-0 controller 10.240.0.10\nworker-0 worker 1\n"),
        *healthy_rules(),
    ]
    result, _ = run_smoke(tmp_path, rules, "--cluster")
    assert "SKIP  cross-node pod ping: needs two workers, this lab has 1" in result.stdout


@pytest.mark.parametrize(
    ("rc", "out", "verdict"),
    [
        (0, "", "PASS  nodehosts on {host} publishes exactly the API's nodes"),
        (1, "--- daemon\n+++ list\n-10.240.0.101 worker-0\n", "FAIL  nodehosts on {host} differs"),
        (
            2,
            "error: no daemon at /run/nodehosts/control.sock\n",
            "FAIL  nodehosts on {host} cannot",
        ),
    ],
)
def test_lb_check_reads_nodehosts_dump_diff(
    tmp_path: Path, rc: int, out: str, verdict: str
) -> None:
    """On an LB: exit 0 clean, 1 with the differing lines, 2 cannot compare (like diff(1))."""
    rules = [rule(r"^dump --diff$", out, rc)]
    result, calls = run_smoke(tmp_path, rules, "--lb", kubeconfig=False)
    assert calls == ["nodehosts dump --diff"]
    (line,) = verdicts(result.stdout)
    assert line.startswith(verdict.format(host=socket.gethostname()))
    assert result.returncode == (0 if rc == 0 else 1)
    if rc == 1:
        assert "-10.240.0.101 worker-0" in line
        assert line.endswith("#names-do-not-resolve")


def test_without_kubeconfig_nodehosts_or_vagrant_it_says_where_to_run(tmp_path: Path) -> None:
    """Auto mode on a machine that is none of controller, LB, Vagrant host: a clear error."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for tool in ("bash", "awk", "grep", "tr", "dirname", "cat", "hostname"):
        (empty / tool).symlink_to(
            Path("/usr/bin", tool) if Path("/usr/bin", tool).exists() else Path("/bin", tool)
        )
    env = clean_env(PATH=str(empty), SMOKE_KUBECONFIG=str(tmp_path / "none"))
    result = subprocess.run(
        ["bash", str(SMOKE)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "run this on a controller, on an LB, or on the host" in result.stderr


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_section_the_script_names_exists_in_troubleshooting_md() -> None:
    """Each FAIL line's `see TROUBLESHOOTING.md#x` leads to a heading of the guide."""
    guide = (PROVISIONING / "TROUBLESHOOTING.md").read_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", guide, re.M)}
    # fail's last argument, the section, ends its line: `... "cause" section-name`.
    sections = set(re.findall(r'" ([a-z0-9]+(?:-[a-z0-9]+)+)(?: ;;)?$', SMOKE.read_text(), re.M))
    assert sections == {
        "a-control-plane-static-pod-does-not-start",
        "calico-node-not-ready",
        "pods-do-not-start",
        "pods-cannot-reach-each-other",
        "names-do-not-resolve",
        "serving-csrs-pending",
        "metrics-server-unavailable",
    }
    assert sections <= anchors, sections - anchors


def test_on_the_host_it_runs_each_part_through_vagrant_ssh(tmp_path: Path) -> None:
    """No kubeconfig, no nodehosts, but Vagrant: the cluster checks run on controller-0, the
    LB check on each LB, and a failing LB fails the whole run (vagrant is a stand-in)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vagrant").write_text(FAKE)
    (bin_dir / "vagrant").chmod(0o755)
    rules = [
        rule(
            r"^ssh controller-0 --no-tty -c sudo env .* bash"
            r" /opt/lab/provisioning/scripts/smoke\.sh --cluster$",
            "PASS  calico-node Ready on every node (6)\nsmoke: all checks passed\n",
        ),
        rule(r"^ssh lb-0 --no-tty -c sudo nodehosts dump --diff$", ""),
        rule(r"^ssh lb-1 --no-tty -c sudo nodehosts dump --diff$", "+10.240.0.103 worker-2\n", 1),
    ]
    log = tmp_path / "calls.log"
    env = clean_env(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        FAKE_RULES=json.dumps(rules),
        FAKE_LOG=str(log),
        SMOKE_KUBECONFIG=str(tmp_path / "none"),
        SMOKE_TIMEOUT="17",
        LB_COUNT="2",
    )
    result = subprocess.run(
        ["bash", str(SMOKE)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    # The settings reach the controller's run through sudo; the host's kubeconfig path does not.
    (remote,) = [c for c in log.read_text().splitlines() if "controller-0" in c]
    assert "'SMOKE_TIMEOUT=17'" in remote and "SMOKE_KUBECONFIG" not in remote, remote
    assert "PASS  calico-node Ready on every node (6)" in result.stdout
    assert "PASS  nodehosts on lb-0 publishes exactly the API's nodes" in result.stdout
    (line,) = [v for v in verdicts(result.stdout) if v.startswith("FAIL")]
    assert line.startswith("FAIL  nodehosts on lb-1: dump --diff exited 1: +10.240.0.103 worker-2")
    assert line.endswith("#names-do-not-resolve")
    assert [c.split(" -c ")[0] for c in log.read_text().splitlines()] == [
        "vagrant ssh controller-0 --no-tty",
        "vagrant ssh lb-0 --no-tty",
        "vagrant ssh lb-1 --no-tty",
    ]


def test_a_name_the_apiserver_cannot_resolve_is_named_as_dns_not_certificates(
    tmp_path: Path,
) -> None:
    """The LB's DNS down (seen in the lab: CoreDNS stopped on lb-0): the apiserver's proxy to
    a kubelet fails on the name lookup, and the line says so, not "CSRs pending"."""
    lookup = (
        "Error from server (BadRequest): lookup worker-2 on 10.240.0.40:53: "
        "read udp 10.240.0.10:35958->10.240.0.40:53: i/o timeout\n"
    )
    rules = [
        rule(r"^get --raw /api/v1/nodes/worker-2/proxy/healthz$", "", 1, err=lookup),
        *healthy_rules(),
    ]
    result, _ = run_smoke(tmp_path, rules, "--cluster")
    assert result.returncode == 1
    (line,) = [v for v in verdicts(result.stdout) if v.startswith("FAIL")]
    assert line.startswith("FAIL  the apiserver cannot resolve worker-2: lookup worker-2 on"), line
    assert line.endswith("; see TROUBLESHOOTING.md#names-do-not-resolve"), line


def test_a_warning_beside_a_kubelets_ok_is_not_a_failure(tmp_path: Path) -> None:
    """Only kubectl's answer decides: a line on its stderr (seen in the lab: a shell whose
    working directory was gone wrote one for every command) leaves a healthy kubelet verified."""
    warning = "shell-init: error retrieving current directory\n"
    rules = [
        rule(r"^get --raw /api/v1/nodes/worker-1/proxy/healthz$", "ok", err=warning),
        *healthy_rules(),
    ]
    result, _ = run_smoke(tmp_path, rules, "--cluster")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  every kubelet's serving certificate approved and verified" in result.stdout


def test_a_node_without_its_host_pod_is_not_called_a_forwarding_problem(tmp_path: Path) -> None:
    """No smoke-host pod on worker-2 (its image cannot be pulled): forwarding there is unknown,
    and the line points at the pods, not at a sysctl file."""
    pods = "".join(
        f"smoke-host-{n} {n} {ip} smoke-host\n" for n, (_, ip) in NODES.items() if n != "worker-2"
    )
    pods += "".join(f"smoke-{n} {n} {ip} smoke\n" for n, ip in POD_IPS.items())
    rules = [rule(r"^-n lab-smoke get pods -o jsonpath", pods), *healthy_rules()]
    result, _ = run_smoke(tmp_path, rules, "--cluster")
    assert result.returncode == 1
    (line,) = [v for v in verdicts(result.stdout) if v.startswith("FAIL")]
    assert line.startswith(
        "FAIL  net.ipv4.conf.all.forwarding unknown on worker-2: no running smoke-host"
    ), line
    assert line.endswith("; see TROUBLESHOOTING.md#pods-do-not-start"), line


def test_a_failing_kubectl_is_a_fail_line_not_a_crash(tmp_path: Path) -> None:
    """The smoke pods cannot be created and the CSR list fails: FAIL lines, the run goes on."""
    rules = [
        rule(r"^-n lab-smoke apply -f -$", "forbidden\n", 1),
        rule(r"^-n lab-smoke get daemonsets", ""),
        rule(r"^-n lab-smoke get pods", ""),
        rule(r"^get csr", "", 1),
        *healthy_rules(),
    ]
    result, _ = run_smoke(tmp_path, rules, "--cluster")
    assert result.returncode == 1
    lines = verdicts(result.stdout)
    assert "FAIL  cannot create the smoke pods (namespace lab-smoke)" in lines[2]
    assert any(v.startswith("FAIL  pod on worker-0 pings pod on worker-1") for v in lines)
    assert any(v.startswith("PASS  kubectl top nodes") for v in lines)
    assert any("pending CSRs (kubectl get csr failed)" in v for v in lines)  # not "none"
    assert result.stdout.rstrip().endswith("smoke: FAILED (see the FAIL lines above)")


# What the API returns, one object per kind the smoke script reads (for the jsonpath test).
OBJECTS = {
    "get nodes": {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "worker-0", "labels": {"node.kubernetes.io/role": "worker"}},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "worker-0"},
                {"type": "InternalIP", "address": "10.240.0.101"},
            ]
        },
    },
    "get pods -l k8s-app=calico-node": {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "calico-node-x", "labels": {"k8s-app": "calico-node"}},
        "spec": {"nodeName": "worker-0", "containers": [{"name": "c", "image": "i"}]},
        "status": {
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "False"},
            ]
        },
    },
    "get daemonsets": {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "smoke"},
        "spec": {"selector": {"matchLabels": {"app": "smoke"}}, "template": {}},
        "status": {"desiredNumberScheduled": 3, "numberReady": 2},
    },
    "get pods": {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "smoke-abc", "labels": {"app": "smoke"}},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"podIP": "10.200.4.2"},
    },
    "get csr": {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "csr-z"},
        "spec": {
            "signerName": "kubernetes.io/kubelet-serving",
            "username": "system:node:worker-2",
            "request": "",
            "usages": ["server auth"],
        },
    },
}
EXPECTED = {
    "get nodes": "worker-0 worker 10.240.0.101",
    "get pods -l k8s-app=calico-node": "worker-0 False",
    "get daemonsets": "smoke 3 2",
    "get pods": "smoke-abc worker-1 10.200.4.2 smoke",
    "get csr": "csr-z kubernetes.io/kubelet-serving system:node:worker-2 ",
}


def test_the_jsonpath_templates_read_what_the_api_returns(tmp_path: Path) -> None:
    """The real kubectl (scripts/upstream-bin) evaluates each `-o jsonpath` of the script on an
    object shaped like the API's: escaping, filters and field names are right, and the fields
    come out in the order the script reads them. kubectl --local prints one object at a
    time, so the `{range .items[*]}...{end}` around each template is peeled off here."""
    from tests.helpers.upstream import upstream_binary

    kubectl = upstream_binary("kubectl")
    found = re.findall(r"get ([\w .=/-]+?) -o jsonpath='([^']*)'", SMOKE.read_text())
    assert {f"get {what.strip()}" for what, _ in found} == set(OBJECTS)
    for what, template in found:
        key = f"get {what.strip()}"
        assert template.startswith("{range .items[*]}") and template.endswith('{"\\n"}{end}')
        inner = template.removeprefix("{range .items[*]}").removesuffix('{"\\n"}{end}')
        manifest = tmp_path / "object.json"
        manifest.write_text(json.dumps(OBJECTS[key]))
        result = subprocess.run(
            [
                kubectl,
                "label",
                "--local",
                "-f",
                str(manifest),
                "smoke=x",
                "-o",
                f"jsonpath={inner}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{key}: {result.stderr}"
        assert result.stdout == EXPECTED[key], key


def test_it_waits_for_the_previous_runs_namespace_to_go(tmp_path: Path) -> None:
    """A namespace still Terminating (the last run deletes it without waiting) is waited for,
    then the run goes on; with no time left it is a FAIL line, not an apply error."""
    rules = [rule(r"^get namespace lab-smoke", "Terminating"), *healthy_rules()]
    result, calls = run_smoke(tmp_path, rules, "--cluster")
    assert "FAIL  cannot create the smoke pods (namespace lab-smoke)" in result.stdout
    assert not any(" apply " in c for c in calls)


def test_a_wrong_dns_answer_is_not_taken_for_the_right_one(tmp_path: Path) -> None:
    """The Service name answered with another address: the server's 10.32.0.10 in the header
    does not count as 10.32.0.1."""
    rules = [
        rule(r"nslookup kubernetes\.default", SERVER + "Name:\tkubernetes\nAddress: 10.32.0.99\n"),
        *healthy_rules(),
    ]
    result, _ = run_smoke(tmp_path, rules, "--cluster")
    assert result.returncode == 1
    assert (
        "FAIL  pod DNS: Service kubernetes.default.svc.cluster.local does not resolve to 10.32.0.1"
        in result.stdout
    )
