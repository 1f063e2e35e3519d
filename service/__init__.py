"""imgcls: CPU image classification over REST. The service never imports torch."""

__version__ = "0.1.0"
