"""Kubernetes access: kubeconfig resolution (and admin -> user cluster), watches, the lock."""
