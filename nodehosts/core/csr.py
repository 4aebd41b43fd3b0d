"""Whether to approve a kubelet serving CertificateSigningRequest: the rules, and nothing else.

Contract: `evaluate` takes one CSR as the API sends it (decoded JSON, never a client model) plus
what nodehosts knows about the Node the CSR claims to come from, and returns a `Verdict`:

- ``approve``: every rule below holds;
- ``pending``: a rule failed; the CSR must be left alone (never denied: a Denied condition is
  final, and a CSR that arrives before its Node becomes approvable once the Node appears);
  `Verdict.reason` names the first rule that failed, `Verdict.message` says it for humans;
- ``ignore``: not ours to decide (another signer) or already decided.

Why so strict: a Node's status (addresses, Hostname) is written by its own kubelet, and with TLS
bootstrapping whoever holds the bootstrap token can register a Node under any name, so nothing a
Node says about itself proves ownership. The rules only stop a node from claiming what something
else already has or what the admin reserved (README.md, "Approving kubelet serving certificates",
says the same for users). The rules, checked in this order:

1. spec.signerName is kubernetes.io/kubelet-serving, else ignored;
2. no Approved, Denied or Failed condition and no issued certificate, else ignored;
3. the identity comes only from spec.username ``system:node:<name>`` with ``system:nodes`` in
   spec.groups (never from the request's subject or SANs), and the Node ``<name>`` exists and
   is one nodehosts publishes from (it matches the label selector);
4. spec.request (base64 of a PEM CERTIFICATE REQUEST) parses and its signature is valid;
5. subject CN == spec.username and O is exactly [system:nodes];
6. spec.usages is exactly {digital signature, server auth} or {digital signature, key
   encipherment, server auth};
7. no Email, URI or other SAN kinds; at least one DNS or IP SAN;
8. every DNS SAN (case-insensitive) is not a reserved name (`CsrPolicy.reserved_names`,
   default ``kubernetes``: bare or under the domain; it is on the API server's certificate),
   is one of the names the record policy publishes for that Node under its own name (an exact
   match, so ``worker-10`` or ``worker-1.evil.example`` never pass for ``worker-1``, and a name
   the Node lost to a static host or another Node, a dotted name outside the allowed suffixes
   or a reserved name, all refused by the record policy, never passes either), and is no form
   (bare, or FQDN under the domain) of the name or a Hostname of any other Node of the whole
   cluster (`NodeIndex.build`'s `cluster`), published or not: the record policy only sees the
   Nodes it publishes from, so a selected Node could otherwise take an unselected, NotReady,
   cordoned or address-less Node's name, or a Hostname another Node also reports (a name
   claimed as Hostname by two Nodes is neither's; a Node's own name stays its own);
9. every IP SAN (IPv4-mapped IPv6 normalised to IPv4) is never loopback, unspecified,
   link-local or multicast, is outside the denied CIDRs (the cluster's service and pod ranges),
   is inside one of the allowed CIDRs when any are configured, is not a static host's address
   (the LB), is one of the Node's addresses of the types in `CsrPolicy.address_types` (default
   InternalIP), and no other Node in the whole cluster reports it (`NodeIndex.build`'s `cluster`:
   every Node, whatever label selector limits publishing; the VirtualBox NAT address 10.0.2.15
   is on every lab VM). Static hosts' addresses come from the static hosts themselves
   (`NodeIndex.build`'s `static_hosts`), not from the records: a static host that lost all its
   names to another is not published, but its address is still the admin's;
10. spec.expirationSeconds, when the CSR sets it, is at most the configured maximum. A CSR
    without it gets the signer's own duration (kube-controller-manager
    --cluster-signing-duration), which the cluster admin already bounds.

`csr_from_json` is the parse function of the CSR inventory: it keeps the whole object only for
undecided kubelet-serving CSRs (the ones `evaluate` may approve), a name and signer otherwise, so
the signer issuing certificates and client CSRs churning cost nothing.

Pure: no I/O, clock or kubernetes import. `cryptography` is imported on the first request
parsed, so nodehosts without --approve-serving-csrs never loads it; parsed requests are cached
by their text (CSR specs are immutable), so re-evaluating when Nodes change is cheap.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nodehosts.core.model import Host, IPAddress, NodeInfo, RecordSet

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

SERVING_USAGES: tuple[frozenset[str], ...] = (
    frozenset({"digital signature", "server auth"}),
    frozenset({"digital signature", "key encipherment", "server auth"}),
)
# Address types whose values are IPs (the kubelet puts these in its IP SANs; Hostname,
# InternalDNS and ExternalDNS become DNS SANs).
NODE_IP_ADDRESS_TYPES = frozenset({"InternalIP", "ExternalIP"})
# An ExternalIP is as much the kubelet's own claim as its name: only InternalIP by default.
DEFAULT_CSR_ADDRESS_TYPES = ("InternalIP",)

# RecordPolicy's default domain, for callers that do not say which.
DEFAULT_DOMAIN = "node.internal"
# On the API server's certificate (the lab signs `kubernetes` and `kubernetes.<domain>` forms).
DEFAULT_RESERVED_NAMES = ("kubernetes",)

# The lab's service and pod ranges (provisioning/cluster.env); configure the real ones.
DEFAULT_DENIED_CIDRS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("10.32.0.0/24"),
    ipaddress.ip_network("10.200.0.0/16"),
)


class Reason(enum.StrEnum):
    """Why a verdict is what it is: stable snake_case values, for logs and metric labels."""

    APPROVED = "approved"
    # ignore
    OTHER_SIGNER = "other_signer"
    ALREADY_APPROVED = "already_approved"
    ALREADY_DENIED = "already_denied"
    ALREADY_FAILED = "already_failed"
    HAS_CERTIFICATE = "has_certificate"
    # pending
    MALFORMED_CSR = "malformed_csr"
    NOT_A_NODE = "not_a_node"
    MISSING_NODES_GROUP = "missing_nodes_group"
    NODE_NOT_FOUND = "node_not_found"
    NODE_NOT_SELECTED = "node_not_selected"
    UNPARSABLE_REQUEST = "unparsable_request"
    INVALID_SIGNATURE = "invalid_signature"
    CN_MISMATCH = "cn_mismatch"
    O_MISMATCH = "o_mismatch"
    USAGES_NOT_SERVING = "usages_not_serving"
    EMAIL_SAN = "email_san"
    URI_SAN = "uri_san"
    UNSUPPORTED_SAN = "unsupported_san"
    NO_SAN = "no_san"
    DNS_SAN_RESERVED = "dns_san_reserved"
    DNS_SAN_NOT_PUBLISHED = "dns_san_not_published"
    DNS_SAN_OTHER_NODE = "dns_san_other_node"
    DNS_SAN_SHARED = "dns_san_shared"
    IP_SAN_FORBIDDEN = "ip_san_forbidden"
    IP_SAN_IN_DENIED_CIDR = "ip_san_in_denied_cidr"
    IP_SAN_NOT_ALLOWED = "ip_san_not_allowed"
    IP_SAN_NOT_NODE_ADDRESS = "ip_san_not_node_address"
    IP_SAN_TYPE_NOT_ALLOWED = "ip_san_type_not_allowed"
    IP_SAN_STATIC_HOST = "ip_san_static_host"
    IP_SAN_SHARED = "ip_san_shared"
    EXPIRATION_TOO_LONG = "expiration_too_long"


IGNORE_REASONS = frozenset(
    {
        Reason.OTHER_SIGNER,
        Reason.ALREADY_APPROVED,
        Reason.ALREADY_DENIED,
        Reason.ALREADY_FAILED,
        Reason.HAS_CERTIFICATE,
    }
)
PENDING_REASONS = frozenset(Reason) - IGNORE_REASONS - {Reason.APPROVED}

Action = Literal["approve", "pending", "ignore"]


@dataclass(frozen=True, slots=True)
class CsrPolicy:
    """What the cluster allows in a serving certificate beyond "it is the node's own"."""

    # When non-empty, every IP SAN must lie in one of these.
    allowed_cidrs: tuple[IPNetwork, ...] = ()
    # No IP SAN may lie in these: the cluster's service and pod ranges.
    denied_cidrs: tuple[IPNetwork, ...] = DEFAULT_DENIED_CIDRS
    # Upper bound on spec.expirationSeconds; None: no bound beyond the signer's.
    max_expiration_seconds: int | None = None
    # The Node address types an IP SAN may be.
    address_types: tuple[str, ...] = DEFAULT_CSR_ADDRESS_TYPES
    # Never a DNS SAN, bare or under the domain (lower-case names without a dot).
    reserved_names: tuple[str, ...] = DEFAULT_RESERVED_NAMES


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one CSR; `message` is for humans, `reason` for machines."""

    action: Action
    reason: Reason
    message: str
    # The node the CSR claims to be from (from spec.username), when it names one.
    node: str | None = None

    @property
    def approved(self) -> bool:
        return self.action == "approve"


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the rules read from an x509 certificate request."""

    common_names: tuple[str, ...]
    organizations: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPAddress, ...]
    emails: tuple[str, ...]
    uris: tuple[str, ...]
    # SAN kinds nodehosts never approves (directory names, registered IDs, other names, IP
    # networks), by cryptography's class name.
    other_sans: tuple[str, ...]
    signature_valid: bool


@dataclass(frozen=True, slots=True)
class CsrObject:
    """One CSR as the inventory keeps it."""

    name: str
    signer: str
    # metadata.resourceVersion, and the object itself, only while `evaluate` may approve it
    # (kubelet-serving, no Approved/Denied/Failed condition, no certificate); else "" and None.
    resource_version: str = ""
    raw: Mapping[str, Any] | None = None


class BadCsr(ValueError):
    """A CSR object without metadata.name or spec (the inventory reports and skips it)."""


def csr_from_json(obj: Any) -> CsrObject:
    """The inventory's view of one CSR (see the module docstring)."""
    if not isinstance(obj, dict):
        raise BadCsr(f"CSR is not an object: {type(obj).__name__}")
    name = csr_name(obj)
    if name is None:
        raise BadCsr("CSR has no metadata.name")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise BadCsr(f"CSR {name} has no spec")
    signer = spec.get("signerName")
    signer = signer if isinstance(signer, str) else ""
    if signer != KUBELET_SERVING_SIGNER:
        return CsrObject(name, signer)
    problem = _shape_problem(spec, obj.get("status"))
    if problem is not None:
        raise BadCsr(f"CSR {name}: {problem}")
    if _decided(obj.get("status")) is not None:
        return CsrObject(name, signer)
    version = obj["metadata"].get("resourceVersion")
    return CsrObject(name, signer, version if isinstance(version, str) else "", obj)


