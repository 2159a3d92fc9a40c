# Sourced by every script here: locations, the Kubernetes version and the fixed single-node layout.
KY_K8S_STATE=$(realpath -m "${KY_K8S_STATE:-/tmp/kernelyard-k8s}")
KY_K8S_BIN=$(realpath -m "${KY_K8S_BIN:-$KY_K8S_STATE/bin}")
KY_K8S_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kernelyard-k8s
K8S_VERSION=v1.34.4   # 1.35+ refuses cgroup v1 by default and is the last to support containerd 1.x (README)
S=$KY_K8S_STATE B=$KY_K8S_BIN
NODE=kernelyard NODE_IP=10.244.0.1 POD_CIDR=10.244.0.0/24 BRIDGE=kycni0   # also in templates/
CTR="ctr --address $S/run/containerd.sock -n k8s.io"
COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
# host state that start.sh records and restore-host.sh puts back
SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
         kernel.keys.root_maxbytes net.ipv4.ip_forward"
HOST_DIRS="/run/containerd /var/lib/cni /var/lib/kubelet /var/log/containers"   # paths kubelet/containerd hard-code
export KUBECONFIG=$S/pki/admin.kubeconfig
T0=$EPOCHREALTIME
ts() { printf '%6.1fs %s\n' "$(awk "BEGIN {print $EPOCHREALTIME - $T0}")" "$*"; }
# Go's module and build caches under ~/.cache, so CI can keep them (a cold build is ~11 min)
export GOMODCACHE=${GOMODCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/go-mod}
export GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/go-build}
HELM_VERSION=v4.3.2
