"""What bounds the service: the lifecycle and admission (how many images are in flight), the
decoded-pixel budget and the request-body budget."""
