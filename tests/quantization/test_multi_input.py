"""Static quantization of a model that torch.fx cannot trace and that takes several integer inputs (token ids
and an attention mask): captured with torch.export, calibrated on input tuples, exported and run in ONNX
Runtime with the same integers."""

import onnx
import onnxruntime as ort
import pytest
import torch

from edgecompress.errors import DataError
from edgecompress.export import get_exporter
from edgecompress.quantization import ActivationQuantizer, QuantConfig, QuantizedLayer, quantize
from edgecompress.quantization.bias_correction import correct_bias
from edgecompress.quantization.graph import prepare, trace
from edgecompress.quantization.ptq import calibrate
from edgecompress.testing.numeric import sqnr
from edgecompress.testing.tiny_models import TinyTokenEncoder


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = TinyTokenEncoder().eval()
    batches = [model.example_inputs(batch_size=16) for _ in range(4)]
    return model, batches


def test_fx_cannot_trace_it_so_torch_export_captures_it_with_the_layer_names(encoder):
    model, batches = encoder
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model)
    gm = trace(model, example_inputs=batches[0])
    layers = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    assert {"query", "key", "value", "attn_out", "up", "down"} <= layers
    ids, mask = model.example_inputs(batch_size=5)  # another batch size: the batch dimension stayed dynamic
    torch.testing.assert_close(gm(ids, mask), model(ids, mask))


def test_static_int8_of_a_two_input_model_matches_onnx_runtime(encoder, tmp_path):
    model, batches = encoder
    q = quantize(model, QuantConfig(reduce_range=True), calibration=batches, example_inputs=batches[0])
    assert sum(isinstance(m, QuantizedLayer) for m in q.modules()) == 6
    ids, mask = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    reference, simulated = model(ids, mask), q(ids, mask)
    assert sqnr(reference, simulated) > 30  # measured 44.5 dB
    path = get_exporter("onnx").export(q, batches[0], tmp_path / "tiny.onnx", scheme="int8").path
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    runtime = session.run(None, {names[0]: ids.numpy(), names[1]: mask.numpy()})[0]
    assert sqnr(simulated, torch.from_numpy(runtime)) > 60  # measured 140.0 dB: the same integers


def test_the_mask_arithmetic_stays_float(encoder):
    """Only tensors computed from a float input are activations: the additive mask (-3.4e38 where masked)
    and the embedding lookup get no int8 quantizer, while every Linear input does."""
    model, batches = encoder
    gm = prepare(model, QuantConfig(), batches[0])
    calibrate(gm, batches)
    for quantizer in (m for m in gm.modules() if isinstance(m, ActivationQuantizer)):
        lo, hi = quantizer.observer.range()
        assert -1e6 < float(lo) and float(hi) < 1e6
    inputs = [m for m in gm.modules() if isinstance(m, QuantizedLayer)]
    assert len(inputs) == 6 and all(m.input_quantizer is not None for m in inputs)


def test_bias_correction_replays_tuples_of_inputs(encoder):
    model, batches = encoder
    gm = prepare(model, QuantConfig(weight_bits=4, group_size=None, per_channel=False), batches[0])
    calibrate(gm, batches)
    before = {n: m.bias_float.clone() for n, m in gm.named_modules() if isinstance(m, QuantizedLayer)}
    correct_bias(gm, batches)
    after = {n: m.bias_float for n, m in gm.named_modules() if isinstance(m, QuantizedLayer)}
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_a_batch_with_the_wrong_number_of_inputs_is_refused_before_calibrating(encoder):
    model, batches = encoder
    with pytest.raises(DataError, match="1 input tensor.*takes 2"):
        quantize(model, QuantConfig(), calibration=[b[0] for b in batches], example_inputs=batches[0])