def _shape_problem(spec: Mapping[str, Any], status: Any) -> str | None:
    """Why the fields the rules read have types no API server sends, or None.

    The rules compare, hash and format these values; a list of objects where strings belong
    would raise TypeError there, so such a CSR is rejected here instead.
    """
    for key in ("username", "request"):
        value = spec.get(key)
        if value is not None and not isinstance(value, str):
            return f"spec.{key} is not a string"
    for key in ("usages", "groups"):
        value = spec.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            return f"spec.{key} is not a list of strings"
    if status is None:
        return None
    if not isinstance(status, dict):
        return "status is not an object"
    conditions = status.get("conditions")
    if conditions is None:
        return None
    if not isinstance(conditions, list) or not all(
        isinstance(c, dict) and isinstance(c.get("type"), str) for c in conditions
    ):
        return "status.conditions is not a list of objects with a string type"
    return None


class BadRequest(ValueError):
    """spec.request is not a base64 PEM certificate request; the message says why."""


def csr_name(csr: Mapping[str, Any]) -> str | None:
    """metadata.name of a CSR object, or None."""
    metadata = csr.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def requested_node(csr: Mapping[str, Any]) -> str | None:
    """The node name in spec.username (``system:node:<name>``), or None: who to look up."""
    spec = csr.get("spec")
    username = spec.get("username") if isinstance(spec, dict) else None
    if not isinstance(username, str) or not username.startswith(NODE_USER_PREFIX):
        return None
    return username.removeprefix(NODE_USER_PREFIX) or None


