"""The HTTP layer: thin FastAPI routes over the Classifier. No numpy and no onnxruntime here;
everything about images and models lives in the data plane (service.classifier)."""
