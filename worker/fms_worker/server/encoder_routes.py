"""HTTP routes of the embed/classify tasks: POST /v1/embeddings (OpenAI-compatible) and POST /v1/classify.

The app builds the service with build_encoder_service(config) and keeps it in
app.state.encoder_service; these routes only parse, call it, and format.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from fms_worker.config import WorkerConfig
from fms_worker.encoders.service import EncoderService
from fms_worker.encoders.types import Classifications, EncoderBusy, EncoderRequestError, EncoderTimeout
from fms_worker.metrics.encoder_metrics import EncoderMetrics
from fms_worker.server.errors import APIError

router = APIRouter()

TextInput = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
_INPUT_HELP = "a string, a list of strings, a list of token ids or a list of token-id lists"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    truncate: bool = Field(default=False, description="Cut inputs longer than the model allows instead of a 400.")


class EmbeddingRequest(_Body):
    input: TextInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: str | None = None


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: StrictStr = Field(description="Base64 image bytes, optionally as a data: URL.")


class ClassifyRequest(_Body):
    input: TextInput | ImageInput | list[ImageInput]
    top_k: StrictInt | None = Field(default=None, ge=1, description="Labels per input, best first; default 5.")


def build_encoder_service(config: WorkerConfig, registry: CollectorRegistry | None = None) -> EncoderService:
    """Load the model named by config and wire its metrics into `registry` (the app's, so /metrics shows them)."""
    return EncoderService.from_config(config, observer=EncoderMetrics(registry))


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> JSONResponse:
    service = _service(request)
    body = _parse(EmbeddingRequest, await _json(request))
    _check_model(service, body.model)
    inputs = _as_list(body.input)
    if inputs and isinstance(inputs[0], ImageInput):
        raise APIError(400, f"input must be {_INPUT_HELP}", param="input")
    result = await _call(service, service.embed(inputs, truncate=body.truncate, dimensions=body.dimensions))
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(result.vectors)]
    return JSONResponse({"object": "list", "data": data, "model": service.served_name,
                         "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}})


@router.post("/v1/classify")
async def classify(request: Request) -> JSONResponse:
    service = _service(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        model, images, top_k = await _multipart(request)
        _check_model(service, model)
        result = await _call(service, service.classify_images(images, top_k=top_k))
        return _classification_response(service, result)
    body = _parse(ClassifyRequest, await _json(request))
    _check_model(service, body.model)
    inputs = _as_list(body.input)
    if inputs and isinstance(inputs[0], ImageInput):
        images = [_b64(img.image, f"input[{i}].image") for i, img in enumerate(inputs)]
        result = await _call(service, service.classify_images(images, top_k=body.top_k))
    else:
        result = await _call(service, service.classify_texts(inputs, truncate=body.truncate, top_k=body.top_k))
    return _classification_response(service, result)


# ---- helpers ---------------------------------------------------------------------------------------


def _service(request: Request) -> EncoderService:
    serving = getattr(request.app.state, "serving", None)
    if serving is not None and getattr(serving, "phase", "ready") == "draining":
        raise APIError(503, "the worker is shutting down; retry on another replica", retry_after=1)
    service = getattr(request.app.state, "encoder_service", None)
    if service is None:
        raise APIError(503, "the model is still loading; retry when /ready answers 200", retry_after=2)
    return service


async def _json(request: Request):
    try:
        return await request.json()
    except ValueError:
        raise APIError(400, "request body is not valid JSON") from None


def _parse(model: type[BaseModel], data) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"]]
        if loc and loc[0] == "input":
            raise APIError(400, f"input must be {_INPUT_HELP}"
                           + (" or {\"image\": <base64>} object(s)" if model is ClassifyRequest else ""),
                           param="input") from None
        raise APIError(400, f"{'.'.join(loc) or 'body'}: {err['msg']}", param=loc[0] if loc else None) from None


def _check_model(service: EncoderService, model: str | None) -> None:
    if model is not None and model != service.served_name:
        raise APIError(404, f"model {model!r} does not exist; this server serves {service.served_name!r}",
                       param="model", code="model_not_found")


def _as_list(value) -> list:
    if isinstance(value, (str, ImageInput)):
        return [value]
    if value and isinstance(value[0], int):
        return [value]  # one token-id list
    return list(value)


def _b64(text: str, param: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param} is not valid base64", param="input") from None


async def _multipart(request: Request) -> tuple[str | None, list[bytes], int | None]:
    form = await request.form()
    try:
        images = [await f.read() for _, f in form.multi_items() if hasattr(f, "read")]
        top_k = form.get("top_k")
        if top_k is not None:
            try:
                top_k = int(top_k)
            except ValueError:
                raise APIError(400, f"top_k must be an integer; got {top_k!r}", param="top_k") from None
        if not images:
            raise APIError(400, "multipart body has no file part; send the image as a file field", param="input")
        model = form.get("model")
        return (model if isinstance(model, str) else None), images, top_k
    finally:
        await form.close()


async def _call(service: EncoderService, work):
    start = time.monotonic()
    try:
        return await work
    except EncoderRequestError as e:
        service.observer.on_request_done("error", time.monotonic() - start)
        raise APIError(e.status, str(e), param=e.param) from None
    except EncoderBusy as e:
        raise APIError(503, str(e), retry_after=1) from None
    except EncoderTimeout as e:
        raise APIError(408, str(e)) from None


def _encode(v: np.ndarray, fmt: str):
    if fmt == "base64":  # OpenAI's convention: little-endian float32 bytes
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
    return v.tolist()


def _classification_response(service: EncoderService, result: Classifications) -> JSONResponse:
    data = [{"object": "classification", "index": i,
             "labels": [{"label": s.label, "score": s.score, "index": s.index} for s in labels]}
            for i, labels in enumerate(result.labels)]
    return JSONResponse({"object": "list", "data": data, "model": service.served_name,
                         "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}})
