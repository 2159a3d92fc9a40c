"""``/api/swagger.yaml`` and ``/api/swagger.json``: the OpenAPI spec of this API."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any

import yaml
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .._version import __version__
from .base import GatewayHandlerMixin


@lru_cache(maxsize=1)
def openapi_spec() -> dict[str, Any]:
    """The spec, with the running version filled in."""
    text = files("kernelyard.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    spec: dict[str, Any] = yaml.safe_load(text)
    spec["info"]["version"] = __version__
    return spec


class SpecHandler(GatewayHandlerMixin, APIHandler):
    """Serves the spec as YAML or JSON."""

    @web.authenticated
    async def get(self, fmt: str) -> None:
        spec = openapi_spec()
        if fmt == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(spec))
        else:
            self.set_header("Content-Type", "text/x-yaml")
            self.finish(yaml.safe_dump(spec, sort_keys=False))
