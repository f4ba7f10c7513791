"""Triton on a machine: the real server and perf_analyzer (runtime), and config.pbtxt rendering (config)."""
