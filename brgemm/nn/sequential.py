"""Models as a chain of layers: :class:`Sequential` and :class:`Flatten`, enough to train a
small network with brgemm alone (forward, backward, :meth:`Sequential.apply_sgd`) and to hand
it to :func:`brgemm.quant.quantize_model`."""

import math

import numpy as np


class Flatten:
    """(N, ...) → (N, features): the bridge from a convolution's NCHW output to a Linear."""

    def __init__(self):
        self._shape = None

    def forward(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
        if x.ndim == 0:
            raise ValueError("x must be (N, ...) with a batch axis, got a 0-d array")
        self._shape = x.shape
        return np.ascontiguousarray(x).reshape(x.shape[0], math.prod(x.shape[1:]))  # -1 fails on N = 0

    __call__ = forward

    def backward(self, grad_out, input_grad=True):
        if self._shape is None:
            raise RuntimeError("backward needs a forward first")
        g = np.asarray(grad_out)
        if g.shape != (self._shape[0], math.prod(self._shape[1:])):
            raise ValueError(f"grad_out must have the shape of the last output, "
                             f"{(self._shape[0], math.prod(self._shape[1:]))}, got {g.shape}")
        return g.reshape(self._shape) if input_grad else None

    def __repr__(self):
        return "Flatten()"


class Sequential:
    """layers applied in order. ``backward(grad)`` runs them backwards (the first layer skips
    its input gradient unless asked for); ``apply_sgd(lr)``, ``zero_grad()``, ``train()`` and
    ``eval()`` reach every layer that has them."""

    def __init__(self, *layers):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not callable(getattr(layer, "forward", None)):
                raise TypeError(f"layer {i} ({type(layer).__name__}) has no forward")
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, grad_out, input_grad=False):
        g = grad_out
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if not hasattr(layer, "backward"):
                raise TypeError(f"layer {i} ({type(layer).__name__}) has no backward")
            g = layer.backward(g, input_grad=input_grad or i > 0)
        return g

    def _each(self, method, *args):
        for layer in self.layers:
            fn = getattr(layer, method, None)
            if fn is not None:
                fn(*args)
        return self

    def apply_sgd(self, lr):
        return self._each("apply_sgd", lr)

    def zero_grad(self):
        return self._each("zero_grad")

    def train(self, mode=True):
        return self._each("train", mode)

    def eval(self):
        return self._each("train", False)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        return "Sequential(\n" + "".join(f"  {layer!r},\n" for layer in self.layers) + ")"
