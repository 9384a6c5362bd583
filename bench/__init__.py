"""The benchmark suite (issue 7): the whole system as in production, measured next to its
alternatives and this machine's ceilings in one run. `make bench` writes bench/RESULTS.md,
bench/results.json and bench/plots/; `make bench-smoke` runs every scenario at a tiny size."""
