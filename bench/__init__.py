"""Benchmarks. The suite (`make bench`, ``python -m bench.run_all``) measures the service as
shipped into one report under bench/results/: the write-up's table (the engines, cold start),
the service beside its peers on one harness, overload, and a soak of valid and hostile traffic.
Each section also runs alone: ``python -m bench.<name>``. bench/loadgen/ is the one load
generator; bench/launch.py starts a server and waits until it is ready (the tests use it too).
bench/experiments/ holds the investigations behind the design's choices (engines, HTTP against
in-process, the protocol's transports, accuracy, settings, CPU profile, sparse load, JPEG
decoders), each ``python -m bench.experiments.<name>``; ``run_all --all`` adds those that
report into the suite's report.

bench/ may import torch (the engines and the Flask peer need it); the service never does."""
