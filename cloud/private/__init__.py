"""Private ML on the cloud: DP-SGD with Opacus, compute on CKKS ciphertexts, membership inference. May import cloud.ml and edge."""
