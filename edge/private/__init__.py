"""Privacy on the device: a DP-SGD privacy ledger and the CKKS key holder. Imports nothing else of the kit."""
