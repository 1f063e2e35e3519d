"""The load generator: one package for every benchmark that sends HTTP load.

    outcomes.py   what a request and a step come to (Outcome, StepResult), Server-Timing parsed
    http1.py      the one hand-written HTTP/1.1 client: RawSender (keep-alive, cheap), a
                  one-shot exchange that may misbehave on purpose (soak), httpx for comparison
    loops.py      closed loop (N users) and open loop (Poisson arrivals timed from their
                  scheduled send), and the generator a benchmark asks for (C or Python)
    native.py     the C generator (loadgen.c), compiled on first use, driven as a child process
    __main__.py   ``python -m bench.loadgen --url ... --concurrency 1 4 16 --rate 50``

The client shares the server's 2 cores here, so every step reports its own CPU per request.
"""
