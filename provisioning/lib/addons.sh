# shellcheck shell=bash
# The cluster add-ons, applied once from a controller by provisioning/scripts/addons.sh.
# render_addons DIR PKI_DIR writes one manifest per concern, applied in file-name order.
# PKI_DIR holds ca.crt, metrics-server.{crt,key} and bootstrap-token.env. Calico is not
# rendered here: it is upstream's manifest, patched by render_calico (calico.sh).

render_addons() {
    local dir=$1 pki=$2
    mkdir -p "$dir"
    addon_bootstrap "$dir/00-bootstrap-token.yaml" "$pki"
    addon_node_rbac "$dir/01-node-rbac.yaml"
    addon_nodehosts_rbac "$dir/02-nodehosts-rbac.yaml"
    addon_kube_proxy "$dir/10-kube-proxy.yaml" "$pki"
    # 20-calico.yaml: upstream's manifest, patched (calico.sh; scripts/addons.sh, render.sh)
    addon_coredns "$dir/30-coredns.yaml"
    addon_metrics_server "$dir/40-metrics-server.yaml" "$pki"
}

# The bootstrap token as a Secret: workers authenticate with it as
# system:bootstrap:<id>, group system:bootstrappers:workers (+ system:bootstrappers).
# It expires BOOTSTRAP_TOKEN_TTL_HOURS after it is applied (kube-controller-manager's
# tokencleaner then deletes it); scripts/bootstrap-token.sh mints a fresh one for new workers.
addon_bootstrap() {
    local out=$1 pki=$2
    # shellcheck source=/dev/null
    source "$pki/bootstrap-token.env"
    update_file "$out" 0600 < <(bootstrap_token_secret "$BOOTSTRAP_TOKEN_ID" \
        "$BOOTSTRAP_TOKEN_SECRET" "$(bootstrap_token_expiration)")
}

# The expiry of a token applied now: RFC 3339, UTC.
bootstrap_token_expiration() { date -u -d "+$BOOTSTRAP_TOKEN_TTL_HOURS hours" +%Y-%m-%dT%H:%M:%SZ; }

# bootstrap_token_secret ID SECRET EXPIRATION: the Secret on stdout.
bootstrap_token_secret() {
    local id=$1 secret=$2 expiration=$3
    cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-$id
  namespace: kube-system
type: bootstrap.kubernetes.io/token
stringData:
  description: "Workers join the lab with this token (provisioning/scripts/worker.sh)."
  token-id: "$id"
  token-secret: "$secret"
  expiration: "$expiration"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: system:bootstrappers:workers
EOF
}

# TLS bootstrapping: bootstrappers may create CSRs, which kube-controller-manager approves for
# client certificates (new ones, and renewals by the nodes themselves). Serving certificates
# are NOT auto-approved by Kubernetes: nodehosts checks and approves them (02-nodehosts-rbac).
# And the apiserver may reach the kubelets (logs, exec, metrics) with its kubelet client cert.
addon_node_rbac() {
    update_file "$1" 0644 <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: lab:bootstrappers-create-csrs
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:node-bootstrapper
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:bootstrappers
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: lab:bootstrappers-auto-approve-client-csrs
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:certificates.k8s.io:certificatesigningrequests:nodeclient
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:bootstrappers
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: lab:nodes-auto-approve-client-renewals
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:certificates.k8s.io:certificatesigningrequests:selfnodeclient
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:nodes
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: lab:apiserver-to-kubelet
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: kube-apiserver-kubelet-client
EOF
}

