"""Model families. Each lives in one module; `get_family(name)` imports it on demand."""

from genlab.models.base import FAMILIES, GenerativeModel, get_family

__all__ = ["FAMILIES", "GenerativeModel", "get_family"]
