# shellcheck shell=bash
# Which secrets each machine gets. The host keeps the whole PKI (provisioning/generated/pki);
# a machine receives only its bundle: a directory laid out like its root file system.
#
#   worker-N      the cluster CA and the bootstrap kubeconfig (a token, nothing else)
#   lb-N          nodehosts' kubeconfig; the CA for haproxy's health checks
#   controller-N  what the control plane needs: the CA key (kube-controller-manager signs
#                 kubelet certificates), etcd, apiserver, front-proxy, service-account keys,
#                 the component kubeconfigs, and what the add-ons need (admin kubeconfig,
#                 bootstrap token, metrics-server's serving certificate), the key that
#                 encrypts Secrets in etcd

# copy_secret SRC DEST MODE: update_file from a file.
copy_secret() { update_file "$2" "$3" <"$1"; }

# bundle_node PKI_DIR KUBECONFIG_DIR NAME OUT_ROOT
bundle_node() {
    local pki=$1 kc=$2 name=$3 root=$4 f
    case $name in
        worker-*)
            copy_secret "$pki/ca.crt" "$root/etc/kubernetes/pki/ca.crt" 0644
            copy_secret "$kc/bootstrap.kubeconfig" "$root/var/lib/kubelet/bootstrap-kubeconfig" 0600
            ;;
        lb-*)
            copy_secret "$pki/ca.crt" "$root/etc/haproxy/kubernetes-ca.crt" 0644
            copy_secret "$kc/nodehosts-$name.kubeconfig" "$root/etc/nodehosts/kubeconfig" 0640
            ;;
        controller-*)
            for f in ca.crt front-proxy-ca.crt apiserver.crt apiserver-kubelet-client.crt \
                     apiserver-etcd-client.crt front-proxy-client.crt sa.pub metrics-server.crt; do
                copy_secret "$pki/$f" "$root/etc/kubernetes/pki/$f" 0644
            done
            for f in ca.key apiserver.key apiserver-kubelet-client.key apiserver-etcd-client.key \
                     front-proxy-client.key sa.key metrics-server.key bootstrap-token.env; do
                copy_secret "$pki/$f" "$root/etc/kubernetes/pki/$f" 0600
            done
            copy_secret "$pki/etcd-ca.crt" "$root/etc/kubernetes/pki/etcd/ca.crt" 0644
            copy_secret "$pki/etcd-$name.crt" "$root/etc/kubernetes/pki/etcd/server.crt" 0644
            copy_secret "$pki/etcd-$name.key" "$root/etc/kubernetes/pki/etcd/server.key" 0600
            for f in admin kube-controller-manager kube-scheduler; do
                copy_secret "$kc/$f.kubeconfig" "$root/etc/kubernetes/$f.kubeconfig" 0600
            done
            copy_secret "$kc/kubelet-$name.kubeconfig" "$root/var/lib/kubelet/kubeconfig" 0600
            copy_secret "$pki/encryption-config.yaml" "$root/etc/kubernetes/encryption-config.yaml" 0600
            ;;
        *) die "bundle_node: unknown machine $name" ;;
    esac
}

# secrets_generate_all OUT: the PKI, the kubeconfigs and one bundle per machine.
#   OUT/pki/  OUT/kubeconfigs/  OUT/nodes/<name>/...
secrets_generate_all() {
    local out=$1 name
    pki_generate_all "$out/pki"
    kubeconfigs_generate_all "$out/pki" "$out/kubeconfigs"
    for name in $(lb_names) $(controller_names) $(worker_names); do
        bundle_node "$out/pki" "$out/kubeconfigs" "$name" "$out/nodes/$name"
    done
}

# The mode a bundle file gets on the machine: private keys, kubeconfigs and the token are
# root's only (whatever mode the upload left them with).
bundle_mode() {
    case $1 in
        *.key|*kubeconfig*|*.env|*encryption-config*) echo 0600 ;;
        *) echo 0644 ;;
    esac
}

# install_bundle BUNDLE_DIR [ROOT]: copy a machine's bundle into place.
install_bundle() {
    local bundle=$1 root=${2:-} file rel
    [[ -d $bundle ]] || die "no secrets bundle at $bundle (run provisioning/host.sh on the host)"
    while IFS= read -r -d '' file; do
        rel=${file#"$bundle"/}
        update_file "$root/$rel" "$(bundle_mode "$rel")" <"$file"
    done < <(find "$bundle" -type f -print0)
}