# nodehosts (User "nodehosts", the CN of its client certificate): read Nodes; read CSRs and
# approve kubelet serving certificates, nothing else (no create: an identity that can both
# request and approve could mint itself any certificate). Same rules as deploy/rbac-csr.yaml.
addon_nodehosts_rbac() {
    update_file "$1" 0644 <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: nodehosts:kubelet-serving-approver
  labels:
    app.kubernetes.io/name: nodehosts
rules:
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests/approval"]
  verbs: ["update"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["signers"]
  resourceNames: ["kubernetes.io/kubelet-serving"]
  verbs: ["approve"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: nodehosts:kubelet-serving-approver
  labels:
    app.kubernetes.io/name: nodehosts
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: nodehosts:kubelet-serving-approver
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: nodehosts
EOF
}

# kube-proxy as a DaemonSet. It talks to the apiserver through the LB, not the service IP
# (it is what makes service IPs work), with its service account token.
# KUBE_PROXY_CONNTRACK_MAX_PER_CORE (cluster.env), when set, becomes conntrack.maxPerCore.
addon_kube_proxy() {
    local out=$1 conntrack=""
    if [[ -n ${KUBE_PROXY_CONNTRACK_MAX_PER_CORE:-} ]]; then
        [[ $KUBE_PROXY_CONNTRACK_MAX_PER_CORE =~ ^[0-9]+$ ]] \
            || die "KUBE_PROXY_CONNTRACK_MAX_PER_CORE must be a number or empty, not '$KUBE_PROXY_CONNTRACK_MAX_PER_CORE'"
        conntrack=$'\n'"    conntrack:"$'\n'"      maxPerCore: $KUBE_PROXY_CONNTRACK_MAX_PER_CORE"
    fi
    update_file "$out" 0644 <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-proxy
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: lab:kube-proxy
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:node-proxier
subjects:
- kind: ServiceAccount
  name: kube-proxy
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-proxy
  namespace: kube-system
data:
  config.conf: |
    apiVersion: kubeproxy.config.k8s.io/v1alpha1
    kind: KubeProxyConfiguration
    clientConnection:
      kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
    clusterCIDR: $POD_CIDR
    mode: iptables$conntrack
  kubeconfig.conf: |
    apiVersion: v1
    kind: Config
    clusters:
    - name: lab
      cluster:
        server: https://$LB_VIP:6443
        certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    users:
    - name: kube-proxy
      user:
        tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
    contexts:
    - name: kube-proxy@lab
      context:
        cluster: lab
        user: kube-proxy
    current-context: kube-proxy@lab
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-proxy
  namespace: kube-system
  labels:
    k8s-app: kube-proxy
spec:
  selector:
    matchLabels:
      k8s-app: kube-proxy
  updateStrategy:
    type: RollingUpdate
  template:
    metadata:
      labels:
        k8s-app: kube-proxy
    spec:
      serviceAccountName: kube-proxy
      priorityClassName: system-node-critical
      hostNetwork: true
      nodeSelector:
        kubernetes.io/os: linux
      tolerations:
      - operator: Exists
      containers:
      - name: kube-proxy
        image: registry.k8s.io/kube-proxy:$KUBERNETES_VERSION
        command:
        - /usr/local/bin/kube-proxy
        - --config=/var/lib/kube-proxy/config.conf
        - --hostname-override=\$(NODE_NAME)
        env:
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        securityContext:
          privileged: true
        volumeMounts:
        - name: kube-proxy
          mountPath: /var/lib/kube-proxy
        - name: xtables-lock
          mountPath: /run/xtables.lock
        - name: lib-modules
          mountPath: /lib/modules
          readOnly: true
      volumes:
      - name: kube-proxy
        configMap:
          name: kube-proxy
      - name: xtables-lock
        hostPath:
          path: /run/xtables.lock
          type: FileOrCreate
      - name: lib-modules
        hostPath:
          path: /lib/modules
EOF
}

# The in-cluster DNS at CLUSTER_DNS_IP: service names from the API, everything else
# (node names included) forwarded to the node's resolver, the LB.
addon_coredns() {
    update_file "$1" 0644 <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: ["endpoints", "services", "pods", "namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        prometheus :9153
        # The node's /etc/resolv.conf: the LB ($LB_VIP), which knows the node names.
        forward . /etc/resolv.conf
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 2
  selector:
    matchLabels:
      k8s-app: kube-dns
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      nodeSelector:
        kubernetes.io/os: linux
      tolerations:
      - key: CriticalAddonsOnly
        operator: Exists
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  k8s-app: kube-dns
      containers:
      - name: coredns
        image: $CLUSTER_COREDNS_IMAGE
        args: ["-conf", "/etc/coredns/Corefile"]
        resources:
          limits:
            memory: 170Mi
          requests:
            cpu: 100m
            memory: 70Mi
        ports:
        - name: dns
          containerPort: 53
          protocol: UDP
        - name: dns-tcp
          containerPort: 53
          protocol: TCP
        - name: metrics
          containerPort: 9153
          protocol: TCP
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            add: ["NET_BIND_SERVICE"]
            drop: ["ALL"]
        livenessProbe:
          httpGet:
            path: /health
            port: 8080
          initialDelaySeconds: 60
          timeoutSeconds: 5
          failureThreshold: 5
        readinessProbe:
          httpGet:
            path: /ready
            port: 8181
        volumeMounts:
        - name: config
          mountPath: /etc/coredns
          readOnly: true
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/name: CoreDNS
spec:
  selector:
    k8s-app: kube-dns
  clusterIP: $CLUSTER_DNS_IP
  ports:
  - name: dns
    port: 53
    protocol: UDP
  - name: dns-tcp
    port: 53
    protocol: TCP
  - name: metrics
    port: 9153
    protocol: TCP
EOF
}

# metrics-server, verifying the kubelets' serving certificates against the cluster CA (no
# --kubelet-insecure-tls): it works once nodehosts has approved those certificates. It
# scrapes each kubelet by its Hostname address first, which nodehosts makes resolvable.
# Its own serving certificate comes from the lab's CA, so the aggregator verifies it too.
addon_metrics_server() {
    local out=$1 pki=$2
    update_file "$out" 0600 <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: metrics-server
  namespace: kube-system
  labels:
    k8s-app: metrics-server
---
apiVersion: v1
kind: Secret
metadata:
  name: metrics-server-tls
  namespace: kube-system
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$pki/metrics-server.crt")
  tls.key: $(b64 "$pki/metrics-server.key")
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    k8s-app: metrics-server
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- apiGroups: ["metrics.k8s.io"]
  resources: ["pods", "nodes"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
  labels:
    k8s-app: metrics-server
rules:
- apiGroups: [""]
  resources: ["nodes/metrics"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods", "nodes"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: metrics-server-auth-reader
  namespace: kube-system
  labels:
    k8s-app: metrics-server
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: extension-apiserver-authentication-reader
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
  labels:
    k8s-app: metrics-server
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:metrics-server
  labels:
    k8s-app: metrics-server
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:metrics-server
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels:
    k8s-app: metrics-server
spec:
  selector:
    k8s-app: metrics-server
  ports:
  - name: https
    port: 443
    protocol: TCP
    targetPort: https
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: metrics-server
  namespace: kube-system
  labels:
    k8s-app: metrics-server
spec:
  selector:
    matchLabels:
      k8s-app: metrics-server
  template:
    metadata:
      labels:
        k8s-app: metrics-server
    spec:
      serviceAccountName: metrics-server
      priorityClassName: system-cluster-critical
      nodeSelector:
        kubernetes.io/os: linux
      containers:
      - name: metrics-server
        image: registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION
        args:
        - --secure-port=10250
        - --tls-cert-file=/etc/metrics-server/tls.crt
        - --tls-private-key-file=/etc/metrics-server/tls.key
        - --kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt
        - --kubelet-preferred-address-types=Hostname,InternalIP
        - --kubelet-use-node-status-port
        - --metric-resolution=15s
        ports:
        - name: https
          containerPort: 10250
          protocol: TCP
        readinessProbe:
          httpGet:
            path: /readyz
            port: https
            scheme: HTTPS
          initialDelaySeconds: 20
          periodSeconds: 10
        livenessProbe:
          httpGet:
            path: /livez
            port: https
            scheme: HTTPS
          periodSeconds: 10
        resources:
          requests:
            cpu: 100m
            memory: 200Mi
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          runAsUser: 1000
          capabilities:
            drop: ["ALL"]
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
        - name: tls
          mountPath: /etc/metrics-server
          readOnly: true
      volumes:
      - name: tls
        secret:
          secretName: metrics-server-tls
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
  labels:
    k8s-app: metrics-server
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service:
    name: metrics-server
    namespace: kube-system
  caBundle: $(b64 "$pki/ca.crt")
EOF
}

# render_label_nodes_timer ROOT: label-nodes.sh every 30 s, for nodes that join later. It runs
# the copy node.sh keeps in LAB_INSTALL_DIR (the upload in /tmp/lab is gone after a reboot).
render_label_nodes_timer() {
    local root=$1
    update_file "$root/etc/systemd/system/lab-label-nodes.service" 0644 <<EOF
[Unit]
Description=Kubernetes lab: role labels and the control-plane taint (kubectl)
[Service]
Type=oneshot
ExecStart=/bin/bash $LAB_INSTALL_DIR/scripts/label-nodes.sh
EOF
    update_file "$root/etc/systemd/system/lab-label-nodes.timer" 0644 <<'EOF'
[Unit]
Description=Kubernetes lab: label nodes as they join
[Timer]
OnActiveSec=30s
OnUnitActiveSec=30s
[Install]
WantedBy=timers.target
EOF
}
