"""Quantization: parameters, quantize / dequantize, choosing the parameters from data, int8
weights, and quantizing whole models.

The formulas are the usual affine ones: x ≈ scale·(x_q − zero_point), and
x_q = clip(round(x / scale) + zero_point) with round to nearest even, in float32, and clip to
the dtype's range (uint8 0..255, int8 −128..127).

- Arrays (brgemm/_quantize.py, which brgemm.nn's quantized layers use): :class:`QParams`,
  :func:`quantize`, :func:`dequantize`, :func:`choose_qparams`, the observers
  :class:`MinMaxObserver` and :class:`HistogramObserver`, :func:`quantize_per_channel`,
  :func:`split_outliers` and :func:`outlier_error`.
- Models (brgemm/quant/_model.py, above brgemm.nn): :func:`quantize_model` (int8 or ternary
  weights), :func:`set_residuals`.
- Weight sharing (brgemm/_sharing.py): :func:`share_weights` (k-means into 2^b centroids),
  :func:`centroid_gradients`, :func:`pack_shared` → :class:`SharedWeights` ("codebook panels",
  which ``brgemm.gemm`` takes as B).
- Ternary weights with residual blocks (brgemm/quant/ternary.py): :func:`ternarize`, :class:`Ternary`.
"""

from .._quantize import (DTYPES, METHODS, HistogramObserver, MinMaxObserver, QParams, choose_qparams, dequantize,
                         outlier_error, quantize, quantize_per_channel, split_outliers)
from .._sharing import SharedWeights, centroid_gradients, pack_shared, share_weights
from ._model import quantize_model, set_residuals
from .ternary import Ternary, ternarize

__all__ = ["QParams", "quantize", "dequantize", "choose_qparams", "MinMaxObserver", "HistogramObserver",
           "quantize_per_channel", "split_outliers", "outlier_error", "share_weights", "centroid_gradients",
           "pack_shared", "SharedWeights", "quantize_model", "set_residuals", "ternarize", "Ternary", "DTYPES", "METHODS"]

# The public names say they are brgemm.quant's, as before the module became a package: pickled
# QParams and observers load again, and help() shows where to import them from.
for _name in __all__[:-2]:
    globals()[_name].__module__ = __name__
del _name
