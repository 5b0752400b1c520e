"""The web service's ASGI app (FastAPI): the API under ``/api/v1``, the console at ``/``.

The OpenAPI document is at ``/api/v1/openapi.json``, browsable at ``/api/v1/docs``
(Swagger UI, served from the package like the console).
``/healthz`` answers while the process runs its loop.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from m2m.web.api import devices, domains, events, firmware, registry, series, session, users
from m2m.web.api.models import ErrorOut
from m2m.web.context import WebContext
from m2m.web.errors import install_error_handlers
from m2m.web.limits import BodyLimit

API = "/api/v1"
STATIC = files("m2m.web") / "static"
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 413, 422, 503)
}


def create_app(context: WebContext) -> FastAPI:
    app = FastAPI(
        title="m2m",
        summary="Devices, their settings, commands and time series, live.",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    install_error_handlers(app)
    app.add_middleware(BodyLimit, unbounded_prefixes=(f"{API}/firmware/",))
    api = APIRouter(prefix=API, responses=_ERRORS)
    for module in (session, devices, series, registry, firmware, domains, users, events):
        api.include_router(module.router)
    app.include_router(api)

    @app.get(f"{API}/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # Swagger UI from the package (vendored from npm with its licence), not a CDN:
        # the docs work where the platform has no way out to the internet.
        return get_swagger_ui_html(
            openapi_url=f"{API}/openapi.json",
            title="m2m API",
            swagger_js_url="/static/vendor/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui.css",
            swagger_favicon_url="data:,",
            swagger_ui_parameters={"validatorUrl": None},  # no call to swagger.io either
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", _Revalidated(directory=str(STATIC)), name="static")
    return app


class _Revalidated(StaticFiles):
    """Static files a browser checks again (cheaply, by ETag) before each use: after an
    upgrade, no page runs yesterday's modules."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response
