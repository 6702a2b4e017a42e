"""A local Kubernetes control plane with a simulated GPU fleet (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, all real upstream binaries).

    python hack/localcluster up [--dir .cache/cluster]
    python hack/localcluster status | down
"""

from .cluster import Cluster, ClusterError, down, handle, status, up

__all__ = ["Cluster", "ClusterError", "down", "handle", "status", "up"]
