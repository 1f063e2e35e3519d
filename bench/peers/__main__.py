from bench.config import run_benchmark
from bench.peers import benchmark

run_benchmark(benchmark.run, benchmark.__doc__)
