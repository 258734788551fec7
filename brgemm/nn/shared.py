"""SharedLinear: an inference Linear whose weight is stored as trained shared weights (Han et al.
2016, "Deep Compression"): b-bit indices into a codebook of 2^b float32 centroids, packed once as
codebook panels (brgemm.quant.SharedWeights), and each product widens the indices in registers
(layers/codebook.h). A decoding step's GEMV (N = 1) streams the indices, b/16 of a float16
weight's bytes."""

import numpy as np

from .._sharing import SharedWeights, share_weights

_F32 = np.dtype(np.float32)


class SharedLinear:
    """y = activation(x · codebook[indices]ᵀ + bias), x float32 (N, in_features) or (in_features,).

    ``indices`` (out_features, in_features), integers below 2^bits, and ``codebook`` (2^bits,)
    float32 for bits in 2..8, as :func:`brgemm.quant.share_weights` returns them for a Linear's
    weight; ``bias`` (out_features,) or None; ``activation`` None or "relu". Inference only: the
    centroids can be fine-tuned in place with ``shared.fine_tune`` (brgemm.quant.SharedWeights).

    >>> layer = SharedLinear.from_linear(linear, bits=4)   # k-means on linear.weight
    >>> y = layer(x)                                       # one C++ call, GIL released
    """

    def __init__(self, codebook, indices, bias=None, activation=None):
        indices = np.asarray(indices)
        if indices.ndim != 2:
            raise ValueError(f"indices must be 2-D (out_features, in_features), got shape {indices.shape}")
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        self.shared = SharedWeights(codebook, indices.T)   # checks the codebook and the indices
        self.out_features, self.in_features = indices.shape
        self.activation = activation
        self._bias = None
        if bias is not None:
            b = np.asarray(bias)
            if b.shape != (self.out_features,) or not np.issubdtype(b.dtype, np.floating):
                raise ValueError(f"bias must be float ({self.out_features},), got {b.dtype} of shape {b.shape}")
            self._bias = np.ascontiguousarray(b, np.float32)

    @classmethod
    def from_linear(cls, linear, bits, iters=30):
        """The shared form of a :class:`brgemm.nn.Linear` (its weight clustered into 2^bits
        centroids by :func:`brgemm.quant.share_weights`), with its bias and activation."""
        weight = getattr(linear, "weight", None)
        if not isinstance(weight, np.ndarray) or weight.ndim != 2:
            raise TypeError(f"linear must be a brgemm.nn.Linear, got {type(linear).__name__}")
        codebook, indices = share_weights(weight, bits, iters)
        return cls(codebook, indices, linear.bias, getattr(linear, "activation", None))

    @property
    def bits(self):
        return self.shared.bits

    @property
    def bias(self):
        return None if self._bias is None else self._bias.copy()

    @property
    def nbytes(self):
        """Bytes of the packed indices, the codebook and the bias."""
        return self.shared.nbytes + (0 if self._bias is None else self._bias.nbytes)

    def decoded_weight(self):
        """The weight codebook[indices] as float32 (out_features, in_features), for reference."""
        return self.shared.decode().T.copy()

    def forward(self, x, out=None):
        """y (N, out_features) float32 for x (N, in_features), or (out_features,) for x
        (in_features,); ``out``: y's array (float32, contiguous, y's shape)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
        if x.dtype != _F32:
            raise TypeError(f"x must have dtype float32, got {x.dtype}")
        if x.ndim not in (1, 2) or x.shape[-1] != self.in_features:
            raise ValueError(f"x must be (N, {self.in_features}) or ({self.in_features},), got shape {x.shape}")
        a = x.reshape(1, -1) if x.ndim == 1 else x
        shape = (a.shape[0], self.out_features)
        if out is None:
            y = np.empty(shape, np.float32)
        else:
            if not isinstance(out, np.ndarray) or out.dtype != _F32 or out.shape != x.shape[:-1] + (self.out_features,) \
                    or not out.flags.c_contiguous:
                raise ValueError(f"out must be a contiguous float32 array of shape {x.shape[:-1] + (self.out_features,)}")
            y = out.reshape(shape)
        self.shared.gemm(a, y, self._bias)
        if self.activation == "relu":
            np.maximum(y, 0, out=y)
        return y.reshape(x.shape[:-1] + (self.out_features,)) if out is None else out

    __call__ = forward

    def __repr__(self):
        return (f"SharedLinear(in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"bias={self._bias is not None}, activation={self.activation!r})")
