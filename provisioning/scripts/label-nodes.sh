#!/usr/bin/env bash
# Role labels and the control-plane taint, with kubectl (admin), on a controller.
# A kubelet may label itself node.kubernetes.io/role=... (the lab's scheduling label) but not
# node-role.kubernetes.io/* (refused by NodeRestriction since 1.16): that label, which
# `kubectl get nodes` shows as ROLES, is added here. Idempotent; addons.sh runs it by timer.
set -euo pipefail

kubectl() { command kubectl --kubeconfig=/etc/kubernetes/admin.kubeconfig --server=https://127.0.0.1:6443 "$@"; }

kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.labels.node\.kubernetes\.io/role}{"\n"}{end}' |
while read -r node role; do
    case $role in
        controller)
            kubectl label node "$node" node-role.kubernetes.io/control-plane= --overwrite >/dev/null
            kubectl taint node "$node" node-role.kubernetes.io/control-plane=:NoSchedule --overwrite >/dev/null
            ;;
        worker)
            kubectl label node "$node" node-role.kubernetes.io/worker= --overwrite >/dev/null
            ;;
    esac
done
