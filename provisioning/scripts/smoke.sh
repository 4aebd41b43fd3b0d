#!/usr/bin/env bash
# Is the lab healthy? Checks what the lab's author learned the hard way, one line per check:
#   PASS  what works
#   FAIL  what does not -- likely: the usual cause; see TROUBLESHOOTING.md#section
# Exit 0 when every check passes, 1 otherwise. `vagrant up` runs it at the end; run it again
# any time:
#   ./scripts/smoke.sh                 on the host, from provisioning/: through `vagrant ssh`,
#                                      the cluster checks on controller-0, the LB's on each LB
#   sudo /opt/lab/provisioning/scripts/smoke.sh   on a controller (cluster) or an LB (nodehosts)
#   smoke.sh --cluster | --lb          only those checks, here
# The cluster checks start two DaemonSets in namespace lab-smoke (a pod on every worker, a
# host-network pod on every node) and delete it afterwards (SMOKE_KEEP=1 keeps it).
# Settings: SMOKE_KUBECONFIG (an admin kubeconfig, default /etc/kubernetes/admin.kubeconfig),
# SMOKE_TIMEOUT (seconds to wait for pods, metrics and certificates, default 240),
# SMOKE_IMAGE, SMOKE_EXTERNAL_NAME (a name outside the lab, default registry.k8s.io).
set -euo pipefail
# shellcheck source=/dev/null  # the library is checked on its own (tests/provisioning)
source "$(dirname "$0")/../lib/all.sh"
lab_load_env
: "${LAB_NODE:=smoke}"
: "${SMOKE_KUBECONFIG:=/etc/kubernetes/admin.kubeconfig}"
: "${SMOKE_TIMEOUT:=240}"
: "${SMOKE_NAMESPACE:=lab-smoke}"
: "${SMOKE_IMAGE:=registry.k8s.io/e2e-test-images/busybox:1.37.0-1}"   # Kubernetes' e2e image
: "${SMOKE_EXTERNAL_NAME:=registry.k8s.io}"
GUIDE=TROUBLESHOOTING.md
failures=0

pass() { printf 'PASS  %s\n' "$1"; }
skip() { printf 'SKIP  %s\n' "$1"; }
# fail CHECK CAUSE SECTION
fail() {
    printf 'FAIL  %s -- likely: %s; see %s#%s\n' "$1" "$2" "$GUIDE" "$3"
    failures=$(( failures + 1 ))
}

# retry CMD...: until it succeeds or SMOKE_TIMEOUT seconds have passed (0: one try).
retry() {
    local deadline=$(( SECONDS + SMOKE_TIMEOUT ))
    until "$@"; do
        (( SECONDS < deadline )) || return 1
        sleep 3
    done
}

k() { kubectl --kubeconfig="$SMOKE_KUBECONFIG" "$@"; }
ks() { k -n "$SMOKE_NAMESPACE" "$@"; }

# --- the cluster, from a controller -------------------------------------------------------
# cluster_checks declares what the functions below share (bash 4 maps: a controller's bash,
# never needed on the host, where macOS has bash 3):
#   nodes, workers        names, from the API
#   node_ip[NODE]         InternalIP
#   smoke_pod[NODE], pod_ip[NODE], host_pod[NODE]   the smoke pods on NODE

load_nodes() {
    local name role ip
    while read -r name role ip; do
        [[ -n $name ]] || continue
        nodes+=("$name")
        node_ip[$name]=$ip
        [[ $role == worker ]] && workers+=("$name")
    done < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.labels.node\.kubernetes\.io/role} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
}

# Nodes whose calico-node pod is not Ready (all of them if it has none).
calico_not_ready() {
    local name ready out; declare -A state=()
    out=$(k -n kube-system get pods -l k8s-app=calico-node -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}') || out=""
    while read -r name ready; do [[ -n $name ]] && state[$name]=$ready; done <<<"$out"
    for name in "${nodes[@]}"; do
        [[ ${state[$name]:-} == True ]] || echo "$name"
    done
}
calico_ready_everywhere() { [[ -z $(calico_not_ready) ]]; }

# False while the namespace of a previous run is still being deleted.
namespace_usable() {
    [[ $(k get namespace "$SMOKE_NAMESPACE" -o jsonpath='{.status.phase}' 2>/dev/null) != Terminating ]]
}

