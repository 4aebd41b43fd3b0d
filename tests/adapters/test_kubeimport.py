"""The lean import of the official client: configuration and transport without the generated API.

Each test runs the client side in a fresh interpreter (what is imported, and the RSS, depend on
everything the process imported before) against the fake API server in this process, and gets
one JSON object back. The same holds with kubernetes 22.6 and 37.x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nodehosts.adapters.kube.leanimport import LEAN_ENV
from nodehosts.testing.fake_apiserver import FakeApiServer, make_node

REPO = Path(__file__).resolve().parents[2]

# Shared by every child: the RSS, what of kubernetes is imported, and one LIST through
# nodehosts.adapters.kube.config and .nodes (the daemon's path: configuration, then the transport).
PRELUDE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    ARGS = json.loads(sys.argv[1])

    def rss_kib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def loaded(*names):
        return {name: name in sys.modules for name in names}

    def list_via_nodehosts(kubeconfig=None, **options):
        from nodehosts.adapters.kube.config import load_client_configuration
        from nodehosts.adapters.kube.nodes import list_nodes
        configuration = load_client_configuration(
            Path(kubeconfig) if kubeconfig else None, **options
        )
        nodes, _ = list_nodes(configuration)
        return sorted(nodes)

    def lean():
        from nodehosts.adapters.kube.leanimport import official_client
        return official_client().lean

    GENERATED = (
        "kubernetes.client.models", "kubernetes.client.api", "kubernetes.client.api_client"
    )
    """
)


def run_child(body: str, args: dict[str, Any], *, env: dict[str, str] | None = None) -> Any:
    """Run PRELUDE + body in a fresh interpreter; the body prints one JSON value last."""
    child_env = {
        key: value
        for key, value in os.environ.items()
        if key not in (LEAN_ENV, "PYTHONTRACEMALLOC", "PYTHONDEVMODE")
    }
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    child_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body), json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def cluster(api_server: FakeApiServer) -> FakeApiServer:
    api_server.add_object("nodes", make_node("worker-1", addresses=["10.240.0.101"]))
    api_server.add_object("nodes", make_node("worker-2", addresses=["10.240.0.102"]))
    return api_server


LEAN_LIST = """
    nodes = list_via_nodehosts(ARGS["kubeconfig"])
    import kubernetes, kubernetes.client
    print(json.dumps({
        "nodes": nodes,
        "lean": lean(),
        "generated": loaded(*GENERATED),
        "package_init_ran": "__version__" in vars(kubernetes),
        "client_init_ran": "__version__" in vars(kubernetes.client),
        "paths": [list(kubernetes.__path__), list(kubernetes.client.__path__)],
        "files": [kubernetes.__file__, kubernetes.client.__spec__.origin],
        "rss_kib": rss_kib(),
    }))
"""


def test_a_list_through_nodehosts_does_not_import_the_generated_api(cluster, kubeconfig):
    """Configuration and a real LIST: no models, no API classes, no package __init__ run."""
    result = run_child(LEAN_LIST, {"kubeconfig": str(kubeconfig)})
    assert result["nodes"] == ["worker-1", "worker-2"]
    assert result["lean"] is True
    assert result["generated"] == dict.fromkeys(
        ("kubernetes.client.models", "kubernetes.client.api", "kubernetes.client.api_client"),
        False,
    )
    assert result["package_init_ran"] is False
    assert result["client_init_ran"] is False
    # The registered packages are the real ones: the real directory and __init__ file.
    package_dir, client_dir = (Path(paths[0]) for paths in result["paths"])
    assert client_dir == package_dir / "client"
    assert result["files"] == [str(package_dir / "__init__.py"), str(client_dir / "__init__.py")]


FULL_LIST = """
    import kubernetes.client, kubernetes.config  # what nodehosts did before: everything
    nodes = list_via_nodehosts(ARGS["kubeconfig"])
    print(json.dumps({"nodes": nodes, "lean": lean(), "rss_kib": rss_kib()}))
"""


def test_the_lean_import_costs_clearly_less_rss_than_the_full_client(cluster, kubeconfig):
    """Same LIST; with `import kubernetes.client` first it costs >= 10 MiB more RSS."""
    lean_run = run_child(LEAN_LIST, {"kubeconfig": str(kubeconfig)})
    full_run = run_child(FULL_LIST, {"kubeconfig": str(kubeconfig)})
    assert lean_run["lean"] is True
    assert full_run["lean"] is False  # the package was imported already: used as it is
    assert full_run["nodes"] == lean_run["nodes"] == ["worker-1", "worker-2"]
    saved_kib = full_run["rss_kib"] - lean_run["rss_kib"]
    # Measured (child VmRSS after the LIST): 37.0.2 34.6 vs 49.5 MiB, 22.6 38.4 vs 60.4 MiB.
    assert saved_kib >= 10 * 1024, (lean_run, full_run)


