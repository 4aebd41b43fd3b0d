"""The serving-CSR rules: honest kubelet requests are approved, nothing else ever is."""

from __future__ import annotations

import base64
import ipaddress
import subprocess
import sys
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from nodehosts.core.csr import (
    BadCsr,
    CsrPolicy,
    NodeIndex,
    Reason,
    Verdict,
    csr_from_json,
    node_ip_addresses,
    requested_node,
)
from nodehosts.core.model import Host, NodeInfo, RecordSet
from tests.helpers.csrs import (
    CLIENT_USAGES,
    LEGACY_SERVING_USAGES,
    make_csr,
    make_request,
)

DOMAIN = "k8s.lab"
WORKER_1 = NodeInfo(
    name="worker-1",
    addresses=(
        ("InternalIP", "10.240.0.101"),
        ("InternalIP", "fd00:10:240::101"),
        ("Hostname", "worker-1"),
    ),
    ready=True,
    unschedulable=False,
)
WORKER_10 = NodeInfo(
    name="worker-10",
    addresses=(("InternalIP", "10.240.0.110"), ("Hostname", "worker-10")),
    ready=True,
    unschedulable=False,
)
NODES = {node.name: node for node in (WORKER_1, WORKER_10)}
PUBLISHED = {
    "worker-1": frozenset({"worker-1", f"worker-1.{DOMAIN}"}),
    "worker-10": frozenset({"worker-10", f"worker-10.{DOMAIN}"}),
}
RECORDS = RecordSet(
    (
        *(
            Host(
                names=(f"{name}.{DOMAIN}", name),
                addresses=tuple(sorted(node_ip_addresses(NODES[name]), key=lambda a: a.version)),
                origin="node",
                node=name,
            )
            for name in sorted(PUBLISHED)
        ),
        Host(("lb-0",), (ipaddress.ip_address("10.240.0.40"),), "static"),
    )
)


def judge(csr: dict[str, Any], *, policy: CsrPolicy | None = None, nodes=NODES) -> Verdict:
    """Evaluate as the approver does: look the node up by spec.username, nothing else."""
    return NodeIndex.build(nodes.values(), RECORDS).evaluate(csr, policy or CsrPolicy())


def worker_1_csr(**overrides: Any) -> dict[str, Any]:
    """An honest request from worker-1 unless a test overrides a part of it."""
    arguments: dict[str, Any] = {"dns": ["worker-1"], "ips": ["10.240.0.101"]}
    arguments.update(overrides)
    return make_csr("worker-1", **arguments)


def assert_pending(verdict: Verdict, reason: Reason) -> None:
    assert not verdict.approved
    assert (verdict.action, verdict.reason) == ("pending", reason), verdict.message


# --- honest requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ecdsa", "rsa"])
@pytest.mark.parametrize(
    "dns",
    [["worker-1"], [f"worker-1.{DOMAIN}"], ["worker-1", f"worker-1.{DOMAIN}"]],
    ids=["bare", "fqdn", "both"],
)
def test_honest_request_with_published_names_and_node_ip_is_approved(key, dns):
    """ECDSA and RSA requests for the node's bare and FQDN names and its IP are approved."""
    verdict = judge(worker_1_csr(key=key, dns=dns))
    assert verdict.approved
    assert (verdict.action, verdict.reason, verdict.node) == ("approve", "approved", "worker-1")
    assert "worker-1" in verdict.message


def test_legacy_usages_with_key_encipherment_are_approved():
    """Older kubelets (RSA keys) also ask for key encipherment: that is still serving."""
    assert judge(worker_1_csr(key="rsa", usages=LEGACY_SERVING_USAGES)).approved


def test_only_ip_sans_are_enough():
    """A request with IP SANs only (IPv4 and IPv6 node addresses) is approved."""
    assert judge(worker_1_csr(dns=[], ips=["10.240.0.101", "fd00:10:240::101"])).approved


def test_only_dns_sans_are_enough():
    assert judge(worker_1_csr(ips=[])).approved


def test_dns_san_matches_case_insensitively():
    """DNS names are case-insensitive; a kubelet with an upper-case hostname still gets one."""
    assert judge(worker_1_csr(dns=["Worker-1", f"WORKER-1.{DOMAIN.upper()}"])).approved


def test_ipv4_mapped_ipv6_san_is_normalised_to_the_node_address():
    assert judge(worker_1_csr(ips=["::ffff:10.240.0.101"])).approved


