"""Errors the protocol adds to the tree in service.errors (the same handler renders them)."""

from __future__ import annotations

from service.errors import ImgclsError


class ModelNotFound(ImgclsError):
    """A request named a model or version this server does not serve."""

    status = 404
    code = "model_not_found"