def test_the_rest_of_the_package_still_works_after_the_lean_import(cluster, kubeconfig):
    """`from kubernetes.client import CoreV1Api`, `import kubernetes.watch` etc. still work."""
    body = """
        nodes = list_via_nodehosts(ARGS["kubeconfig"])
        import threading
        import kubernetes.watch
        watch = kubernetes.watch.Watch()
        import kubernetes.client
        # Two threads ask at once: the real __init__ runs once, both get the same class.
        found = []
        threads = [
            threading.Thread(target=lambda: found.append(kubernetes.client.CoreV1Api))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        from kubernetes.client import CoreV1Api, Configuration, V1Node
        from kubernetes import config, client, dynamic, __version__
        from nodehosts.adapters.kube.leanimport import official_client
        api_client = config.new_client_from_config(ARGS["kubeconfig"])
        response = CoreV1Api(api_client).list_node(_preload_content=False)
        listed = sorted(item["metadata"]["name"] for item in json.loads(response.data)["items"])
        print(json.dumps({
            "nodes": nodes,
            "listed": listed,
            "same_class": found == [CoreV1Api, CoreV1Api],
            "same_configuration": Configuration is official_client().configuration_class,
            "real_api_client": type(api_client) is client.ApiClient
                and config.kube_config.ApiClient is client.ApiClient,
            "version": __version__ == kubernetes.__version__ == client.__version__,
            "node_model": V1Node.__name__,
            "dynamic": dynamic.DynamicClient.__name__,
            "getattr_left": "__getattr__" in vars(kubernetes),
            "watch": type(watch).__name__,
        }))
    """
    result = run_child(body, {"kubeconfig": str(kubeconfig)})
    assert result == {
        "nodes": ["worker-1", "worker-2"],
        "listed": ["worker-1", "worker-2"],
        "same_class": True,
        "same_configuration": True,
        "real_api_client": True,
        "version": True,
        "node_model": "V1Node",
        "dynamic": "DynamicClient",
        "getattr_left": False,
        "watch": "Watch",
    }


def test_an_unknown_name_is_still_an_attribute_error(cluster, kubeconfig):
    """A name the real package lacks raises AttributeError after its __init__ ran."""
    body = """
        list_via_nodehosts(ARGS["kubeconfig"])
        import kubernetes.client
        try:
            kubernetes.client.NoSuchThing
        except AttributeError as error:
            print(json.dumps({"error": str(error)}))
    """
    result = run_child(body, {"kubeconfig": str(kubeconfig)})
    assert "NoSuchThing" in result["error"]


def test_tls_and_a_bearer_token_through_the_lean_import(tmp_path):
    """TLS verified against the kubeconfig's CA, and the bearer token, via the lean import."""
    with FakeApiServer(tokens=["tls-token"], tls=True) as server:
        server.add_object("nodes", make_node("worker-1", addresses=["10.240.0.101"]))
        path = server.write_kubeconfig(tmp_path / "kubeconfig", token="tls-token")
        result = run_child(LEAN_LIST, {"kubeconfig": str(path)})
        assert [(r.verb, r.token) for r in server.requests] == [("list", "tls-token")]
    assert result["nodes"] == ["worker-1"]
    assert result["lean"] is True
    assert not any(result["generated"].values())


def test_in_cluster_configuration_through_the_lean_import(tmp_path):
    """In a pod: the service account token and CA, via the lean import."""
    with FakeApiServer(tokens=["sa-token"], tls=True) as server:
        server.add_object("nodes", make_node("worker-1", addresses=["10.240.0.101"]))
        assert server.ca_pem is not None
        (tmp_path / "token").write_text("sa-token")
        (tmp_path / "ca.crt").write_bytes(server.ca_pem)
        body = """
            nodes = list_via_nodehosts(
                None, environ=ARGS["environ"], service_account_dir=Path(ARGS["directory"])
            )
            print(json.dumps({"nodes": nodes, "lean": lean(), "generated": loaded(*GENERATED)}))
        """
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(server.port),
        }
        result = run_child(body, {"environ": environ, "directory": str(tmp_path)})
    assert result["nodes"] == ["worker-1"]
    assert result["lean"] is True
    assert not any(result["generated"].values())


