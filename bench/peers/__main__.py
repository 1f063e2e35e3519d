from bench import http
from bench.config import run_benchmark

run_benchmark(http.run_peers, "Peers on the same harness")
