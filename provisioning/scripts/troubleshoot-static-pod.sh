#!/usr/bin/env bash
# troubleshoot-static-pod.sh [COMPONENT]  (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler; default kube-apiserver). Run as root on a controller.
#
# A static pod has no systemd unit and, while the apiserver is down, no `kubectl logs`.
# This walks the same path by hand, in order, and prints each command before its output:
#   1. is the manifest there, and does the kubelet accept it?   journalctl -u kubelet
#   2. did containerd create the pod and its container?         crictl pods / crictl ps -a
#   3. why did the container exit?                              crictl logs
#   4. the same logs as files, also after the container is gone /var/log/pods
#   5. what the running component says about itself             /livez?verbose, etcd /health
# See provisioning/TROUBLESHOOTING.md for what the usual messages mean.
set -uo pipefail

component=${1:-kube-apiserver}
manifest=/etc/kubernetes/manifests/$component.yaml
export CONTAINER_RUNTIME_ENDPOINT=unix:///run/containerd/containerd.sock

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" 2>&1 | tail -n "${TAIL:-25}"; }

step "1. the manifest and the kubelet"
run ls -l "$manifest"
run systemctl is-active kubelet containerd
printf '$ journalctl -u kubelet --since -15min | grep -i %s\n' "$component"
journalctl -u kubelet --since -15min --no-pager 2>&1 | grep -i -- "$component" | tail -n 15
echo "   (a YAML typo shows here as 'Could not process manifest file'; nothing at all: wrong"
echo "   directory, check staticPodPath in /var/lib/kubelet/config.yaml)"

step "2. the pod sandbox and its containers (exited ones too)"
run crictl pods --name "$component"
run crictl ps -a --name "$component"

step "3. the logs of the last container"
container=$(crictl ps -a --name "$component" -q 2>/dev/null | head -n 1)
if [[ -n $container ]]; then
    run crictl inspect --output go-template --template '{{.status.state}} exit={{.status.exitCode}} reason={{.status.reason}}' "$container"
    TAIL=40 run crictl logs "$container"
else
    echo "   no container: the image pull or the sandbox failed; look at step 1 and:"
    run crictl images
fi

step "4. /var/log/pods (kept across restarts of the container)"
latest=$(ls -td /var/log/pods/kube-system_"$component"-*/"$component" 2>/dev/null | head -n 1)
if [[ -n $latest ]]; then
    run ls -l "$latest"
    TAIL=20 run tail -n 20 "$(ls -t "$latest"/*.log | head -n 1)"
else
    echo "   nothing under /var/log/pods for $component"
fi

step "5. health, from the component itself"
case $component in
    kube-apiserver)
        # Anonymous requests may read /livez and /readyz (system:public-info-viewer).
        run curl -sk "https://127.0.0.1:6443/livez?verbose"
        run curl -sk "https://127.0.0.1:6443/readyz?verbose"
        ;;
    etcd) run curl -s "http://127.0.0.1:2381/health" ;;
    kube-controller-manager) run curl -sk "https://127.0.0.1:10257/healthz" ;;
    kube-scheduler) run curl -sk "https://127.0.0.1:10259/healthz" ;;
esac
