"""REST access to 6MM: signing hooks and a small client (listenKey lifecycle, server time)."""

from __future__ import annotations

from sixmm.rest.auth import HmacAuth, TokenAuth
from sixmm.rest.client import RestClient, is_transient

__all__ = ["HmacAuth", "RestClient", "TokenAuth", "is_transient"]
