"""Metrics, logs, request ids and per-request timing, shared by every transport."""