def test_ipv6_node_address_written_differently_is_the_same_address():
    node = NodeInfo("worker-1", (("InternalIP", "FD00:10:240:0::101"),), True, False)
    verdict = judge(worker_1_csr(ips=["fd00:10:240::101"]), nodes={"worker-1": node})
    assert verdict.approved


def test_expiration_within_maximum_is_approved():
    policy = CsrPolicy(max_expiration_seconds=86400)
    assert judge(worker_1_csr(expiration_seconds=86400), policy=policy).approved


def test_no_expiration_is_left_to_the_signer_even_with_a_maximum():
    """Kubelets do not set expirationSeconds; the signer's own duration applies then."""
    assert judge(worker_1_csr(), policy=CsrPolicy(max_expiration_seconds=3600)).approved


def test_ip_inside_allowed_cidrs_is_approved():
    policy = CsrPolicy(allowed_cidrs=(ipaddress.ip_network("10.240.0.0/24"),))
    assert judge(worker_1_csr(), policy=policy).approved


# --- other people's names and addresses ----------------------------------------------------------


@pytest.mark.parametrize(
    "dns",
    [
        "worker-10",  # another node
        f"worker-10.{DOMAIN}",
        "worker-1.evil.example",  # merely starts with the node name
        "worker-1-admin",
        f"worker-1.{DOMAIN}.evil.example",
        f"x.worker-1.{DOMAIN}",
        f"*.{DOMAIN}",
        "*.worker-1",
        "worker-1.",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        "lb-0",
    ],
)
def test_dns_san_not_published_for_the_node_is_never_approved(dns):
    verdict = judge(worker_1_csr(dns=["worker-1", dns]))
    assert_pending(verdict, Reason.DNS_SAN_NOT_PUBLISHED)
    assert dns in verdict.message


def test_a_name_published_for_another_node_is_refused_even_if_it_is_the_only_san():
    assert_pending(judge(worker_1_csr(dns=["worker-10"], ips=[])), Reason.DNS_SAN_NOT_PUBLISHED)


def test_another_nodes_ip_is_never_approved():
    verdict = judge(worker_1_csr(ips=["10.240.0.101", "10.240.0.110"]))
    assert_pending(verdict, Reason.IP_SAN_NOT_NODE_ADDRESS)
    assert "10.240.0.110" in verdict.message


def test_an_ip_no_node_has_is_never_approved():
    assert_pending(judge(worker_1_csr(ips=["10.240.0.99"])), Reason.IP_SAN_NOT_NODE_ADDRESS)


def test_hostname_address_is_not_an_ip_address_of_the_node():
    """Only InternalIP/ExternalIP entries count as the node's IPs."""
    node = NodeInfo("worker-1", (("Hostname", "10.240.0.101"),), True, False)
    assert node_ip_addresses(node) == frozenset()
    verdict = judge(worker_1_csr(), nodes={"worker-1": node})
    assert_pending(verdict, Reason.IP_SAN_NOT_NODE_ADDRESS)


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "169.254.1.1",
           "fe80::1", "224.0.0.1"]
)  # fmt: skip
def test_loopback_unspecified_link_local_and_multicast_ips_are_never_approved(ip):
    """Even when the node itself reports the address."""
    node = NodeInfo("worker-1", (("InternalIP", "10.240.0.101"), ("InternalIP", ip)), True, False)
    verdict = judge(worker_1_csr(ips=["10.240.0.101", ip]), nodes={"worker-1": node})
    assert_pending(verdict, Reason.IP_SAN_FORBIDDEN)


@pytest.mark.parametrize("ip", ["10.32.0.1", "10.32.0.10", "10.200.3.7"])
def test_service_and_pod_range_ips_are_never_approved(ip):
    """Even when the node reports one (a misconfigured --node-ip): default lab ranges."""
    node = NodeInfo("worker-1", (("InternalIP", ip),), True, False)
    verdict = judge(worker_1_csr(ips=[ip]), nodes={"worker-1": node})
    assert_pending(verdict, Reason.IP_SAN_IN_DENIED_CIDR)


def test_denied_cidrs_are_configurable():
    node = NodeInfo("worker-1", (("InternalIP", "10.32.0.5"),), True, False)
    policy = CsrPolicy(denied_cidrs=(ipaddress.ip_network("10.96.0.0/12"),))
    assert judge(worker_1_csr(ips=["10.32.0.5"]), nodes={"worker-1": node}, policy=policy).approved
    assert_pending(
        judge(worker_1_csr(ips=["10.32.0.5"]), nodes={"worker-1": node}),
        Reason.IP_SAN_IN_DENIED_CIDR,
    )


