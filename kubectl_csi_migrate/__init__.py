"""kubectl csi-migrate: move StatefulSet volumes from in-tree vSphere to the vSphere CSI driver."""

__version__ = "0.1.0"
