"""Federated learning on the device: the numpy MLP, the Flower ClientApps and starting a SuperNode. May import edge.private."""