def test_an_address_another_node_also_reports_is_never_approved():
    """Every lab VM has the VirtualBox NAT address 10.0.2.15: it identifies no one."""
    nat = ("InternalIP", "10.0.2.15")
    nodes = {
        "worker-1": NodeInfo("worker-1", (*WORKER_1.addresses, nat), True, False),
        "worker-10": NodeInfo("worker-10", (*WORKER_10.addresses, nat), True, False),
    }
    verdict = judge(worker_1_csr(ips=["10.240.0.101", "10.0.2.15"]), nodes=nodes)
    assert_pending(verdict, Reason.IP_SAN_SHARED)
    assert judge(worker_1_csr(ips=["10.240.0.101"]), nodes=nodes).approved


def test_a_node_whose_names_are_not_published_gets_no_dns_san():
    """A Node nodehosts does not publish (not ready, lost a collision) has no names to sign."""
    node = NodeInfo("worker-2", (("InternalIP", "10.240.0.102"),), False, False)
    verdict = judge(make_csr("worker-2", dns=["worker-2"]), nodes={"worker-2": node})
    assert_pending(verdict, Reason.DNS_SAN_NOT_PUBLISHED)
    assert judge(make_csr("worker-2", ips=["10.240.0.102"]), nodes={"worker-2": node}).approved


def test_static_host_names_belong_to_no_node():
    assert_pending(judge(worker_1_csr(dns=["lb-0"])), Reason.DNS_SAN_NOT_PUBLISHED)


def test_ip_outside_allowed_cidrs_is_never_approved():
    policy = CsrPolicy(allowed_cidrs=(ipaddress.ip_network("192.168.0.0/16"),))
    assert_pending(judge(worker_1_csr(), policy=policy), Reason.IP_SAN_NOT_ALLOWED)


# --- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username",
    ["kubelet-bootstrap", "system:bootstrap:abcdef", "system:serviceaccount:kube-system:x",
     "system:node:", "system:nodes", "admin", "node:worker-1", ""],
)  # fmt: skip
def test_requester_that_is_not_a_node_is_never_approved(username):
    """Identity comes from spec.username only, even when the subject says system:node:worker-1."""
    csr = worker_1_csr(username=username, common_names=["system:node:worker-1"])
    verdict = judge(csr)
    assert_pending(verdict, Reason.NOT_A_NODE)
    assert verdict.node is None


def test_missing_username_is_not_a_node():
    csr = worker_1_csr()
    del csr["spec"]["username"]
    assert_pending(judge(csr), Reason.NOT_A_NODE)


@pytest.mark.parametrize("groups", [[], ["system:authenticated"], ["system:node"], ["nodes"]])
def test_requester_without_system_nodes_group_is_never_approved(groups):
    assert_pending(judge(worker_1_csr(groups=groups)), Reason.MISSING_NODES_GROUP)


def test_csr_for_a_node_that_does_not_exist_is_left_pending():
    verdict = judge(make_csr("worker-2", dns=["worker-2"]))
    assert_pending(verdict, Reason.NODE_NOT_FOUND)
    assert verdict.node == "worker-2"


def test_node_name_taken_from_username_not_from_sans():
    """worker-10 asking with worker-1's names and IP is judged as worker-10, and refused."""
    csr = make_csr("worker-10", dns=["worker-1"], ips=["10.240.0.101"])
    assert_pending(judge(csr), Reason.DNS_SAN_NOT_PUBLISHED)


@pytest.mark.parametrize(
    "common_names",
    [["system:node:worker-10"], ["worker-1"], ["system:node:Worker-1"], [],
     ["system:node:worker-1", "system:node:worker-10"]],
)  # fmt: skip
def test_cn_mismatch_is_never_approved(common_names):
    assert_pending(judge(worker_1_csr(common_names=common_names)), Reason.CN_MISMATCH)


@pytest.mark.parametrize(
    "organizations",
    [[], ["system:masters"], ["system:nodes", "system:masters"], ["system:masters", "system:nodes"],
     ["system:nodes", "system:nodes"], ["System:Nodes"]],
)  # fmt: skip
def test_o_other_than_exactly_system_nodes_is_never_approved(organizations):
    assert_pending(judge(worker_1_csr(organizations=organizations)), Reason.O_MISMATCH)