smoke_workload() {
    retry namespace_usable || return 1
    ks apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $SMOKE_NAMESPACE
---
# A pod on every worker, on the pod network: ping, DNS, logs, exec.
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: smoke
  namespace: $SMOKE_NAMESPACE
spec:
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      nodeSelector:
        node.kubernetes.io/role: worker
      terminationGracePeriodSeconds: 1
      containers:
      - name: smoke
        image: $SMOKE_IMAGE
        command: ["sh", "-c", "echo lab-smoke on \$NODE_NAME; exec sleep 86400"]
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
---
# A host-network pod on every node, controllers included: the node's own sysctls.
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: smoke-host
  namespace: $SMOKE_NAMESPACE
spec:
  selector:
    matchLabels: {app: smoke-host}
  template:
    metadata:
      labels: {app: smoke-host}
    spec:
      hostNetwork: true
      tolerations:
      - operator: Exists
      terminationGracePeriodSeconds: 1
      containers:
      - name: smoke
        image: $SMOKE_IMAGE
        command: ["sleep", "86400"]
EOF
}

# True once both DaemonSets have a Ready pod on each node they should run on.
smoke_pods_ready() {
    local name desired ready ok=0
    while read -r name desired ready; do
        [[ -n $name ]] || continue
        [[ $desired == "$ready" && $desired != 0 ]] || ok=1
    done < <(ks get daemonsets -o jsonpath='{range .items[*]}{.metadata.name} {.status.desiredNumberScheduled} {.status.numberReady}{"\n"}{end}')
    return $ok
}

load_smoke_pods() {
    local name node ip app
    while read -r name node ip app; do
        [[ -n $name ]] || continue
        if [[ $app == smoke ]]; then smoke_pod[$node]=$name; pod_ip[$node]=$ip; else host_pod[$node]=$name; fi
    done < <(ks get pods -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.metadata.labels.app}{"\n"}{end}')
}

