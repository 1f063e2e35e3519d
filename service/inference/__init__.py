"""The data path: preprocessing (shared with build/), the micro-batcher, postprocessing and the
Classifier that composes them."""
