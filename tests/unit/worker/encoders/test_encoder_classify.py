"""POST /v1/classify: ViT images (JSON base64 and multipart) and BERT sequence classification vs transformers."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import torch

from encoder_fixtures import ID2LABEL, encoder_app, loaded, make_service, png_bytes


@pytest.fixture(scope="module")
def vit_loaded(vit_dir):
    return loaded(vit_dir, "classify")


def reference_image_probs(vit_dir, images: list[bytes]) -> np.ndarray:
    from PIL import Image
    from transformers import ViTForImageClassification, ViTImageProcessor

    proc = ViTImageProcessor.from_pretrained(vit_dir)
    model = ViTForImageClassification.from_pretrained(vit_dir).eval()
    pixels = proc([Image.open(io.BytesIO(b)).convert("RGB") for b in images], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        return model(pixel_values=pixels).logits.softmax(-1).numpy()


def as_probs(item) -> np.ndarray:
    out = np.zeros(len(ID2LABEL))
    for entry in item["labels"]:
        assert entry["label"] == ID2LABEL[entry["index"]]
        out[entry["index"]] = entry["score"]
    return out


async def client_post(service, **kw):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=encoder_app(service)), base_url="http://t") as c:
        return await c.post("/v1/classify", **kw)


async def test_images_as_base64_json_match_transformers(vit_dir, vit_loaded):
    images = [png_bytes(40, 30, seed=1), png_bytes(64, 64, seed=2)]
    service = make_service(vit_loaded)
    body = {"input": [{"image": base64.b64encode(images[0]).decode()},
                      {"image": "data:image/png;base64," + base64.b64encode(images[1]).decode()}]}
    resp = await client_post(service, json=body)
    await service.close()
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    expected = reference_image_probs(vit_dir, images)
    for item, exp in zip(data, expected):
        np.testing.assert_allclose(as_probs(item), exp, atol=1e-4)
        scores = [e["score"] for e in item["labels"]]
        assert scores == sorted(scores, reverse=True)


async def test_multipart_upload_with_top_k(vit_dir, vit_loaded):
    image = png_bytes(33, 47, seed=3)
    service = make_service(vit_loaded)
    resp = await client_post(service, files={"file": ("x.png", image, "image/png")}, data={"top_k": "2"})
    await service.close()
    assert resp.status_code == 200, resp.text
    labels = resp.json()["data"][0]["labels"]
    expected = reference_image_probs(vit_dir, [image])[0]
    assert [e["index"] for e in labels] == list(np.argsort(-expected)[:2])
    np.testing.assert_allclose([e["score"] for e in labels], np.sort(expected)[::-1][:2], atol=1e-4)


@pytest.mark.parametrize("kw, status, needle", [
    ({"json": {"input": {"image": "%%%"}}}, 400, "not valid base64"),
    ({"json": {"input": {"image": base64.b64encode(b"GIF89a garbage").decode()}}}, 400, "could not decode"),
    ({"json": {"input": "a text for an image model"}}, 400, "takes image input"),
    ({"json": {"input": {"image": "", "extra": 1}}}, 400, "image"),
    ({"json": {"input": {"image": base64.b64encode(png_bytes()).decode()}, "top_k": 0}}, 400, "top_k"),
    ({"files": {"file": ("x.png", b"\x89PNG\r\n\x1a\n truncated", "image/png")}}, 400, "could not decode"),
    ({"data": {"top_k": "3"}, "files": {}}, 400, "file"),
])
async def test_bad_image_requests(vit_loaded, kw, status, needle):
    service = make_service(vit_loaded)
    if kw.get("files") == {}:  # a multipart body with a field but no file part
        kw = {"content": b"--b\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n3\r\n--b--\r\n",
              "headers": {"content-type": "multipart/form-data; boundary=b"}}
    resp = await client_post(service, **kw)
    ok = await client_post(service, json={"input": {"image": base64.b64encode(png_bytes()).decode()}})
    await service.close()
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]["message"]
    assert ok.status_code == 200


async def test_oversized_image_is_413(vit_loaded):
    enc, runner = vit_loaded
    service = make_service(vit_loaded)
    limit = enc.image_processor.max_pixels
    try:
        object.__setattr__(enc.image_processor, "max_pixels", 100)
        resp = await client_post(service, json={"input": {"image": base64.b64encode(png_bytes(20, 20)).decode()}})
    finally:
        object.__setattr__(enc.image_processor, "max_pixels", limit)
        await service.close()
    assert resp.status_code == 413 and "pixels" in resp.json()["error"]["message"]


async def test_text_classification_matches_transformers(bert_cls_dir):
    from transformers import AutoTokenizer, BertForSequenceClassification

    texts = ["this is great", "a much longer review that says the product broke after two days of use"]
    service = make_service(loaded(bert_cls_dir, "classify"))
    resp = await client_post(service, json={"input": texts, "top_k": 4})
    await service.close()
    assert resp.status_code == 200, resp.text
    tok = AutoTokenizer.from_pretrained(bert_cls_dir)
    model = BertForSequenceClassification.from_pretrained(bert_cls_dir).eval()
    with torch.inference_mode():
        expected = model(**tok(texts, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    for item, exp in zip(resp.json()["data"], expected):
        np.testing.assert_allclose(as_probs(item), exp, atol=1e-5)
    usage = resp.json()["usage"]["prompt_tokens"]
    assert usage == sum(len(x) for x in tok(texts)["input_ids"])
