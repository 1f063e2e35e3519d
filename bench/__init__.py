"""Benchmarks: engines in-process, accuracy of the quantized variants, the service over HTTP,
peer services on the same harness, and cold start. Each is ``python -m bench.<name>``;
``python -m bench.run_all [--quick]`` runs them all into one report under bench/results/.

bench/ may import torch (the engines and the Flask peer need it); the service never does."""