EXEC_PLUGIN = """\
import datetime, json, pathlib, sys
here = pathlib.Path(sys.argv[1])
with open(here / "runs", "a") as runs:
    runs.write("x")
# Expires within the client's 5 minute skew: the token is fetched again for every request.
expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {
        "token": (here / "token").read_text().strip(),
        "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
    },
}))
"""


def test_an_exec_credential_plugin_refreshes_the_token(tmp_path):
    """kube_config's exec provider and refresh hook work behind the lean import."""
    (tmp_path / "plugin.py").write_text(EXEC_PLUGIN)
    (tmp_path / "token").write_text("first-token")
    with FakeApiServer(tokens=["first-token", "second-token"]) as server:
        server.add_object("nodes", make_node("worker-1", addresses=["10.240.0.101"]))
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
            "users": [
                {
                    "name": "fake",
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": sys.executable,
                            "args": [str(tmp_path / "plugin.py"), str(tmp_path)],
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps(config))
        body = """
            from nodehosts.adapters.kube.config import load_client_configuration
            from nodehosts.adapters.kube.transport import KubeTransport
            transport = KubeTransport(load_client_configuration(Path(ARGS["kubeconfig"])))
            first = transport.request_json("GET", "/api/v1/nodes")
            Path(ARGS["token"]).write_text("second-token")
            second = transport.request_json("GET", "/api/v1/nodes")
            print(json.dumps({
                "names": [[item["metadata"]["name"] for item in page["items"]]
                          for page in (first, second)],
                "lean": lean(),
                "generated": loaded(*GENERATED),
            }))
        """
        result = run_child(body, {"kubeconfig": str(kubeconfig), "token": str(tmp_path / "token")})
        tokens = [record.token for record in server.requests]
    assert result["names"] == [["worker-1"], ["worker-1"]]
    assert result["lean"] is True
    assert not any(result["generated"].values())
    assert tokens == ["first-token", "second-token"]
    assert len((tmp_path / "runs").read_text()) >= 2


def test_an_imported_package_is_used_as_it_is(cluster, kubeconfig):
    """`kubernetes` imported before nodehosts: no stubs, the loaded modules are used."""
    body = """
        import kubernetes
        before = kubernetes
        nodes = list_via_nodehosts(ARGS["kubeconfig"])
        import kubernetes
        print(json.dumps({"nodes": nodes, "lean": lean(), "same": kubernetes is before}))
    """
    result = run_child(body, {"kubeconfig": str(kubeconfig)})
    assert result == {"nodes": ["worker-1", "worker-2"], "lean": False, "same": True}


def test_the_lean_import_can_be_turned_off(cluster, kubeconfig):
    """NODEHOSTS_KUBE_LEAN_IMPORT=0: the ordinary import (everything)."""
    body = """
        nodes = list_via_nodehosts(ARGS["kubeconfig"])
        import kubernetes
        init_ran = "__version__" in vars(kubernetes)
        print(json.dumps({"nodes": nodes, "lean": lean(), "init_ran": init_ran}))
    """
    result = run_child(body, {"kubeconfig": str(kubeconfig)}, env={LEAN_ENV: "0"})
    assert result == {"nodes": ["worker-1", "worker-2"], "lean": False, "init_ran": True}


def test_a_failing_lean_import_falls_back_to_the_ordinary_one(cluster, kubeconfig):
    """If the stubs are not enough for some client version: drop them, import everything."""
    body = """
        from nodehosts.adapters.kube import leanimport
        real = leanimport._import_plain
        def failing(*, lean):
            if lean:
                import kubernetes.client.rest
                raise ImportError("simulated: this version needs more")
            return real(lean=lean)
        leanimport._import_plain = failing
        nodes = list_via_nodehosts(ARGS["kubeconfig"])
        import kubernetes, kubernetes.client
        print(json.dumps({
            "nodes": nodes,
            "lean": lean(),
            "init_ran": "__version__" in vars(kubernetes),
            "getattr_left": "__getattr__" in vars(kubernetes),
        }))
    """
    result = run_child(body, {"kubeconfig": str(kubeconfig)})
    assert result == {
        "nodes": ["worker-1", "worker-2"],
        "lean": False,
        "init_ran": True,
        "getattr_left": False,
    }
