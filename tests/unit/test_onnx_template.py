"""The ONNX graph exported once, re-weighted: same logits as a fresh export, refused for another architecture."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.ml.export import OnnxWeightsTemplate, export_onnx
from cloud.ml.models import build_torch_cnn


def perturbed(model, seed: int):
    """A copy of model with every weight moved a little (a fine-tune's worth)."""
    import copy

    import torch

    new = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return new.eval()


def logits(path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's logits for a batch of images."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def test_template_weights_give_the_logits_of_a_fresh_export(tmp_path):
    import torch

    torch.manual_seed(0)
    base = build_torch_cnn().eval()
    template = OnnxWeightsTemplate(base)
    retrained = perturbed(base, seed=1)
    x = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)

    written = logits(template.write(retrained, tmp_path / "template.onnx"), x)
    fresh = logits(export_onnx(retrained, tmp_path / "fresh.onnx"), x)
    torch_out = retrained(torch.from_numpy(x)).detach().numpy()

    assert np.abs(written - fresh).max() < 1e-5
    assert np.abs(written - torch_out).max() < 1e-4
    assert np.abs(written - logits(template.write(base, tmp_path / "base.onnx"), x)).max() > 1e-3  # weights moved


def test_template_refuses_another_architecture(tmp_path):
    template = OnnxWeightsTemplate(build_torch_cnn())
    with pytest.raises(ValueError, match="export it afresh|initializers"):
        template.write(build_torch_cnn(num_classes=3), tmp_path / "other.onnx")
