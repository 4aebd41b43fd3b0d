# shellcheck shell=bash
# Kubeconfigs, written as plain YAML (no kubectl needed on the host). Certificates and keys
# are embedded, so a kubeconfig is one self-contained file that can be copied to its node.

b64() { openssl base64 -A -in "$1"; }

# kubeconfig_cert OUT SERVER CA_CRT USER CLIENT_CRT CLIENT_KEY
kubeconfig_cert() {
    local out=$1 server=$2 ca=$3 user=$4 crt=$5 key=$6
    update_file "$out" 0600 <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$ca")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$crt")
    client-key-data: $(b64 "$key")
contexts:
- name: $user@lab
  context:
    cluster: lab
    user: $user
current-context: $user@lab
EOF
}

# kubeconfig_token OUT SERVER CA_CRT USER TOKEN
kubeconfig_token() {
    local out=$1 server=$2 ca=$3 user=$4 token=$5
    update_file "$out" 0600 <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$ca")
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user@lab
  context:
    cluster: lab
    user: $user
current-context: $user@lab
EOF
}

# kubeconfigs_generate_all PKI_DIR OUT_DIR
#   Components on a controller talk to their own apiserver (127.0.0.1); the admin and the
#   workers go through the load balancer; nodehosts uses its own LB's haproxy, so a backup
#   LB without the VIP works too.
kubeconfigs_generate_all() {
    local pki=$1 out=$2 name
    local lb="https://$LB_VIP:6443" local_api="https://127.0.0.1:6443"
    mkdir -p "$out"
    kubeconfig_cert "$out/admin.kubeconfig" "$lb" "$pki/ca.crt" admin "$pki/admin.crt" "$pki/admin.key"
    kubeconfig_cert "$out/kube-controller-manager.kubeconfig" "$local_api" "$pki/ca.crt" \
        system:kube-controller-manager "$pki/kube-controller-manager.crt" "$pki/kube-controller-manager.key"
    kubeconfig_cert "$out/kube-scheduler.kubeconfig" "$local_api" "$pki/ca.crt" \
        system:kube-scheduler "$pki/kube-scheduler.crt" "$pki/kube-scheduler.key"
    for name in $(controller_names); do
        kubeconfig_cert "$out/kubelet-$name.kubeconfig" "$local_api" "$pki/ca.crt" \
            "system:node:$name" "$pki/kubelet-$name.crt" "$pki/kubelet-$name.key"
    done
    for name in $(lb_names); do
        kubeconfig_cert "$out/nodehosts-$name.kubeconfig" "$local_api" "$pki/ca.crt" \
            nodehosts "$pki/nodehosts-$name.crt" "$pki/nodehosts-$name.key"
    done
    # The workers' bootstrap kubeconfig: only the token. The kubelet uses it once to request
    # its client certificate, then writes its own kubeconfig.
    # shellcheck source=/dev/null
    source "$pki/bootstrap-token.env"
    kubeconfig_token "$out/bootstrap.kubeconfig" "$lb" "$pki/ca.crt" kubelet-bootstrap \
        "$BOOTSTRAP_TOKEN_ID.$BOOTSTRAP_TOKEN_SECRET"
}
