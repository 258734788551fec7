"""Quantizing a whole brgemm.nn model: calibration through the float model, each Conv2d / Linear
replaced by its int8 version, and the choice of layers to keep in float (auto_precision). Above
brgemm.nn; the array-level quantization it uses is brgemm._quantize, below nn."""

import numpy as np

from .._quantize import METHODS, HistogramObserver, MinMaxObserver, QParams, dequantize, quantize_per_channel
from ..nn import Conv2d, Linear, QuantizedConv2d, QuantizedLinear, Sequential
from ..nn.linear import _check_ternary_args


def _sqnr_db(ref, got):
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    noise = float(((ref - got) ** 2).sum())
    return float("inf") if noise == 0 else float(10 * np.log10(float((ref ** 2).sum()) / noise))


def quantize_model(model, calibration_batches, *, method="l2", per_channel=True, keep_float=(), auto_precision=False,
                   max_accuracy_drop=0.01, eval_data=None, weights="int8", **ternary):
    """An int8 copy of a float :class:`brgemm.nn.Sequential` of Conv2d / Linear / Flatten
    layers, and a per-layer report.

    The calibration batches run through the float model; observers see each layer's input and
    output (histograms for "l2" and "percentile", min–max for "minmax"). Each Conv2d / Linear
    becomes a :class:`~brgemm.nn.QuantizedConv2d` / :class:`~brgemm.nn.QuantizedLinear` with
    int8 weights (per output channel, or one scale per layer when ``per_channel`` is False);
    consecutive quantized layers pass uint8 arrays (a layer's output parameters are the next
    one's input parameters), the first quantizes the float input and the last returns float32.
    ``keep_float``: indices of layers left in float (their neighbours then hand over float32).

    ``auto_precision``: keep in float32 the layers whose quantization costs most accuracy, as
    few as it takes for the int8 model's top-1 accuracy to stay within ``max_accuracy_drop``
    (a fraction) of the float model's on ``eval_data`` = (inputs, integer labels); without
    eval_data, on the calibration batches against the float model's own predictions. Each
    layer's sensitivity is the accuracy lost with that layer alone quantized; the most
    sensitive are kept first (a first convolution often is, seeing raw inputs).

    Returns (model, report): report is one dict per quantized layer with its type, the input
    and output scale and zero point, and the signal-to-quantization-noise ratio (dB) of its
    output on the calibration data given the float input. With auto_precision every Conv2d /
    Linear has a row with "precision" ("int8" or "float32") and "accuracy_drop_alone", and
    the last row, {"layer": None, ...}, gives the float and final accuracies.

    ``weights="ternary"``: 8-bit activations × ternary weights with residual levels (Kundu et
    al., SysML 2018) instead of int8 weights: each Conv2d / Linear becomes a
    :class:`~brgemm.nn.TernaryConv2d` / :class:`~brgemm.nn.TernaryLinear` (the same calibration
    and uint8 hand-over); ``ternary`` takes ``block``, ``max_residuals``, ``error_target`` and
    ``residuals`` (:func:`brgemm.quant.ternarize`), and :func:`set_residuals` lowers the residual
    levels of the whole model at inference time. Report rows then also give "blocks", the
    ternary blocks per level of that layer."""
    if not isinstance(model, Sequential):  # checked before auto_precision uses it
        raise TypeError(f"model must be a brgemm.nn.Sequential, got {type(model).__name__}")
    if weights not in ("int8", "ternary"):
        raise ValueError(f"weights must be 'int8' or 'ternary', got {weights!r}")
    if weights == "ternary" and not per_channel:
        raise ValueError("per_channel=False applies to weights='int8' only (ternary weights have one α per block)")
    _check_ternary_args(weights, ternary)
    if auto_precision:
        return _auto_precision(model, calibration_batches, method, per_channel, tuple(keep_float),
                               max_accuracy_drop, eval_data, weights, ternary)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    keep = set(keep_float)
    layers = list(model.layers)
    quantizable = [i for i, layer in enumerate(layers)
                   if isinstance(layer, (Conv2d, Linear)) and layer.dtype == "float32" and i not in keep]
    observer = (lambda: MinMaxObserver()) if method == "minmax" else (lambda: HistogramObserver())
    obs_in = {i: observer() for i in quantizable}
    obs_out = {i: observer() for i in quantizable}
    batches = [np.asarray(b, np.float32) for b in calibration_batches]
    if not batches:
        raise ValueError("calibration_batches is empty")
    was_training = [getattr(layer, "training", None) for layer in layers]
    model.eval()
    for x in batches:
        for i, layer in enumerate(layers):
            if i in obs_in:
                obs_in[i].observe(x)
            x = layer(x)
            if i in obs_out:
                obs_out[i].observe(x)

    def qp(o):
        return o.qparams() if method == "minmax" else o.qparams(method)
    out_layers, report, prev_qp = [], [], None
    for i, layer in enumerate(layers):
        if i not in obs_in:
            out_layers.append(layer)
            if not type(layer).__name__ == "Flatten":
                prev_qp = None
            continue
        nxt = next((j for j in range(i + 1, len(layers)) if type(layers[j]).__name__ != "Flatten"), None)
        in_qp = prev_qp or qp(obs_in[i])
        out_qp = qp(obs_out[i]) if nxt in obs_in else None
        cls = QuantizedConv2d if isinstance(layer, Conv2d) else QuantizedLinear
        q = cls.from_float(layer, float(in_qp.scale), int(in_qp.zero_point),
                           None if out_qp is None else float(out_qp.scale),
                           0 if out_qp is None else int(out_qp.zero_point), weights=weights, **ternary)
        if not per_channel:
            q.weight, scale = quantize_per_channel(layer.weight.reshape(1, -1))
            q.weight = q.weight.reshape(layer.weight.shape)
            q.weight_scale = np.full(layer.weight.shape[0], scale[0], np.float32)
        out_layers.append(q)
        prev_qp = out_qp
        report.append({"layer": i, "type": type(layer).__name__, "input_scale": float(in_qp.scale),
                       "input_zero_point": int(in_qp.zero_point),
                       "output_scale": None if out_qp is None else float(out_qp.scale),
                       "output_zero_point": None if out_qp is None else int(out_qp.zero_point)})
        if weights == "ternary":
            report[-1]["blocks"] = [int(b) for b in q.ternary.blocks_per_level()]
    # Each quantized layer's own noise: its output against the float layer's on the same input.
    for r in report:
        i = r["layer"]
        ref, got = [], []
        for x in batches:
            for j in range(i):
                x = layers[j](x)
            ref.append(layers[i](x))
            y = out_layers[i](x)
            if r["output_scale"] is not None:
                y = dequantize(y, QParams(r["output_scale"], r["output_zero_point"]))
            got.append(y)
        r["sqnr_db"] = _sqnr_db(np.concatenate([a.ravel() for a in ref]), np.concatenate([a.ravel() for a in got]))
    for layer, mode in zip(layers, was_training):
        if mode is not None and hasattr(layer, "train"):
            layer.train(mode)
    return Sequential(*out_layers), report


