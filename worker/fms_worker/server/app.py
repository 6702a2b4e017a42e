"""The HTTP application: create_app(config) wires state, middleware, error handling and routes.

Task generate serves the OpenAI routes; embed/classify mount the encoder routes.
/health is liveness (the process answers), /ready is readiness (model loaded, warm,
not draining), /metrics is Prometheus.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fms_worker import __version__
from fms_worker.config import WorkerConfig
from fms_worker.metrics import CONTENT_TYPE, ServingMetrics
from fms_worker.server.errors import APIError, error_body, error_response
from fms_worker.server.middleware import APIKeyMiddleware, BodyLimitMiddleware
from fms_worker.server.state import ServingState

log = logging.getLogger(__name__)

ENCODER_TASKS = ("embed", "classify")


def create_app(config: WorkerConfig, *, engine: Any = None,
               engine_factory: Callable[[WorkerConfig], Any] | None = None,
               metrics: ServingMetrics | None = None) -> FastAPI:
    """Build the app. `engine` (an already loaded LLMEngine) or `engine_factory` override loading from config."""
    state = ServingState(config, metrics or ServingMetrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.model.task in ENCODER_TASKS:
            loading = asyncio.create_task(_load_encoder(app, state))
        else:
            loading = asyncio.create_task(state.load(engine_factory, engine))
        app.state.loading = loading
        try:
            yield
        finally:
            loading.cancel()
            await state.stop()
            service = getattr(app.state, "encoder_service", None)
            if service is not None and hasattr(service, "stop"):
                await _maybe_await(service.stop())

    app = FastAPI(title="fms-worker", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible inference API of one FoundationModelService worker.")
    app.state.serving = state
    _install_error_handlers(app)
    _add_probe_routes(app, state)
    if config.model.task in ENCODER_TASKS:
        app.include_router(_encoder_module(config.model.task).router)
    else:
        from fms_worker.server.openai_routes import router

        app.include_router(router)
    # Outermost first: the key is checked before reading a (possibly huge) body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.server.max_body_bytes)
    if config.server.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=config.server.api_key)
    return app


def create_metrics_app(app: FastAPI) -> FastAPI:
    """A second app for server.metrics_port that serves only /metrics of `app`."""
    metrics_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    state: ServingState = app.state.serving

    @metrics_app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return metrics_app


def _add_probe_routes(app: FastAPI, state: ServingState) -> None:
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}  # liveness: the event loop answers; engine death shows on /ready

    @app.get("/ready")
    async def ready() -> JSONResponse:
        status, body = state.readiness()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI says 422; OpenAI clients expect 400 with one readable message.
        return error_response(APIError(400, validation_message(exc.errors()), param=_first_param(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), status_code=500)


def validation_message(errors) -> str:
    parts = []
    for e in list(errors)[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(errors) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _first_param(errors) -> str | None:
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if loc:
            return loc[0]
    return None


def _encoder_module(task: str):
    try:
        return importlib.import_module("fms_worker.server.encoder_routes")
    except ModuleNotFoundError as exc:
        if exc.name != "fms_worker.server.encoder_routes":
            raise
        raise RuntimeError(f"task {task!r} needs fms_worker.server.encoder_routes, which this build does not "
                           f"include; serve a generate model or install a worker with encoder support") from exc


async def _load_encoder(app: FastAPI, state: ServingState) -> None:
    try:
        module = _encoder_module(state.config.model.task)
        # The app's registry, so /metrics shows the encoder's series next to the shared ones.
        service = await asyncio.to_thread(module.build_encoder_service, state.config, state.metrics.registry)
        if hasattr(service, "start"):
            await _maybe_await(service.start())
    except Exception as exc:
        log.exception("encoder load failed")
        state.phase, state.error = "failed", f"model load failed: {exc}"
        state.on_fatal(state.error)
        return
    app.state.encoder_service = service
    state.engine = service
    state.phase = "ready"


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value
