# shellcheck shell=bash
# The lab's PKI with plain openssl: three CAs, one certificate per component, the
# service-account key pair and the bootstrap token. Everything is created once and kept:
# re-running re-issues a certificate only when what it should contain changed (a new
# controller, another SAN), so a re-provisioned node keeps working with the others.
#
# Keys are ECDSA P-256 (small, fast, accepted by every component).
#
#   ca              signs every Kubernetes certificate; kube-controller-manager signs the
#                   kubelets' client and serving certificates with it (--cluster-signing-*)
#   front-proxy-ca  signs the front-proxy client the apiserver uses towards aggregated APIs
#                   (metrics-server); a separate CA so it cannot be used as a user certificate
#   etcd-ca         etcd's server/peer certificates and its only client, the apiserver

# pki_key FILE: an EC private key, created once.
pki_key() {
    local key=$1
    [[ -s $key ]] && return 0
    (umask 077; openssl ecparam -name prime256v1 -genkey -noout -out "$key")
}

# pki_ca DIR NAME CN: a self-signed CA, valid 10 years, created once.
pki_ca() {
    local dir=$1 name=$2 cn=$3 ext
    [[ -s $dir/$name.crt && -s $dir/$name.key ]] && return 0
    pki_key "$dir/$name.key"
    ext=$(mktemp)
    cat >"$ext" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $cn
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
EOF
    openssl req -x509 -new -sha256 -days 3650 -key "$dir/$name.key" -config "$ext" \
        -extensions v3_ca -set_serial "0x$(openssl rand -hex 16)" -out "$dir/$name.crt"
    rm -f "$ext"
}

