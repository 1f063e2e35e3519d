"""The HTTP transport: REST v1 and the Open Inference Protocol's REST routes, probes, metrics,
the upload page, the API docs, and the middleware every HTTP request goes through."""
