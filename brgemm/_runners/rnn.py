"""The recurrent runner: RNNRunner owns one layer and direction's ``_core._RNN`` (LSTM or GRU)
and its packed weights; the driver's forward and backward take plain (T, N, ·) arrays."""

import threading

from .. import _core
from .weights import PackedWeights


class RNNRunner:
    """``cell`` "lstm" or "gru" of ``dtype`` from input_size to hidden_size, one direction
    (``reverse``), the gates' non-linearities by K-TanH when ``ktanh``. ``rnn`` is the driver
    (forward, backward, backward_from); callers hold ``lock`` when they share a runner."""

    def __init__(self, cell, dtype, input_size, hidden_size, reverse, ktanh):
        self.rnn = _core._RNN(cell, dtype, input_size, hidden_size, bool(reverse), bool(ktanh))
        self.weights = PackedWeights(self.rnn.refresh, core=True)
        self.lock = threading.Lock()

    def refresh(self, weight_ih, weight_hh, bias_ih, bias_hh, version=None):
        """Packs the four float32 parameters (biases both None or both given) if they changed
        (``version``: weights.PackedWeights)."""
        return self.weights.refresh(weight_ih, weight_hh, bias_ih, bias_hh, version=version)