def set_residuals(model, residuals):
    """Lowers (or raises, up to what is stored) the residual levels every ternary layer of
    ``model`` (a :class:`brgemm.nn.Sequential` from quantize_model(..., weights="ternary")) uses;
    returns how many layers it set. No repacking: the levels are dropped at inference time."""
    from ..nn.ternary import TernaryConv2d, TernaryLinear  # brgemm.nn.ternary imports this package
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a brgemm.nn.Sequential, got {type(model).__name__}")
    layers = [layer for layer in model.layers if isinstance(layer, (TernaryConv2d, TernaryLinear))]
    if not layers:
        raise ValueError("model has no ternary layers (quantize_model(..., weights='ternary') builds them)")
    for layer in layers:
        layer.residuals = residuals
    return len(layers)


def _auto_precision(model, calibration_batches, method, per_channel, keep, max_drop, eval_data, weights, ternary):
    """quantize_model's auto_precision: sensitivities, then a greedy choice (module docstring)."""
    max_drop = float(max_drop)
    if not 0 <= max_drop <= 1:
        raise ValueError(f"max_accuracy_drop must be a fraction in [0, 1], got {max_drop}")
    batches = [np.asarray(b, np.float32) for b in calibration_batches]
    if not batches:
        raise ValueError("calibration_batches is empty")
    model.eval()
    if eval_data is None:
        x_eval = np.concatenate(batches)
        labels = np.asarray(model(x_eval)).argmax(1)
    else:
        x_eval, labels = (np.asarray(v) for v in eval_data)
        x_eval = x_eval.astype(np.float32)
        if labels.shape != (len(x_eval),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("eval_data must be (inputs, one integer label per input)")

    def accuracy(m):
        return float((np.asarray(m(x_eval), np.float32).argmax(1) == labels).mean())

    def build(kept):
        return quantize_model(model, batches, method=method, per_channel=per_channel, keep_float=kept,
                              weights=weights, **ternary)

    candidates = [i for i, layer in enumerate(model.layers)
                  if isinstance(layer, (Conv2d, Linear)) and layer.dtype == "float32" and i not in keep]
    float_acc = accuracy(model)
    alone = {i: float_acc - accuracy(build(keep + tuple(j for j in candidates if j != i))[0]) for i in candidates}
    kept = list(keep)
    order = sorted(candidates, key=lambda i: -alone[i])
    qmodel, report = build(tuple(kept))
    acc = accuracy(qmodel)
    for i in order:  # most sensitive first, until the drop is within bounds
        if float_acc - acc <= max_drop:
            break
        kept.append(i)
        qmodel, report = build(tuple(kept))
        acc = accuracy(qmodel)
    rows = {r["layer"]: dict(r, precision=weights) for r in report}
    out = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, (Conv2d, Linear)):
            r = rows.get(i, {"layer": i, "type": type(layer).__name__, "precision": "float32"})
            r["accuracy_drop_alone"] = alone.get(i)
            out.append(r)
    out.append({"layer": None, "float_accuracy": float_acc, "accuracy": acc,
                "kept_float": sorted(i for i in kept if i in candidates), "within_bound": float_acc - acc <= max_drop})
    return qmodel, out
