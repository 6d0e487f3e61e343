"""The benchmarks behind `make bench`: nothing in the services imports them. May import everything else."""
