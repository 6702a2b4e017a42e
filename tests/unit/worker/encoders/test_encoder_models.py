"""The pure modules against transformers' reference implementations, for the same random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fms_worker.encoders.image_processor import ImageError, ImageProcessor
from fms_worker.encoders.layers import Int8Linear
from fms_worker.encoders.loader import EncoderLoadError, load_encoder

from encoder_fixtures import ID2LABEL, png_bytes


def test_vit_logits_match_transformers(vit_dir):
    from transformers import ViTForImageClassification

    ref = ViTForImageClassification.from_pretrained(vit_dir).eval()
    enc = load_encoder(vit_dir, "classify")
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = ref(pixel_values=pixels).logits
        got = enc.model(pixels)
    assert enc.kind == "classify_image" and enc.id2label == ID2LABEL
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bert_sequence_classifier_logits_match_transformers(bert_cls_dir):
    from transformers import AutoTokenizer, BertForSequenceClassification

    ref = BertForSequenceClassification.from_pretrained(bert_cls_dir).eval()
    tok = AutoTokenizer.from_pretrained(bert_cls_dir)
    batch = tok(["short one", "a noticeably longer sentence that needs padding in the batch"], padding=True,
                return_tensors="pt")
    enc = load_encoder(bert_cls_dir, "classify")
    with torch.inference_mode():
        expected = ref(**batch).logits
        got = enc.model(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_image_processor_matches_transformers(vit_dir):
    from PIL import Image
    import io

    from transformers import ViTImageProcessor

    data = png_bytes(50, 37)
    proc = ImageProcessor.from_dir(vit_dir, 32)
    ours = proc(proc.decode(data))
    ref = ViTImageProcessor.from_pretrained(vit_dir)(Image.open(io.BytesIO(data)), return_tensors="pt")["pixel_values"][0]
    assert ours.shape == (3, 32, 32)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("data, status", [(b"", 400), (b"not an image at all", 400), (png_bytes()[:40], 400)])
def test_image_decode_refuses_bad_bytes(data, status):
    with pytest.raises(ImageError) as e:
        ImageProcessor(height=8, width=8).decode(data)
    assert e.value.status == status


def test_image_decode_refuses_oversized():
    with pytest.raises(ImageError) as e:
        ImageProcessor(height=8, width=8, max_pixels=100).decode(png_bytes(20, 20))
    assert e.value.status == 413 and "20x20" in str(e.value)


def test_int8_linear_is_close_to_float():
    torch.manual_seed(0)
    ref = torch.nn.Linear(64, 32)
    q = Int8Linear(64, 32)
    q.load_state_dict(ref.state_dict())
    x = torch.randn(8, 64)
    assert q.qweight.dtype == torch.int8
    err = (q(x) - ref(x)).abs().max() / ref(x).abs().max()
    assert err < 0.02


def test_int8_encoder_logits_close(vit_dir):
    full = load_encoder(vit_dir, "classify")
    quant = load_encoder(vit_dir, "classify", quantization="int8")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a, b = full.model(pixels), quant.model(pixels)
    assert any(isinstance(m, Int8Linear) for m in quant.model.modules())
    assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.99


def test_loader_errors_say_what_to_change(vit_dir, minilm_dir, tmp_path):
    with pytest.raises(EncoderLoadError, match="task: classify"):
        load_encoder(vit_dir, "embed")
    with pytest.raises(EncoderLoadError, match="ForSequenceClassification"):
        load_encoder(minilm_dir, "classify")
    with pytest.raises(EncoderLoadError, match="config.json is missing"):
        load_encoder(tmp_path, "embed")
