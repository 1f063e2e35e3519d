"""The uvicorn process: the draining server, the HTTP protocol with the connection clocks and
the early admission refusal, and the socket filter that stops new handshakes on drain."""