# pki_cert DIR NAME CA KIND SUBJECT [SAN...]
#   KIND: client (clientAuth), server (serverAuth), peer (both, for etcd)
#   SUBJECT: openssl form, e.g. /CN=system:node:controller-0/O=system:nodes
#   SAN: DNS:name or IP:address
# Issues DIR/NAME.crt (1 year) signed by DIR/CA.crt, with DIR/NAME.key. NAME.spec records what
# was asked for; the certificate is re-issued only when that changes.
pki_cert() {
    local dir=$1 name=$2 ca=$3 kind=$4 subject=$5; shift 5
    local sans=("$@") eku spec ext csr
    case $kind in
        client) eku=clientAuth ;;
        server) eku=serverAuth ;;
        peer) eku=serverAuth,clientAuth ;;
        *) die "pki_cert: unknown kind $kind" ;;
    esac
    spec="ca=$(openssl x509 -noout -fingerprint -sha256 -in "$dir/$ca.crt") kind=$kind subject=$subject sans=$(join_by , "${sans[@]}")"
    if [[ -s $dir/$name.crt && -s $dir/$name.key && -f $dir/$name.spec && $(cat "$dir/$name.spec") == "$spec" ]]; then
        return 0
    fi
    pki_key "$dir/$name.key"
    ext=$(mktemp)
    csr=$(mktemp)
    {
        echo "[v3]"
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
        if (( ${#sans[@]} )); then echo "subjectAltName = $(join_by , "${sans[@]}")"; fi
    } >"$ext"
    openssl req -new -sha256 -key "$dir/$name.key" -subj "$subject" -out "$csr"
    openssl x509 -req -sha256 -days 365 -in "$csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" -extensions v3 \
        -out "$dir/$name.crt" 2>/dev/null
    rm -f "$ext" "$csr"
    echo "$spec" >"$dir/$name.spec"
}

# The service-account token signing key pair (apiserver signs, everyone verifies).
pki_service_account_keys() {
    local dir=$1
    pki_key "$dir/sa.key"
    [[ -s $dir/sa.pub ]] || openssl ec -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
}

# A bootstrap token (id.secret) for the workers' TLS bootstrapping, created once.
pki_bootstrap_token() {
    local dir=$1
    [[ -s $dir/bootstrap-token.env ]] && return 0
    local id secret
    id=$(openssl rand -hex 3)          # [a-z0-9]{6}
    secret=$(openssl rand -hex 8)      # [a-z0-9]{16}
    (umask 077; printf 'BOOTSTRAP_TOKEN_ID=%s\nBOOTSTRAP_TOKEN_SECRET=%s\n' "$id" "$secret" >"$dir/bootstrap-token.env")
}

# pki_encryption_config DIR: how the apiservers encrypt Secrets in etcd (encryption at rest,
# as the original guide does), created once: every apiserver needs the same key. secretbox
# (XSalsa20-Poly1305) rather than the guide's aescbc, which Kubernetes' documentation rates
# weak; identity last, so Secrets written before encryption was enabled stay readable.
pki_encryption_config() {
    local dir=$1
    [[ -s $dir/encryption-config.yaml ]] && return 0
    (umask 077; cat >"$dir/encryption-config.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources:
  - secrets
  providers:
  - secretbox:
      keys:
      - name: key1
        secret: $(openssl rand -base64 32)
  - identity: {}
EOF
    )
}

# The SANs of the apiserver's serving certificate: every name and address clients use.
apiserver_sans() {
    local name sans=(
        DNS:kubernetes DNS:kubernetes.default DNS:kubernetes.default.svc
        "DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
        IP:"$API_SERVICE_IP" IP:"$LB_VIP" IP:127.0.0.1
    )
    for name in $(lb_names); do
        sans+=("DNS:$name" "DNS:$name.$NODE_DOMAIN")
        [[ $(node_ip "$name") == "$LB_VIP" ]] || sans+=("IP:$(node_ip "$name")")
    done
    for name in $(controller_names); do
        sans+=("DNS:$name" "DNS:$name.$NODE_DOMAIN" "IP:$(node_ip "$name")")
    done
    echo "${sans[@]}"
}

# pki_generate_all DIR: the whole PKI for the topology in cluster.env.
pki_generate_all() {
    local dir=$1 name ip
    mkdir -p "$dir"
    pki_ca "$dir" ca kubernetes-ca
    pki_ca "$dir" front-proxy-ca front-proxy-ca
    pki_ca "$dir" etcd-ca etcd-ca

    # shellcheck disable=SC2046  # one SAN per word
    pki_cert "$dir" apiserver ca server /CN=kube-apiserver $(apiserver_sans)
    pki_cert "$dir" apiserver-kubelet-client ca client /CN=kube-apiserver-kubelet-client
    pki_cert "$dir" apiserver-etcd-client etcd-ca client /CN=kube-apiserver-etcd-client
    pki_cert "$dir" front-proxy-client front-proxy-ca client /CN=front-proxy-client
    pki_service_account_keys "$dir"

    # system:masters bypasses RBAC: the admin of a lab, and the identity that applies the
    # add-ons before any RBAC binding exists.
    pki_cert "$dir" admin ca client /CN=admin/O=system:masters
    pki_cert "$dir" kube-controller-manager ca client /CN=system:kube-controller-manager
    pki_cert "$dir" kube-scheduler ca client /CN=system:kube-scheduler

    for name in $(controller_names); do
        ip=$(node_ip "$name")
        pki_cert "$dir" "etcd-$name" etcd-ca peer "/CN=$name" \
            "DNS:$name" DNS:localhost "IP:$ip" IP:127.0.0.1
        # Controllers' kubelets get a client certificate from here (the Node authorizer
        # identity); workers get theirs by TLS bootstrapping. Serving certificates of all
        # kubelets come from CSRs (serverTLSBootstrap) that nodehosts approves.
        pki_cert "$dir" "kubelet-$name" ca client "/CN=system:node:$name/O=system:nodes"
    done

    # nodehosts on each LB: the identity deploy/rbac*.yaml and our add-ons bind (User nodehosts).
    for name in $(lb_names); do
        pki_cert "$dir" "nodehosts-$name" ca client /CN=nodehosts
    done

    # metrics-server's serving certificate, so the aggregator verifies it (caBundle).
    pki_cert "$dir" metrics-server ca server /CN=metrics-server \
        DNS:metrics-server DNS:metrics-server.kube-system DNS:metrics-server.kube-system.svc \
        "DNS:metrics-server.kube-system.svc.$CLUSTER_DOMAIN"

    pki_bootstrap_token "$dir"
    pki_encryption_config "$dir"
}
