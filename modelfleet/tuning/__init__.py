"""Tuning: Model Analyzer results turned into Triton settings, replica counts and node-pool sizes.

- `record`: the tuning record file (`models/<model>.tuning/<hardware>.yaml`), read by the loader.
- `analyzer`: the Model Analyzer profile config from a spec, and its results parsed and selected (pure).
- `capacity`: replicas, GPUs, failover headroom and cost from measured throughput (pure; used by the plan).
- `run`: the process shell behind `modelfleet tune` (real Triton and Model Analyzer).
"""
