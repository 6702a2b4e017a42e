"""Helpers shared by the encoder tests (a unique module name: several conftest.py files exist)."""

from __future__ import annotations

ID2LABEL = {0: "cat", 1: "dog", 2: "bird", 3: "fish"}


def png_bytes(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def encoder_app(service):
    """A minimal app around the encoder routes: what create_app does for them, without the rest of the server."""
    from fastapi import FastAPI, Request

    from fms_worker.server import encoder_routes
    from fms_worker.server.errors import APIError, error_response

    app = FastAPI()
    app.include_router(encoder_routes.router)
    app.state.encoder_service = service

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc)

    return app


def make_service(enc_and_runner, *, max_batch_size=16, max_queue_delay_s=0.002, max_waiting=1024,
                 request_timeout_s=60.0, result_cache_size=0, preferred=()):
    """A fresh service (own batcher, own metrics registry) around an already loaded model."""
    from fms_worker.encoders.batch_policy import BatchPolicy
    from fms_worker.encoders.service import EncoderService
    from fms_worker.metrics.encoder_metrics import EncoderMetrics

    enc, runner = enc_and_runner
    policy = BatchPolicy(max_batch_size=max_batch_size, max_queue_delay_s=max_queue_delay_s,
                         preferred_batch_sizes=preferred)
    return EncoderService(enc, runner, policy, served_name="m", max_waiting=max_waiting,
                          request_timeout_s=request_timeout_s, result_cache_size=result_cache_size,
                          observer=EncoderMetrics())


def loaded(path, task):
    import torch

    from fms_worker.encoders.loader import load_encoder
    from fms_worker.encoders.runner import EncoderRunner

    enc = load_encoder(path, task)
    return enc, EncoderRunner(enc, torch.device("cpu"), torch.float32)
