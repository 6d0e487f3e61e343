"""Federated learning on the cloud: Flower ServerApps, strategies, the round journal and running a federation on SuperNodes. May import cloud.ml, cloud.stack and edge."""
