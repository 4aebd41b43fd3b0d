"""certificates.k8s.io/v1 CertificateSigningRequests for the fake API server.

Contract: `install(server)` registers the cluster-scoped collection
``/apis/certificates.k8s.io/v1/certificatesigningrequests`` on a `FakeApiServer` through its
`register()` extension point, so LIST (paged), WATCH, GET and PUT behave as for Nodes, plus the
``/approval`` subresource the way the real apiserver treats it:

- PUT ``.../{name}/approval`` takes a whole CSR object; only its ``status.conditions`` are kept
  (spec and the issued certificate always come from the stored object), after a stale
  ``metadata.resourceVersion`` was refused with 409 by the server.
- Like the apiserver's validation it answers 422 Invalid when a condition has no type, a status
  other than True/False/Unknown, a type twice, Approved together with Denied, or when an
  existing Approved or Denied condition would be removed or changed (a decision is final).
- Missing ``lastUpdateTime``/``lastTransitionTime`` are filled in.

What the fake does not do: RBAC (the signer ``approve`` permission is not checked) and field
selectors other than ``metadata.name`` (the real apiserver also supports ``spec.signerName``).
`issue(server, name)` plays the signer (kube-controller-manager): it adds a certificate.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from typing import Any

from nodehosts.testing.fake_apiserver import ApiStatus, FakeApiServer, ResourceType

__all__ = ["CSRS", "approval_conditions", "install", "issue"]

Json = dict[str, Any]

CSRS = ResourceType(
    "/apis/certificates.k8s.io/v1",
    "certificatesigningrequests",
    "CertificateSigningRequest",
    "certificates.k8s.io/v1",
)

_STATUSES = frozenset({"True", "False", "Unknown"})
_FINAL = ("Approved", "Denied")


def install(server: FakeApiServer) -> FakeApiServer:
    """Serve CSRs (and their /approval subresource) on `server`; returns it for chaining."""
    server.register(CSRS, subresources={"approval": _approval})
    return server


def approval_conditions(server: FakeApiServer, name: str) -> list[Json]:
    """The stored CSR's status.conditions (empty when none)."""
    status = server.get_object(CSRS.plural, name).get("status") or {}
    return list(status.get("conditions") or [])


def issue(server: FakeApiServer, name: str, certificate: bytes = b"fake certificate") -> Json:
    """What the signer does after approval: set status.certificate (MODIFIED)."""

    def sign(csr: Json) -> None:
        csr.setdefault("status", {})["certificate"] = base64.b64encode(certificate).decode()

    return server.edit_object(CSRS.plural, name, sign)


def _approval(current: Json, body: Json) -> Json:
    status = body.get("status") or {}
    if not isinstance(status, dict):
        raise _invalid("status must be an object")
    conditions = status.get("conditions") or []
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        raise _invalid("status.conditions must be a list of objects")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    seen: set[str] = set()
    checked: list[Json] = []
    for condition in conditions:
        kind, value = condition.get("type"), condition.get("status")
        if not isinstance(kind, str) or not kind:
            raise _invalid("status.conditions[].type: Required value")
        if value not in _STATUSES:
            raise _invalid(f"status.conditions[{kind}].status: Unsupported value: {value!r}")
        if kind in seen:
            raise _invalid(f"status.conditions: Duplicate value: {kind!r}")
        seen.add(kind)
        checked.append(
            {**condition, "lastUpdateTime": condition.get("lastUpdateTime") or now}
            | {"lastTransitionTime": condition.get("lastTransitionTime") or now}
        )
    if {"Approved", "Denied"} <= seen:
        raise _invalid("status.conditions: Approved and Denied conditions are mutually exclusive")
    old_conditions = (current.get("status") or {}).get("conditions") or []
    new_by_type = _by_type(checked)
    for kind, old in _by_type(old_conditions).items():
        if kind in _FINAL and (
            kind not in new_by_type or new_by_type[kind].get("status") != old.get("status")
        ):
            raise _invalid(f"status.conditions: {kind} condition may not be removed or changed")
    new = dict(current)
    new["status"] = {**(current.get("status") or {}), "conditions": checked}
    return new


def _by_type(conditions: Any) -> Mapping[str, Json]:
    return {c["type"]: c for c in conditions if isinstance(c, dict) and "type" in c}


def _invalid(message: str) -> ApiStatus:
    return ApiStatus(422, "Invalid", f"CertificateSigningRequest is invalid: {message}")
