"""EncoderService: validates and tokenizes inputs, consults the result cache, and awaits the batcher.

No HTTP here: bad input raises EncoderRequestError (status + param), a full
queue EncoderBusy, an expired request EncoderTimeout; the routes map them.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from fms_worker.config import WorkerConfig
from fms_worker.encoders.batch_policy import BatchPolicy
from fms_worker.encoders.batcher import DynamicBatcher
from fms_worker.encoders.image_processor import ImageError
from fms_worker.encoders.loader import LoadedEncoder, load_encoder
from fms_worker.encoders.result_cache import ResultCache, input_key
from fms_worker.device import DTYPES, resolve_device
from fms_worker.encoders.runner import EncoderRunner
from fms_worker.encoders.types import (Classifications, EncoderBusy, EncoderObserver, EncoderRequestError,
                                       EncoderTimeout, Embeddings, LabelScore, NullObserver)


DEFAULT_TOP_K = 5


class EncoderService:
    def __init__(self, enc: LoadedEncoder, runner: EncoderRunner, policy: BatchPolicy, *, served_name: str,
                 max_waiting: int = 1024, request_timeout_s: float = 60.0, result_cache_size: int = 0,
                 observer: EncoderObserver | None = None):
        self.enc = enc
        self.runner = runner
        self.served_name = served_name
        self.request_timeout_s = request_timeout_s
        self.observer = observer or NullObserver()
        self.cache = ResultCache(result_cache_size)
        self.batcher = DynamicBatcher(runner.run, policy, max_waiting=max_waiting, observer=self.observer)

    @classmethod
    def from_config(cls, config: WorkerConfig, observer: EncoderObserver | None = None) -> "EncoderService":
        m, b = config.model, config.batching
        enc = load_encoder(m.path, m.task, quantization=config.precision.quantization, max_model_len=m.max_model_len)
        device = resolve_device(config.runtime.device)
        runner = EncoderRunner(enc, device, DTYPES[config.precision.dtype], cuda_graphs=not config.runtime.enforce_eager,
                               max_batch_size=b.max_batch_size, preferred_batch_sizes=tuple(b.preferred_batch_sizes))
        policy = BatchPolicy(max_batch_size=b.max_batch_size, max_queue_delay_s=b.max_queue_delay_us / 1e6,
                             preferred_batch_sizes=tuple(b.preferred_batch_sizes))
        return cls(enc, runner, policy, served_name=config.served_name, max_waiting=b.max_waiting,
                   request_timeout_s=b.request_timeout_s, result_cache_size=config.caching.result_cache_size,
                   observer=observer)

    @property
    def kind(self) -> str:
        return self.enc.kind

    @property
    def device(self) -> str:
        return str(self.runner.device)

    async def start(self) -> None:
        """Warm up off the event loop, so the first client pays no lazy init (nor a CUDA graph capture)."""
        await asyncio.to_thread(self.runner.warm_up)

    async def stop(self) -> None:
        await self.batcher.close()

    close = stop

    # ---- embed ---------------------------------------------------------------------------------

    async def embed(self, inputs: list[str] | list[list[int]], *, truncate: bool = False,
                    dimensions: int | None = None) -> Embeddings:
        if self.enc.kind != "embed":
            raise EncoderRequestError(f"model {self.served_name} serves classification, not embeddings; "
                                      "use POST /v1/classify", status=404)
        dims = self._check_dimensions(dimensions)
        seqs = self._tokenize(inputs, truncate)
        vectors = await self._infer(seqs, cached=True)
        if dims != self.enc.dimension:
            vectors = [v[:dims] / max(float(np.linalg.norm(v[:dims])), 1e-12) for v in vectors]
        return Embeddings(vectors=list(vectors), prompt_tokens=sum(len(s) for s in seqs))

    def _check_dimensions(self, dimensions: int | None) -> int:
        full = self.enc.dimension
        if dimensions is None or dimensions == full:
            return full
        if not 1 <= dimensions <= full:
            raise EncoderRequestError(f"dimensions must be between 1 and {full}; got {dimensions}", param="dimensions")
        allowed = self.enc.matryoshka_dims
        if allowed is None:
            raise EncoderRequestError(f"model {self.served_name} was not trained for shortened embeddings; "
                                      f"omit dimensions or send {full}", param="dimensions")
        if allowed and dimensions not in allowed:
            raise EncoderRequestError(f"dimensions must be one of {list(allowed)}; got {dimensions}",
                                      param="dimensions")
        return dimensions

    # ---- classify ------------------------------------------------------------------------------

    async def classify_texts(self, inputs: list[str] | list[list[int]], *, truncate: bool = False,
                             top_k: int | None = None) -> Classifications:
        if self.enc.kind != "classify_text":
            raise EncoderRequestError(self._wrong_input("text"), param="input")
        seqs = self._tokenize(inputs, truncate)
        logits = await self._infer(seqs, cached=True)
        return Classifications([self._top_k(row, top_k) for row in logits], sum(len(s) for s in seqs))

    async def classify_images(self, images: list[bytes], *, top_k: int | None = None) -> Classifications:
        if self.enc.kind != "classify_image":
            raise EncoderRequestError(self._wrong_input("image"), param="input")
        if not images:
            raise EncoderRequestError("input is empty; send at least one image", param="input")
        proc = self.enc.image_processor
        try:  # decode and resize off the event loop: a large JPEG takes milliseconds
            pixels = await asyncio.to_thread(lambda: [proc(proc.decode(data)) for data in images])
        except ImageError as e:
            raise EncoderRequestError(str(e), status=e.status, param="input") from None
        logits = await self._infer([(p, 0) for p in pixels], cached=False)
        return Classifications([self._top_k(row, top_k) for row in logits], 0)

    def _wrong_input(self, sent: str) -> str:
        wants = {"embed": "embeddings (POST /v1/embeddings)", "classify_text": "text input",
                 "classify_image": "image input ({\"image\": <base64>} or a multipart file)"}[self.enc.kind]
        return f"model {self.served_name} takes {wants}, not {sent} input"

    def _top_k(self, logits: np.ndarray, top_k: int | None) -> list[LabelScore]:
        n = len(logits)
        k = DEFAULT_TOP_K if top_k is None else top_k
        if k < 1:
            raise EncoderRequestError(f"top_k must be at least 1; got {top_k}", param="top_k")
        if self.enc.multi_label:
            scores = 1.0 / (1.0 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max())
            scores = e / e.sum()
        order = np.argsort(-scores, kind="stable")[: min(k, n)]
        return [LabelScore(self.enc.id2label.get(int(i), f"LABEL_{int(i)}"), float(scores[i]), int(i)) for i in order]

    # ---- shared --------------------------------------------------------------------------------

    def _tokenize(self, inputs: list[str] | list[list[int]], truncate: bool) -> list[list[int]]:
        if not inputs:
            raise EncoderRequestError("input is empty; send at least one string or token list", param="input")
        limit = self.enc.max_len
        if isinstance(inputs[0], str):
            if any(not s for s in inputs):
                raise EncoderRequestError("input contains an empty string", param="input")
            enc = self.enc.tokenizer(list(inputs), add_special_tokens=True, truncation=truncate,
                                     max_length=limit if truncate else None)
            seqs = enc["input_ids"]
        else:
            seqs = []
            for i, ids in enumerate(inputs):
                if not ids:
                    raise EncoderRequestError(f"input[{i}] is an empty token list", param="input")
                bad = [t for t in ids if not 0 <= t < self.enc.vocab_size]
                if bad:
                    raise EncoderRequestError(f"input[{i}] has token ids outside 0..{self.enc.vocab_size - 1}: "
                                              f"{bad[:5]}", param="input")
                seqs.append(list(ids[:limit]) if truncate else list(ids))
        for i, s in enumerate(seqs):
            if len(s) > limit:
                raise EncoderRequestError(f"input[{i}] has {len(s)} tokens; model {self.served_name} accepts at most "
                                          f"{limit}; shorten it or send \"truncate\": true", param="input")
        return seqs

    async def _infer(self, items: list, *, cached: bool) -> list[np.ndarray]:
        """items: token lists, or (payload, length) pairs. Returns one output row per item, in order."""
        start = time.monotonic()
        results: list[np.ndarray | None] = [None] * len(items)
        pending: dict[int, asyncio.Future] = {}
        keys: dict[int, bytes] = {}
        use_cache = cached and self.cache.enabled
        try:
            for i, item in enumerate(items):
                payload, length = (item, len(item)) if isinstance(item, list) else item
                if use_cache:
                    keys[i] = input_key(self.enc.kind, payload)
                    results[i] = self.cache.get(keys[i])
                if results[i] is None:
                    pending[i] = self.batcher.submit(payload, length)
            if use_cache:
                self.observer.on_cache(len(items), len(items) - len(pending))
            if pending:
                rows = await asyncio.wait_for(asyncio.gather(*pending.values()), self.request_timeout_s)
                for i, row in zip(pending, rows):
                    results[i] = row
                    if use_cache:
                        self.cache.put(keys[i], row)
        except EncoderBusy:
            self._withdraw(pending)
            self.observer.on_request_done("rejected", time.monotonic() - start)
            raise
        except TimeoutError:
            self._withdraw(pending)
            self.observer.on_request_done("abort", time.monotonic() - start)
            raise EncoderTimeout(f"request did not finish within {self.request_timeout_s:g}s "
                                 f"({self.batcher.num_waiting} inputs waiting); retry or raise "
                                 "batching.request_timeout_s") from None
        except asyncio.CancelledError:
            self._withdraw(pending)
            self.observer.on_request_done("abort", time.monotonic() - start)
            raise
        except Exception:
            self._withdraw(pending)
            self.observer.on_request_done("error", time.monotonic() - start)
            raise
        self.observer.on_request_done("success", time.monotonic() - start)
        return results

    @staticmethod
    def _withdraw(pending: dict[int, asyncio.Future]) -> None:
        for f in pending.values():
            f.cancel()
