# shellcheck shell=bash
# The control plane as static pods: the kubelet of each controller runs every manifest in
# /etc/kubernetes/manifests. When one does not start, see provisioning/TROUBLESHOOTING.md.

# yaml_args INDENT ARG...: one "- arg" line per argument.
yaml_args() {
    local indent=$1 arg; shift
    for arg in "$@"; do printf '%*s- %s\n' "$indent" '' "$arg"; done
}

# static_pod NAME IMAGE PROBE_PORT PROBE_PATH PROBE_SCHEME VOLUMES_YAML MOUNTS_YAML ARGS...
static_pod() {
    local name=$1 image=$2 port=$3 path=$4 scheme=$5 volumes=$6 mounts=$7; shift 7
    cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: kube-system
  labels:
    component: $name
    tier: control-plane
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  securityContext:
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: $name
    image: $image
    command:
$(yaml_args 4 "$@")
    resources:
      requests:
        cpu: 100m
    startupProbe:
      httpGet:
        host: 127.0.0.1
        port: $port
        path: $path
        scheme: $scheme
      periodSeconds: 10
      timeoutSeconds: 15
      failureThreshold: 24
    livenessProbe:
      httpGet:
        host: 127.0.0.1
        port: $port
        path: $path
        scheme: $scheme
      periodSeconds: 10
      timeoutSeconds: 15
      failureThreshold: 8
    volumeMounts:
$mounts
  volumes:
$volumes
EOF
}

# volume_yaml NAME PATH TYPE and mount_yaml NAME PATH READONLY: one hostPath volume, one mount.
volume_yaml() {
    printf '  - name: %s\n    hostPath:\n      path: %s\n      type: %s\n' "$1" "$2" "$3"
}
mount_yaml() {
    printf '    - name: %s\n      mountPath: %s\n      readOnly: %s\n' "$1" "$2" "$3"
}