def node_ip_addresses(
    node: NodeInfo, types: Iterable[str] = NODE_IP_ADDRESS_TYPES
) -> frozenset[IPAddress]:
    """The Node's addresses of `types` (default InternalIP/ExternalIP), normalised; unparsable
    entries are dropped."""
    return _ip_addresses(node, frozenset(types))


# Memoised: the index is rebuilt from every Node on every publish, and parsing dominates it.
@functools.lru_cache(maxsize=16384)
def _ip_addresses(node: NodeInfo, wanted: frozenset[str]) -> frozenset[IPAddress]:
    out: set[IPAddress] = set()
    for kind, value in node.addresses:
        if kind not in wanted:
            continue
        try:
            out.add(normalise_ip(ipaddress.ip_address(value.strip())))
        except ValueError:
            continue
    return frozenset(out)


def normalise_ip(address: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (``::ffff:a.b.c.d``) -> the IPv4 address; everything else unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=1024)
def parse_request(request_b64: str) -> ParsedRequest:
    """Decode spec.request (base64 text of a PEM CERTIFICATE REQUEST) and read its fields."""
    try:
        pem = base64.b64decode(request_b64, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(f"spec.request is not base64: {error}") from error
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in pem:
        raise BadRequest("spec.request is not a PEM CERTIFICATE REQUEST")

    # Lazy: only approvers pay for cryptography.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        request = x509.load_pem_x509_csr(pem)
        subject = request.subject
        common_names = tuple(
            str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
        organizations = tuple(
            str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        )
        try:
            sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            general_names: list[x509.GeneralName] = []
        else:
            general_names = list(sans)
        signature_valid = request.is_signature_valid
    except Exception as error:  # cryptography raises several types for malformed DER
        raise BadRequest(f"x509 request does not parse: {type(error).__name__}: {error}") from None

    dns_names: list[str] = []
    ips: list[IPAddress] = []
    emails: list[str] = []
    uris: list[str] = []
    others: list[str] = []
    for general_name in general_names:
        if isinstance(general_name, x509.DNSName):
            dns_names.append(general_name.value)
        elif isinstance(general_name, x509.IPAddress) and isinstance(
            general_name.value, ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            ips.append(general_name.value)
        elif isinstance(general_name, x509.RFC822Name):
            emails.append(general_name.value)
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            uris.append(general_name.value)
        else:
            others.append(type(general_name).__name__)
    return ParsedRequest(
        common_names=common_names,
        organizations=organizations,
        dns_names=tuple(dns_names),
        ip_addresses=tuple(ips),
        emails=tuple(emails),
        uris=tuple(uris),
        other_sans=tuple(others),
        signature_valid=signature_valid,
    )


@dataclass(frozen=True, slots=True)
class NodeIndex:
    """What the rules need to know about every Node, built once per change of the Nodes."""

    # The Nodes nodehosts publishes from (label-selected): only their CSRs may be approved.
    nodes: Mapping[str, NodeInfo]
    # Node name -> the names nodehosts publishes for it (lower-case, bare and FQDN).
    published_names: Mapping[str, frozenset[str]]
    # Every InternalIP/ExternalIP address any Node of the whole cluster reports -> one of those
    # Nodes; `shared` has all of them for the addresses more than one Node reports.
    owners: Mapping[IPAddress, str]
    shared: Mapping[IPAddress, frozenset[str]]
    # Every static host address -> the static host's canonical name.
    static_addresses: Mapping[IPAddress, str]
    # Names of the Nodes of the whole cluster that are not in `nodes`.
    unselected: frozenset[str] = frozenset()
    # Every Node of the whole cluster (a Node in both views once when they agree), for the
    # name claims, and the domain bare names are published under.
    everyone: tuple[NodeInfo, ...] = ()
    domain: str = DEFAULT_DOMAIN
    # The name claims, built on the first evaluation: most rebuilds evaluate nothing (no
    # undecided CSR), and the claims would double the cost of every rebuild.
    _claims: list[tuple[_Claims, _Claims]] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        nodes: Iterable[NodeInfo],
        records: RecordSet,
        cluster: Iterable[NodeInfo] | None = None,
        *,
        domain: str = DEFAULT_DOMAIN,
        static_hosts: Iterable[Host] | None = None,
    ) -> NodeIndex:
        """Index the published-from Nodes, the records published from them (`Host.node` says
        whose), when publishing is label-selected every Node of the cluster (`cluster`; None:
        `nodes` are the whole cluster), the record policy's `domain`, and the static hosts as
        read (`static_hosts`; None: the static hosts published in `records`)."""
        by_name = {node.name: node for node in nodes}
        domain = domain.lower().removesuffix(".")
        names: dict[str, set[str]] = {}
        static: dict[IPAddress, str] = {}
        for host in records.hosts:
            if host.node is not None:
                names.setdefault(host.node, set()).update(host.names)
            elif host.origin == "static" and static_hosts is None:
                for address in host.addresses:
                    static.setdefault(normalise_ip(address), host.canonical)
        for host in static_hosts or ():
            for address in host.addresses:
                static.setdefault(normalise_ip(address), host.canonical)
        owners: dict[IPAddress, str] = {}
        shared: dict[IPAddress, set[str]] = {}
        unselected: set[str] = set()
        everyone = list(by_name.values())
        if cluster is not None:
            for node in cluster:
                selected = by_name.get(node.name)
                if selected is None:
                    unselected.add(node.name)
                if selected is None or selected != node:
                    everyone.append(node)
        for node in everyone:
            name = node.name
            for address in node_ip_addresses(node):
                owner = owners.setdefault(address, name)
                if owner != name:
                    shared.setdefault(address, {owner}).add(name)
        return cls(
            nodes=by_name,
            published_names={name: frozenset(values) for name, values in names.items()},
            owners=owners,
            shared={address: frozenset(names) for address, names in shared.items()},
            static_addresses=static,
            unselected=frozenset(unselected),
            everyone=tuple(everyone),
            domain=domain,
        )

    @property
    def name_claims(self) -> _Claims:
        """Every form (bare and FQDN) of every Node's metadata.name -> the Nodes claiming it."""
        return self._built_claims()[0]

    @property
    def hostname_claims(self) -> _Claims:
        """Every form of every Hostname address a Node reports -> the Nodes reporting it."""
        return self._built_claims()[1]

    def _built_claims(self) -> tuple[_Claims, _Claims]:
        if not self._claims:
            # Form -> its first claimer, plus every claimer of the few forms claimed twice (a
            # set per form would cost more than the rest of the index).
            name_owner: dict[str, str] = {}
            name_shared: dict[str, set[str]] = {}
            hostname_owner: dict[str, str] = {}
            hostname_shared: dict[str, set[str]] = {}
            for node in self.everyone:
                name = node.name
                name_forms, hostname_forms = _node_claims(node, self.domain)
                for form in name_forms:
                    owner = name_owner.setdefault(form, name)
                    if owner != name:
                        name_shared.setdefault(form, {owner}).add(name)
                for form in hostname_forms:
                    owner = hostname_owner.setdefault(form, name)
                    if owner != name:
                        hostname_shared.setdefault(form, {owner}).add(name)
            self._claims.append(
                (_Claims(name_owner, name_shared), _Claims(hostname_owner, hostname_shared))
            )
        return self._claims[0]

    def evaluate(self, csr: Mapping[str, Any], policy: CsrPolicy) -> Verdict:
        """`evaluate` for the Node the CSR's spec.username names, as this index knows it."""
        name = requested_node(csr)
        node = self.nodes.get(name) if name is not None else None
        return evaluate(
            csr,
            node=node,
            published_names=self.published_names.get(name or "", frozenset()),
            policy=policy,
            owners=self.owners,
            shared=self.shared,
            static_addresses=self.static_addresses,
            unselected=name is not None and name in self.unselected,
            name_claims=self.name_claims,
            hostname_claims=self.hostname_claims,
            domain=self.domain,
        )


def evaluate(
    csr: Mapping[str, Any],
    *,
    node: NodeInfo | None,
    published_names: frozenset[str],
    policy: CsrPolicy,
    owners: Mapping[IPAddress, str] | None = None,
    shared: Mapping[IPAddress, frozenset[str]] | None = None,
    static_addresses: Mapping[IPAddress, str] | None = None,
    unselected: bool = False,
    name_claims: _Claims | None = None,
    hostname_claims: _Claims | None = None,
    domain: str = DEFAULT_DOMAIN,
) -> Verdict:
    """Apply the rules (module docstring) to one CSR.

    `node` is the Node named by `requested_node(csr)` (None when nodehosts does not publish
    from it; `unselected` says it exists outside the label selector), `published_names` the
    lower-case names the record policy publishes for it (bare and FQDN), `owners` every Node
    address of the whole cluster -> a Node reporting it (`shared`: all of them, for the
    addresses more than one Node reports), `static_addresses` every static host address -> its
    canonical name, `name_claims` / `hostname_claims` every form of every Node's name / Hostname
    in the whole cluster -> the Nodes claiming it, `domain` the record policy's domain.
    """
    spec = csr.get("spec")
    status = csr.get("status") or {}
    if not isinstance(spec, dict) or not isinstance(status, dict):
        return _pending(Reason.MALFORMED_CSR, "CSR has no spec or its status is not an object")

    signer = spec.get("signerName")
    if signer != KUBELET_SERVING_SIGNER:
        return Verdict("ignore", Reason.OTHER_SIGNER, f"signerName is {signer!r}")

    decided = _decided(status)
    if decided is not None:
        return decided

    username = spec.get("username")
    name = requested_node(csr)
    if name is None:
        return _pending(
            Reason.NOT_A_NODE, f"requester {username!r} is not system:node:<name>", node=None
        )
    groups = spec.get("groups") or []
    if not isinstance(groups, list) or NODES_GROUP not in groups:
        return _pending(
            Reason.MISSING_NODES_GROUP, f"requester {username} is not in group {NODES_GROUP}", name
        )
    if node is None and unselected:
        return _pending(
            Reason.NODE_NOT_SELECTED,
            f"Node {name} does not match the label selector nodehosts publishes from",
            name,
        )
    if node is None:
        return _pending(Reason.NODE_NOT_FOUND, f"Node {name} does not exist (yet)", name)
    if node.name != name:
        raise ValueError(f"evaluate() got Node {node.name} for a CSR from {name}")

    request_b64 = spec.get("request")
    if not isinstance(request_b64, str):
        return _pending(Reason.UNPARSABLE_REQUEST, "spec.request is missing", name)
    try:
        request = parse_request(request_b64)
    except BadRequest as error:
        return _pending(Reason.UNPARSABLE_REQUEST, str(error), name)
    if not request.signature_valid:
        return _pending(Reason.INVALID_SIGNATURE, "x509 request signature is invalid", name)

    if request.common_names != (username,):
        return _pending(
            Reason.CN_MISMATCH,
            f"subject CN {_show(request.common_names)} is not the requester {username}",
            name,
        )
    if request.organizations != (NODES_GROUP,):
        return _pending(
            Reason.O_MISMATCH,
            f"subject O {_show(request.organizations)} is not exactly {NODES_GROUP}",
            name,
        )

    usages = spec.get("usages") or []
    if not isinstance(usages, list) or frozenset(usages) not in SERVING_USAGES:
        return _pending(
            Reason.USAGES_NOT_SERVING,
            f"usages {_show(usages)} are not digital signature[, key encipherment], server auth",
            name,
        )

    if request.emails:
        return _pending(Reason.EMAIL_SAN, f"Email SANs {_show(request.emails)}", name)
    if request.uris:
        return _pending(Reason.URI_SAN, f"URI SANs {_show(request.uris)}", name)
    if request.other_sans:
        return _pending(Reason.UNSUPPORTED_SAN, f"SAN kinds {_show(request.other_sans)}", name)
    if not request.dns_names and not request.ip_addresses:
        return _pending(Reason.NO_SAN, "request has no DNS or IP SAN", name)

    reserved = {form for r in policy.reserved_names for form in (r, *_name_forms(r, domain))}
    for dns_name in request.dns_names:
        verdict = _check_dns(
            dns_name.lower(),
            name,
            published_names,
            reserved=reserved,
            name_claims=name_claims or _NO_CLAIMS,
            hostname_claims=hostname_claims or _NO_CLAIMS,
        )
        if verdict is not None:
            return verdict

    for raw_ip in request.ip_addresses:
        verdict = _check_ip(
            normalise_ip(raw_ip),
            node,
            policy,
            owners=owners or {},
            shared=shared or {},
            static_addresses=static_addresses or {},
        )
        if verdict is not None:
            return verdict

    expiration = spec.get("expirationSeconds")
    limit = policy.max_expiration_seconds
    if (
        limit is not None
        and expiration is not None
        and not (isinstance(expiration, int) and expiration <= limit)
    ):
        return _pending(
            Reason.EXPIRATION_TOO_LONG, f"expirationSeconds {expiration} exceeds {limit}", name
        )

    sans = [*request.dns_names, *(str(ip) for ip in request.ip_addresses)]
    return Verdict(
        "approve",
        Reason.APPROVED,
        f"nodehosts: every SAN belongs to node {name}: {', '.join(sans)}",
        name,
    )


def _decided(status: Any) -> Verdict | None:
    """The ignore verdict for a CSR someone already decided on (or the signer issued), if so."""
    if not isinstance(status, dict):
        return None
    conditions = status.get("conditions")
    condition_types = {
        c.get("type")
        for c in (conditions if isinstance(conditions, list) else ())
        if isinstance(c, dict)
    }
    for kind, reason in (
        ("Denied", Reason.ALREADY_DENIED),
        ("Failed", Reason.ALREADY_FAILED),
        ("Approved", Reason.ALREADY_APPROVED),
    ):
        if kind in condition_types:
            return Verdict("ignore", reason, f"CSR already has a {kind} condition")
    if status.get("certificate"):
        return Verdict("ignore", Reason.HAS_CERTIFICATE, "CSR already has a certificate")
    return None


@dataclass(frozen=True, slots=True)
class _Claims:
    """Name form -> the Nodes claiming it: the first claimer, plus all of them when several."""

    first: Mapping[str, str]
    several: Mapping[str, set[str]]

    def claimers(self, form: str) -> set[str] | frozenset[str]:
        several = self.several.get(form)
        if several is not None:
            return several
        first = self.first.get(form)
        return frozenset() if first is None else frozenset((first,))


_NO_CLAIMS = _Claims({}, {})


# Memoised like _ip_addresses: the index is rebuilt from every Node on every publish.
@functools.lru_cache(maxsize=16384)
def _node_claims(node: NodeInfo, domain: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The forms of `node`'s name, and of the Hostname addresses it reports."""
    hostnames = tuple(
        form
        for kind, value in node.addresses
        if kind == "Hostname"
        for form in _name_forms(value, domain)
    )
    return _name_forms(node.name, domain), hostnames


def _name_forms(name: str, domain: str) -> tuple[str, ...]:
    """The forms a Node name or Hostname is published (or certified) under: as given with a
    dot, else bare and under `domain` (the record policy's expansion)."""
    name = name.lower().removesuffix(".")
    if "." in name or not domain:
        return (name,)
    return (name, f"{name}.{domain}")


def _check_dns(
    dns_name: str,
    name: str,
    published_names: frozenset[str],
    *,
    reserved: set[str],
    name_claims: _Claims,
    hostname_claims: _Claims,
) -> Verdict | None:
    if dns_name in reserved:
        return _pending(
            Reason.DNS_SAN_RESERVED, f"DNS SAN {dns_name} is reserved (the API server's)", name
        )
    if dns_name not in published_names:
        return _pending(
            Reason.DNS_SAN_NOT_PUBLISHED,
            f"DNS SAN {dns_name} is not a name published for node {name}"
            f" (published: {_show(sorted(published_names))})",
            name,
        )
    others = sorted(name_claims.claimers(dns_name) - {name})
    if others:
        return _pending(
            Reason.DNS_SAN_OTHER_NODE,
            f"DNS SAN {dns_name} is the name of node {_few(others)}",
            name,
        )
    # A Node's own name is its own (names are unique; another Node's Hostname cannot take it,
    # as in the records); any other name must be claimed by no other Node.
    own = name in name_claims.claimers(dns_name)
    others = [] if own else sorted(hostname_claims.claimers(dns_name) - {name})
    if others:
        return _pending(
            Reason.DNS_SAN_SHARED,
            f"DNS SAN {dns_name} is also claimed as Hostname by node {_few(others)}",
            name,
        )
    return None


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_ip(
    address: IPAddress,
    node: NodeInfo,
    policy: CsrPolicy,
    *,
    owners: Mapping[IPAddress, str],
    shared: Mapping[IPAddress, frozenset[str]],
    static_addresses: Mapping[IPAddress, str],
) -> Verdict | None:
    name = node.name
    if (
        address.is_loopback
        or address.is_unspecified
        or address.is_link_local
        or address.is_multicast
    ):
        return _pending(
            Reason.IP_SAN_FORBIDDEN,
            f"IP SAN {address} is loopback, unspecified, link-local or multicast",
            name,
        )
    for network in policy.denied_cidrs:
        if address in network:
            return _pending(
                Reason.IP_SAN_IN_DENIED_CIDR, f"IP SAN {address} is in denied {network}", name
            )
    if policy.allowed_cidrs and not any(address in net for net in policy.allowed_cidrs):
        return _pending(
            Reason.IP_SAN_NOT_ALLOWED,
            f"IP SAN {address} is outside the allowed {_show(policy.allowed_cidrs)}",
            name,
        )
    static = static_addresses.get(address)
    if static is not None:
        return _pending(
            Reason.IP_SAN_STATIC_HOST,
            f"IP SAN {address} is the address of static host {static}",
            name,
        )
    if address not in node_ip_addresses(node, policy.address_types):
        if address in node_ip_addresses(node):
            return _pending(
                Reason.IP_SAN_TYPE_NOT_ALLOWED,
                f"IP SAN {address} is node {name}'s, but not of an allowed type"
                f" {_show(policy.address_types)} (csr.address_types)",
                name,
            )
        allowed = sorted(node_ip_addresses(node, policy.address_types), key=_ip_key)
        return _pending(
            Reason.IP_SAN_NOT_NODE_ADDRESS,
            f"IP SAN {address} is not an address of node {name} of the types"
            f" {_show(policy.address_types)} (addresses: {_show(allowed)})",
            name,
        )
    owner = owners.get(address)
    known = shared.get(address) or ({owner} if owner is not None else set())
    others = sorted(known - {name})
    if others:
        return _pending(
            Reason.IP_SAN_SHARED,
            f"IP SAN {address} is also an address of node {_few(others)}",
            name,
        )
    return None


def _pending(reason: Reason, message: str, node: str | None = None) -> Verdict:
    return Verdict("pending", reason, message, node)


def _show(values: Iterable[object]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _ip_key(address: IPAddress) -> tuple[int, int]:
    return (address.version, int(address))