check_ping() {
    local n=${#workers[@]} i from to
    if (( n < 2 )); then skip "cross-node pod ping: needs two workers, this lab has $n"; return; fi
    for (( i = 0; i < n; i++ )); do
        from=${workers[i]} to=${workers[(i + 1) % n]}
        local what="pod on $from pings pod on $to (${pod_ip[$to]:-?})"
        if [[ -z ${smoke_pod[$from]:-} || -z ${pod_ip[$to]:-} ]]; then
            fail "$what: no smoke pod" "the pods did not start" pods-do-not-start
        elif ks exec "${smoke_pod[$from]}" -- ping -c 2 -W 3 "${pod_ip[$to]}" >/dev/null 2>&1; then
            pass "$what"
        else
            fail "$what" "net.ipv4.conf.all.forwarding=0 on a node, or no Calico route (BGP) between them" pods-cannot-reach-each-other
        fi
    done
}

# has_address TEXT IP: IP appears as a whole address (10.32.0.1 is not in "10.32.0.10").
has_address() { grep -Eq "(^|[^0-9.])${2//./\\.}([^0-9.]|\$)" <<<"$1"; }

# check_dns WHAT NAME EXPECTED CAUSE POD: nslookup NAME in POD; the answer must hold EXPECTED
# (an address; empty: any answer).
check_dns() {
    local what=$1 name=$2 expected=$3 cause=$4 pod=$5 out
    if out=$(ks exec "$pod" -- nslookup "$name" 2>&1) && { [[ -z $expected ]] || has_address "$out" "$expected"; }; then
        pass "pod DNS: $what $name -> ${expected:-an address}"
    else
        fail "pod DNS: $what $name does not resolve${expected:+ to $expected}" "$cause" names-do-not-resolve
    fi
}

check_logs_exec() {
    local worker pod
    for worker in "${workers[@]}"; do
        pod=${smoke_pod[$worker]:-}
        if [[ -z $pod ]]; then
            fail "kubectl logs/exec on $worker: no smoke pod there" "the pod did not start" pods-do-not-start
        elif [[ $(ks logs "$pod" 2>&1) == "lab-smoke on $worker" ]] && ks exec "$pod" -- true >/dev/null 2>&1; then
            pass "kubectl logs and exec on $worker (apiserver -> kubelet by name, certificate verified)"
        else
            fail "kubectl logs/exec on $worker" "$worker's name does not resolve on the controllers, or its serving certificate is not approved" serving-csrs-pending
        fi
    done
}

top_lists_every_node() {
    local out name
    out=$(k top nodes --no-headers 2>/dev/null) || return 1
    for name in "${nodes[@]}"; do grep -q "^$name " <<<"$out" || return 1; done
}

# Nodes whose kubelet the apiserver cannot reach with a verified certificate, one line each:
# "NAME WHY" (the last line kubectl wrote to stderr). Only stdout is the answer: a warning on
# stderr (or a shell's own complaint) does not make a healthy kubelet unverified.
kubelets_unverified() {
    local name out err
    err=$(mktemp)
    for name in "${nodes[@]}"; do
        out=$(k get --raw "/api/v1/nodes/$name/proxy/healthz" 2>"$err") || true
        [[ $out == ok ]] || echo "$name $(tail -n 1 "$err")"
    done
    rm -f "$err"
}
kubelets_verified() { [[ -z $(kubelets_unverified) ]]; }

# Pending kubelet-serving CSRs as "name (system:node:x)"; a failed listing is not "none".
pending_serving_csrs() {
    local out
    out=$(k get csr -o jsonpath='{range .items[*]}{.metadata.name} {.spec.signerName} {.spec.username} {.status.conditions[*].type}{"\n"}{end}') \
        || { echo "(kubectl get csr failed)"; return 0; }
    awk '$2 == "kubernetes.io/kubelet-serving" && NF == 3 { print $1 " (" $3 ")" }' <<<"$out"
}

check_forwarding() {
    local name value bad=() unread=()
    for name in "${nodes[@]}"; do
        # Read through the node's host-network smoke pod; without one it cannot be read, and
        # that is not a forwarding problem.
        if [[ -n ${host_pod[$name]:-} ]] \
            && value=$(ks exec "${host_pod[$name]}" -- cat /proc/sys/net/ipv4/conf/all/forwarding 2>/dev/null); then
            [[ $value == 1 ]] || bad+=("$name=$value")
        else
            unread+=("$name")
        fi
    done
    if (( ${#bad[@]} )); then
        fail "net.ipv4.conf.all.forwarding is not 1 on ${bad[*]}" "a sysctl file overrides /etc/sysctl.d/90-kubernetes-lab.conf" pods-cannot-reach-each-other
    fi
    if (( ${#unread[@]} )); then
        fail "net.ipv4.conf.all.forwarding unknown on ${unread[*]}: no running smoke-host pod there" "the host-network smoke pods did not start (can the node pull $SMOKE_IMAGE?)" pods-do-not-start
    fi
    if (( ${#bad[@]} + ${#unread[@]} == 0 )); then
        pass "net.ipv4.conf.all.forwarding = 1 on every node (${#nodes[@]})"
    fi
}

cluster_checks() {
    local nodes=() workers=()
    declare -A node_ip=() smoke_pod=() host_pod=() pod_ip=()
    if ! k get --raw=/readyz >/dev/null 2>&1; then
        fail "the API does not answer through the LB ($LB_VIP:6443)" "haproxy on the LB, or no apiserver ready" a-control-plane-static-pod-does-not-start
        return
    fi
    pass "the API answers through the LB ($LB_VIP:6443)"
    load_nodes
    if (( ${#nodes[@]} == 0 )); then
        fail "no nodes registered" "kubelets cannot reach the API" a-control-plane-static-pod-does-not-start
        return
    fi

    local not_ready
    if retry calico_ready_everywhere; then
        pass "calico-node Ready on every node (${#nodes[@]})"
    else
        not_ready=$(calico_not_ready | tr '\n' ' ') || true
        fail "calico-node not Ready on ${not_ready% }" "Felix or BIRD not ready (RBAC, IP autodetection, BGP)" calico-node-not-ready
    fi

    if ! smoke_workload; then
        fail "cannot create the smoke pods (namespace $SMOKE_NAMESPACE)" "the API refused them, or the last run's namespace is still being deleted" pods-do-not-start
    elif retry smoke_pods_ready; then
        pass "smoke pods running on every node (namespace $SMOKE_NAMESPACE)"
    else
        fail "smoke pods not running everywhere: kubectl -n $SMOKE_NAMESPACE get pods -o wide" "no CNI on a node (calico), or the image cannot be pulled ($SMOKE_IMAGE)" pods-do-not-start
    fi
    load_smoke_pods

    check_ping

    local pod=""
    (( ${#workers[@]} )) && pod=${smoke_pod[${workers[0]}]:-}
    if [[ -n $pod ]]; then
        local target=${workers[-1]}     # a DHCP address, published by nodehosts from the API
        check_dns "node name" "$target.$NODE_DOMAIN" "${node_ip[$target]}" \
            "nodehosts or CoreDNS on the LB, or the cluster DNS cannot forward to it" "$pod"
        check_dns "Service" "kubernetes.default.svc.$CLUSTER_DOMAIN" "$API_SERVICE_IP" \
            "cluster CoreDNS (kube-system/coredns) or kube-proxy" "$pod"
        check_dns "external name" "$SMOKE_EXTERNAL_NAME" "" \
            "the LB does not forward other names upstream" "$pod"
    else
        fail "pod DNS: no smoke pod to ask from" "the pods did not start" pods-do-not-start
    fi

    check_logs_exec

    if retry top_lists_every_node; then
        pass "kubectl top nodes lists every node (metrics-server, verified kubelet certificates)"
    else
        fail "kubectl top nodes does not list every node" "metrics-server cannot scrape the kubelets (names, serving certificates), or the APIService is unavailable" metrics-server-unavailable
    fi

    local pending unverified lookup
    if retry kubelets_verified && [[ -z $(pending_serving_csrs) ]]; then
        pass "every kubelet's serving certificate approved and verified (${#nodes[@]} nodes, no CSR pending)"
    else
        unverified=$(kubelets_unverified) || true
        pending=$(pending_serving_csrs | tr '\n' ' ') || true
        # The apiserver reaches kubelets by name first: a failed lookup is the LB's DNS, not a
        # certificate ("lookup worker-0 on 10.240.0.40:53: ... i/o timeout").
        lookup=$(grep -E '(^| )lookup [^ ]+ on ' <<<"$unverified" | awk '{ print $1 }' | tr '\n' ' ') || true
        if [[ -n $lookup ]]; then
            fail "the apiserver cannot resolve ${lookup% }: $(grep -m 1 -oE 'lookup .*' <<<"$unverified")" "the LB's DNS ($LB_VIP: CoreDNS, or nodehosts serving DNS) does not answer node names" names-do-not-resolve
        else
            local first
            first=$(head -n 1 <<<"$unverified")
            unverified=$(awk '{ print $1 }' <<<"$unverified" | tr '\n' ' ') || true
            fail "kubelet serving certificates: unverified on ${unverified:-none}(${first:+first: $first}), pending CSRs ${pending:-none}" "nodehosts did not approve them (journalctl -u nodehosts on the LB)" serving-csrs-pending
        fi
    fi

    check_forwarding

    if [[ -z ${SMOKE_KEEP:-} ]]; then
        k delete namespace "$SMOKE_NAMESPACE" --wait=false >/dev/null 2>&1 || true
    fi
}

# --- a load balancer ------------------------------------------------------------------------

lb_checks() {
    local name out rc=0
    name=$(hostname)
    out=$(nodehosts dump --diff 2>&1) || rc=$?
    case $rc in
        0) pass "nodehosts on $name publishes exactly the API's nodes (nodehosts dump --diff)" ;;
        1) fail "nodehosts on $name differs from the API: $(grep -E '^[-+][^-+]' <<<"$out" | head -n 5 | tr '\n' ' ')" \
                "its watch is behind or failing (journalctl -u nodehosts)" names-do-not-resolve ;;
        *) fail "nodehosts on $name cannot compare with the API: $(tail -n 1 <<<"$out")" \
                "nodehosts is not running, or the API is unreachable from the LB" names-do-not-resolve ;;
    esac
}

# --- on the host: each part where its tools and credentials are ---------------------------

from_host() {
    local lb out rc
    if ! command -v vagrant >/dev/null || [[ ! -f $LAB_DIR/Vagrantfile ]]; then
        die "run this on a controller, on an LB, or on the host from provisioning/ with Vagrant"
    fi
    cd "$LAB_DIR"
    # The settings above reach the controller's run (sudo would drop them from the
    # environment); SMOKE_KUBECONFIG does not: a path on this machine means nothing there.
    local var settings=()
    for var in SMOKE_TIMEOUT SMOKE_NAMESPACE SMOKE_IMAGE SMOKE_EXTERNAL_NAME SMOKE_KEEP; do
        [[ -n ${!var:-} ]] && settings+=("$var=${!var}")
    done
    vagrant ssh controller-0 --no-tty -c "sudo env ${settings[*]@Q} bash $LAB_INSTALL_DIR/scripts/smoke.sh --cluster" \
        || failures=$(( failures + 1 ))
    for lb in $(lb_names); do
        rc=0
        out=$(vagrant ssh "$lb" --no-tty -c "sudo nodehosts dump --diff" 2>&1) || rc=$?
        case $rc in
            0) pass "nodehosts on $lb publishes exactly the API's nodes (nodehosts dump --diff)" ;;
            *) fail "nodehosts on $lb: dump --diff exited $rc: $(tr -d '\r' <<<"$out" | tail -n 3 | tr '\n' ' ')" \
                    "its watch is behind or failing, or it is not running (journalctl -u nodehosts)" names-do-not-resolve ;;
        esac
    done
}

mode=${1:-auto}
case $mode in
    --cluster) cluster_checks ;;
    --lb) lb_checks ;;
    auto)
        if [[ -r $SMOKE_KUBECONFIG ]]; then cluster_checks
        elif command -v nodehosts >/dev/null; then lb_checks
        else from_host
        fi ;;
    *) die "usage: smoke.sh [--cluster|--lb]" ;;
esac
if (( failures )); then
    echo "smoke: FAILED (see the FAIL lines above)"
    exit 1
fi
echo "smoke: all checks passed"
