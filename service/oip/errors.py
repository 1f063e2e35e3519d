"""Errors the protocol names (the same handler renders them): ModelNotFound lives in the core's
tree (service.errors), since the model repository refuses unknown versions too."""

from __future__ import annotations

from service.errors import ModelNotFound

__all__ = ["ModelNotFound"]
