"""The test environment: a real Kubernetes control plane, kwok nodes and the vCenter Simulator.

Everything is built from source through the Go module proxy (`build`), started on loopback
(`up`), and described by `env`. It is test tooling, not part of the shipped package.
"""