# render_static_pods ROOT NAME
render_static_pods() {
    local root=$1 name=$2 ip dir
    ip=$(node_ip "$name")
    dir=$root/etc/kubernetes/manifests
    local pki=/etc/kubernetes/pki k8s_image="registry.k8s.io"

    update_file "$dir/etcd.yaml" 0600 < <(static_pod etcd "$ETCD_IMAGE" 2381 "/health?serializable=true" HTTP \
        "$(volume_yaml etcd-data /var/lib/etcd DirectoryOrCreate; volume_yaml etcd-certs $pki/etcd Directory)" \
        "$(mount_yaml etcd-data /var/lib/etcd false; mount_yaml etcd-certs $pki/etcd true)" \
        etcd \
        "--name=$name" \
        --data-dir=/var/lib/etcd \
        "--listen-client-urls=https://$ip:2379,https://127.0.0.1:2379" \
        "--advertise-client-urls=https://$ip:2379" \
        "--listen-peer-urls=https://$ip:2380" \
        "--initial-advertise-peer-urls=https://$ip:2380" \
        "--initial-cluster=$(etcd_initial_cluster)" \
        --initial-cluster-state=new \
        --initial-cluster-token=kubernetes-lab \
        --listen-metrics-urls=http://127.0.0.1:2381 \
        --client-cert-auth=true \
        --trusted-ca-file=$pki/etcd/ca.crt \
        --cert-file=$pki/etcd/server.crt \
        --key-file=$pki/etcd/server.key \
        --peer-client-cert-auth=true \
        --peer-trusted-ca-file=$pki/etcd/ca.crt \
        --peer-cert-file=$pki/etcd/server.crt \
        --peer-key-file=$pki/etcd/server.key
    )

    local encryption=/etc/kubernetes/encryption-config.yaml   # Secrets at rest (pki.sh)
    update_file "$dir/kube-apiserver.yaml" 0600 < <(static_pod kube-apiserver "$k8s_image/kube-apiserver:$KUBERNETES_VERSION" 6443 /livez HTTPS \
        "$(volume_yaml k8s-certs $pki Directory; volume_yaml encryption-config $encryption File)" \
        "$(mount_yaml k8s-certs $pki true; mount_yaml encryption-config $encryption true)" \
        kube-apiserver \
        "--advertise-address=$ip" \
        --secure-port=6443 \
        --allow-privileged=true \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NodeRestriction \
        --enable-bootstrap-token-auth=true \
        --client-ca-file=$pki/ca.crt \
        --tls-cert-file=$pki/apiserver.crt \
        --tls-private-key-file=$pki/apiserver.key \
        "--etcd-servers=$(etcd_servers)" \
        --etcd-cafile=$pki/etcd/ca.crt \
        --etcd-certfile=$pki/apiserver-etcd-client.crt \
        --etcd-keyfile=$pki/apiserver-etcd-client.key \
        --kubelet-client-certificate=$pki/apiserver-kubelet-client.crt \
        --kubelet-client-key=$pki/apiserver-kubelet-client.key \
        --kubelet-certificate-authority=$pki/ca.crt \
        --kubelet-preferred-address-types=Hostname,InternalDNS,InternalIP \
        --proxy-client-cert-file=$pki/front-proxy-client.crt \
        --proxy-client-key-file=$pki/front-proxy-client.key \
        --requestheader-client-ca-file=$pki/front-proxy-ca.crt \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User \
        --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        "--service-account-issuer=https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
        --service-account-key-file=$pki/sa.pub \
        --service-account-signing-key-file=$pki/sa.key \
        "--service-cluster-ip-range=$SERVICE_CIDR" \
        "--encryption-provider-config=$encryption"
    )

    update_file "$dir/kube-controller-manager.yaml" 0600 < <(static_pod kube-controller-manager "$k8s_image/kube-controller-manager:$KUBERNETES_VERSION" \
        10257 /healthz HTTPS \
        "$(volume_yaml k8s-certs $pki Directory; volume_yaml kubeconfig /etc/kubernetes/kube-controller-manager.kubeconfig File)" \
        "$(mount_yaml k8s-certs $pki true; mount_yaml kubeconfig /etc/kubernetes/kube-controller-manager.kubeconfig true)" \
        kube-controller-manager \
        --bind-address=127.0.0.1 \
        --kubeconfig=/etc/kubernetes/kube-controller-manager.kubeconfig \
        --authentication-kubeconfig=/etc/kubernetes/kube-controller-manager.kubeconfig \
        --authorization-kubeconfig=/etc/kubernetes/kube-controller-manager.kubeconfig \
        --leader-elect=true \
        --use-service-account-credentials=true \
        "--controllers=*,bootstrapsigner,tokencleaner" \
        --allocate-node-cidrs=true \
        "--cluster-cidr=$POD_CIDR" \
        --node-cidr-mask-size=24 \
        "--service-cluster-ip-range=$SERVICE_CIDR" \
        --cluster-name=kubernetes \
        --cluster-signing-cert-file=$pki/ca.crt \
        --cluster-signing-key-file=$pki/ca.key \
        --client-ca-file=$pki/ca.crt \
        --requestheader-client-ca-file=$pki/front-proxy-ca.crt \
        --root-ca-file=$pki/ca.crt \
        --service-account-private-key-file=$pki/sa.key
    )

    update_file "$dir/kube-scheduler.yaml" 0600 < <(static_pod kube-scheduler "$k8s_image/kube-scheduler:$KUBERNETES_VERSION" \
        10259 /healthz HTTPS \
        "$(volume_yaml kubeconfig /etc/kubernetes/kube-scheduler.kubeconfig File)" \
        "$(mount_yaml kubeconfig /etc/kubernetes/kube-scheduler.kubeconfig true)" \
        kube-scheduler \
        --bind-address=127.0.0.1 \
        --kubeconfig=/etc/kubernetes/kube-scheduler.kubeconfig \
        --authentication-kubeconfig=/etc/kubernetes/kube-scheduler.kubeconfig \
        --authorization-kubeconfig=/etc/kubernetes/kube-scheduler.kubeconfig \
        --leader-elect=true
    )
}