@pytest.mark.parametrize(
    "usages",
    [CLIENT_USAGES, ["digital signature", "key encipherment", "client auth"],
     ["digital signature", "server auth", "client auth"], ["server auth"], [],
     ["digital signature", "server auth", "cert sign"], ["key encipherment", "server auth"]],
)  # fmt: skip
def test_usages_other_than_serving_are_never_approved(usages):
    assert_pending(judge(worker_1_csr(usages=usages)), Reason.USAGES_NOT_SERVING)


# --- SAN kinds -----------------------------------------------------------------------------------


def test_email_san_is_never_approved():
    verdict = judge(worker_1_csr(emails=["root@worker-1"]))
    assert_pending(verdict, Reason.EMAIL_SAN)
    assert "root@worker-1" in verdict.message


def test_uri_san_is_never_approved():
    assert_pending(judge(worker_1_csr(uris=["spiffe://cluster/ns/x"])), Reason.URI_SAN)


def test_request_without_sans_is_never_approved():
    assert_pending(judge(worker_1_csr(dns=[], ips=[])), Reason.NO_SAN)


def test_directory_name_san_is_never_approved():
    """SAN kinds a kubelet never asks for are refused, not skipped."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from tests.helpers.csrs import private_key

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, "system:node:worker-1"),
        ]
    )
    sans = x509.SubjectAlternativeName([x509.DNSName("worker-1"), x509.DirectoryName(subject)])
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(sans, critical=False)
        .sign(private_key("ecdsa"), hashes.SHA256())
    )
    csr = worker_1_csr(request=request.public_bytes(serialization.Encoding.PEM))
    assert_pending(judge(csr), Reason.UNSUPPORTED_SAN)


# --- the request itself --------------------------------------------------------------------------


def _pem(kind: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n".encode()


@pytest.mark.parametrize(
    "request_text",
    [
        "not base64 at all!",
        base64.b64encode(b"garbage").decode(),
        base64.b64encode(_pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00")).decode(),
        base64.b64encode(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n").decode(),
        "",
    ],
    ids=["not-base64", "not-pem", "bad-der", "truncated-pem", "empty"],
)
def test_unparsable_request_is_never_approved(request_text):
    assert_pending(judge(worker_1_csr(request=request_text)), Reason.UNPARSABLE_REQUEST)


def test_raw_pem_instead_of_base64_is_unparsable():
    """spec.request is base64 of the PEM in JSON; the PEM text itself is not accepted."""
    pem = make_request(common_names=["system:node:worker-1"], organizations=["system:nodes"],
                       dns=["worker-1"])  # fmt: skip
    assert_pending(judge(worker_1_csr(request=pem.decode())), Reason.UNPARSABLE_REQUEST)


def test_missing_request_is_unparsable():
    csr = worker_1_csr()
    del csr["spec"]["request"]
    assert_pending(judge(csr), Reason.UNPARSABLE_REQUEST)


def test_request_with_a_broken_signature_is_never_approved():
    pem = make_request(common_names=["system:node:worker-1"], organizations=["system:nodes"],
                       dns=["worker-1"], key="rsa")  # fmt: skip
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0xFF  # the last byte of an RSA signature
    csr = worker_1_csr(request=_pem("CERTIFICATE REQUEST", bytes(der)))
    assert_pending(judge(csr), Reason.INVALID_SIGNATURE)


def test_expiration_beyond_maximum_is_never_approved():
    policy = CsrPolicy(max_expiration_seconds=86400)
    verdict = judge(worker_1_csr(expiration_seconds=86401), policy=policy)
    assert_pending(verdict, Reason.EXPIRATION_TOO_LONG)


def test_csr_without_spec_is_malformed():
    assert_pending(judge({"metadata": {"name": "x"}}), Reason.MALFORMED_CSR)


# --- not ours ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "signer",
    ["kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kube-apiserver-client",
     "kubernetes.io/legacy-unknown", "example.com/kubelet-serving", ""],
)  # fmt: skip
def test_other_signers_are_ignored(signer):
    verdict = judge(worker_1_csr(signer=signer))
    assert (verdict.action, verdict.reason) == ("ignore", Reason.OTHER_SIGNER)


@pytest.mark.parametrize(
    ("condition", "reason"),
    [("Approved", Reason.ALREADY_APPROVED), ("Denied", Reason.ALREADY_DENIED),
     ("Failed", Reason.ALREADY_FAILED)],
)  # fmt: skip
def test_decided_csrs_are_ignored(condition, reason):
    """A Denied condition is final: nodehosts never approves over it (nor re-approves)."""
    csr = worker_1_csr(conditions=[{"type": condition, "status": "True", "reason": "Admin"}])
    verdict = judge(csr)
    assert (verdict.action, verdict.reason) == ("ignore", reason)


def test_denied_beats_approved():
    csr = worker_1_csr(conditions=[{"type": "Approved", "status": "True"},
                                   {"type": "Denied", "status": "True"}])  # fmt: skip
    assert judge(csr).reason == Reason.ALREADY_DENIED


def test_csr_with_a_certificate_is_ignored():
    verdict = judge(worker_1_csr(certificate="LS0tLS1CRUdJTi4uLg=="))
    assert (verdict.action, verdict.reason) == ("ignore", Reason.HAS_CERTIFICATE)


# --- properties ----------------------------------------------------------------------------------

OWN_DNS = sorted(PUBLISHED["worker-1"])
OWN_IPS = ["10.240.0.101", "fd00:10:240::101"]
FOREIGN_DNS = ["worker-10", f"worker-10.{DOMAIN}", "worker-1x", "worker-1.evil", "kubernetes"]
FOREIGN_IPS = ["10.240.0.110", "10.240.0.1", "127.0.0.1", "10.32.0.1", "fd00:10:240::110"]


@settings(max_examples=60, deadline=None)
@given(
    dns=st.lists(st.sampled_from(OWN_DNS + FOREIGN_DNS), max_size=4, unique=True),
    ips=st.lists(st.sampled_from(OWN_IPS + FOREIGN_IPS), max_size=3, unique=True),
)
def test_approved_exactly_when_every_san_is_the_nodes_own(dns, ips):
    """Any mix of SANs: approved iff non-empty and each one is worker-1's name or address."""
    verdict = judge(worker_1_csr(dns=dns, ips=ips))
    own = bool(dns or ips) and set(dns) <= set(OWN_DNS) and set(ips) <= set(OWN_IPS)
    assert verdict.approved == own, verdict.message
    assert verdict.action in ("approve", "pending")


