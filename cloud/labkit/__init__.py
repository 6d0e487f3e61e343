"""The lab runner, run folders and plots. May import cloud.stack."""
