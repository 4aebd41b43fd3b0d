"""Every parser of outside input, fed generated JSON: nothing escapes but its own "rejected"
error (issue 12). Deep nesting, NaN, 1e400, huge integers, wrong types, and valid objects with
one part replaced by any of those."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodehosts.adapters.control import ControlServer
from nodehosts.adapters.kube.errors import KubeApiError
from nodehosts.adapters.kube.listjson import decode_list
from nodehosts.adapters.kube.nodes import NodeSource
from nodehosts.adapters.state import StateFormatError, decode_state, encode_state
from nodehosts.config import ConfigError, build_settings
from nodehosts.core.csr import BadCsr, CsrPolicy, NodeIndex, csr_from_json
from nodehosts.core.hosts import parse_hosts
from nodehosts.core.inventory import NodeInventory
from nodehosts.core.model import RecordSet
from nodehosts.core.nodes import BadNode, node_from_json
from nodehosts.testing.fake_apiserver import make_node
from tests.helpers.csrs import make_csr

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "10.240.0.1", "worker-0", "InternalIP", "system:nodes", "ADDED"]),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


# Stands for 3000 nested lists, built in the test (hypothesis cannot print such an example).
DEEP = "<3000 nested lists>"


def deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def realise(value: Any) -> Any:
    """`value` with every DEEP marker replaced by the nesting it stands for."""
    if value == DEEP:
        return deep(3000)
    if isinstance(value, list):
        return [realise(item) for item in value]
    if isinstance(value, dict):
        return {key: realise(item) for key, item in value.items()}
    return value


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """`base` (deep-copied) with one value somewhere inside replaced by generated JSON."""
    document = json.loads(json.dumps(base))
    holder, key = None, None
    node = document
    for _ in range(draw(st.integers(0, 6))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            key = draw(st.integers(0, len(node) - 1))
        else:
            break
        holder, node = node, node[key]
    replacement = draw(st.one_of(JSON, st.just(DEEP)))
    if holder is None:
        return replacement
    holder[key] = replacement
    return document


NODE = make_node("worker-0", addresses=["10.240.0.101", ("ExternalIP", "192.0.2.1")])
CSR = make_csr("worker-0", dns=["worker-0"], ips=["10.240.0.101"])
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def to_bytes(value: Any) -> bytes:
    try:
        return json.dumps(realise(value), allow_nan=True).encode()
    except (RecursionError, ValueError):
        return b"[" * 100_000


@PROFILE
@given(st.one_of(JSON, mutated(NODE)))
def test_nodes(obj: Any) -> None:
    obj = realise(obj)
    with contextlib.suppress(BadNode):
        node_from_json(obj)
    inventory = NodeInventory()
    inventory.replace([obj, NODE], "1")
    for event in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        inventory.apply(event, obj)


@PROFILE
@given(st.one_of(JSON, mutated(CSR)))
def test_csrs(obj: Any) -> None:
    obj = realise(obj)
    try:
        csr = csr_from_json(obj)
    except BadCsr:
        return
    if csr.raw is not None:
        node = node_from_json(NODE)
        NodeIndex.build([node], RecordSet()).evaluate(csr.raw, CsrPolicy())


STATE = json.loads(
    encode_state(
        decode_state(
            b'{"format": "nodehosts-state", "version": 1, "saved_at": 1, "generation": 1,'
            b' "hosts": [{"names": ["a"], "addresses": ["10.0.0.1"], "origin": "static",'
            b' "node": null}]}'
        )
    )
)


@PROFILE
@given(st.one_of(JSON, mutated(STATE)).map(to_bytes) | st.binary(max_size=50))
def test_state_files(data: bytes) -> None:
    try:
        state = decode_state(data)
    except StateFormatError:
        return
    assert math.isfinite(state.saved_at)


CONFIG = {
    "records": {"domain": "lab", "address_types": ["InternalIP"], "static_hosts": ""},
    "dns": {"listen": ["127.0.0.1:53"], "ttl": 30, "upstream": ["127.0.0.53"]},
    "csr": {"allowed_cidrs": ["10.240.0.0/24"], "max_expiration_seconds": 3600},
}


@PROFILE
@given(st.one_of(JSON, mutated(CONFIG)))
def test_config_values(data: Any) -> None:
    data = realise(data)
    if not isinstance(data, dict):
        data = {"records": data}
    with contextlib.suppress(ConfigError):
        build_settings(data, {})


@PROFILE
@given(st.one_of(JSON.map(to_bytes), st.binary(max_size=200)))
def test_static_hosts_text(data: bytes) -> None:
    _hosts, problems = parse_hosts(data.decode("utf-8", errors="replace").replace("\0", ""))
    assert problems.total >= len(problems)


@pytest.fixture(scope="module")
def control() -> ControlServer:
    return ControlServer(Path("/nonexistent/unused.sock"), {"dump": lambda arguments: arguments})


@PROFILE
@given(line=st.one_of(JSON, mutated({"command": "dump", "format": "json"})).map(to_bytes))
def test_control_requests(control: ControlServer, line: bytes) -> None:
    answer = asyncio.run(control._answer(line))
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool)


LIST = {"kind": "NodeList", "metadata": {"resourceVersion": "5"}, "items": [NODE]}


@PROFILE
@given(st.one_of(JSON, mutated(LIST)).map(to_bytes))
def test_list_pages(data: bytes) -> None:
    try:
        _metadata, items = decode_list(data, "/api/v1/nodes")
        inventory = NodeInventory()
        inventory.replace(items, "5")
    except KubeApiError:
        pass


class Quiet:
    def nodes_synced(self, *_args: Any) -> None: ...
    def nodes_changed(self, *_args: Any) -> None: ...
    def source_error(self, *_args: Any) -> None: ...


@PROFILE
@given(st.one_of(JSON, mutated({"type": "MODIFIED", "object": NODE})).map(to_bytes))
def test_watch_lines(line: bytes) -> None:
    source = NodeSource(lambda: None, Quiet())  # type: ignore[arg-type,return-value]
    loop = asyncio.new_event_loop()
    try:
        source._apply(line, loop)
    except KubeApiError:  # ResourceExpired is one too
        pass
    finally:
        loop.close()