def test_importing_the_rules_does_not_load_cryptography():
    """nodehosts without --approve-serving-csrs never pays for cryptography."""
    code = "import sys, nodehosts.core.csr; assert 'cryptography' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_helpers_read_the_node_name_and_addresses():
    assert requested_node(make_csr("worker-7")) == "worker-7"
    assert requested_node(make_csr("worker-7", username="kubelet-bootstrap")) is None
    node = NodeInfo(
        "n",
        (("InternalIP", "10.0.0.1"), ("ExternalIP", "::ffff:192.0.2.1"), ("InternalIP", "bad"),
         ("InternalDNS", "n.example")),
        None,
        False,
    )  # fmt: skip
    assert node_ip_addresses(node) == {
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("192.0.2.1"),
    }


def test_inventory_keeps_only_undecided_kubelet_serving_csrs_whole():
    """Client CSRs and decided ones are kept as a name and signer: their churn is no change."""
    honest = worker_1_csr()
    honest["metadata"]["resourceVersion"] = "7"
    kept = csr_from_json(honest)
    assert (kept.name, kept.resource_version, kept.raw) == ("csr-worker-1", "7", honest)
    client = csr_from_json(worker_1_csr(signer="kubernetes.io/kube-apiserver-client-kubelet"))
    assert client.raw is None
    approved = worker_1_csr(conditions=[{"type": "Approved", "status": "True"}])
    assert csr_from_json(approved).raw is None
    issued = worker_1_csr(certificate="Y2VydA==")
    assert csr_from_json(issued) == csr_from_json(worker_1_csr(certificate="b3RoZXI="))


@pytest.mark.parametrize("obj", [[], {"spec": {}}, {"metadata": {"name": "x"}}])
def test_inventory_rejects_csrs_without_name_or_spec(obj):
    with pytest.raises(BadCsr):
        csr_from_json(obj)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("usages", [{"digital signature": True}]),
        ("usages", [["server auth"]]),
        ("usages", "server auth"),
        ("groups", [{"system:nodes": 1}]),
        ("username", ["system:node:worker-1"]),
        ("conditions", [{"type": {"Approved": True}}]),
        ("conditions", {"type": "Approved"}),
    ],
)
def test_a_csr_with_fields_of_the_wrong_type_is_rejected_not_a_crash(where, value):
    """Issue 12: non-string usages raised TypeError out of the rules and killed the publisher.
    The parser rejects the CSR (the inventory reports it), naming the field."""
    csr = worker_1_csr()
    if where == "conditions":
        csr["status"] = {"conditions": value}
    else:
        csr["spec"][where] = value
    with pytest.raises(BadCsr, match=where):
        csr_from_json(csr)
