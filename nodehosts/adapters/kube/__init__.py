"""The Kubernetes API adapter, one module per thing it holds.

- `config`: where the client configuration comes from (kubeconfig, in-cluster), loading it,
  and the files it is built from (watched for credential rotation).
- `leanimport`: importing only the official client's configuration and transport.
- `errors`: KubeApiError and its fixed reasons.
- `transport`: HTTP with the official client's settings; `ClientHolder` (the transport of one
  user, rebuilt after bad credentials) and `Backoff`, shared by the watcher and the approver.
- `listjson`: decoding LIST pages and watch lines, with their size caps.
- `reflector`: list/watch of one collection into an Inventory, reported on the asyncio loop.
- `nodes`: that for the cluster's Nodes (`NodeSource`), and a one-shot `list_nodes`.

"""
