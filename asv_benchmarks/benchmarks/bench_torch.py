"""PyTorch models through brgemm.torch (the benchmark side of tests/test_torch.py): three models
built once in plain PyTorch and once as a deep copy converted by brgemm.torch.convert (the
ReLUs fused into the convolutions' epilogues), float32, 1 and 2 threads (torch's and ours):
a ResNet-style stack of 1×1 and 3×3 convolutions at N = 16, 64 channels, 28×28, with global
average pooling and a Linear head; an LSTM tagger (input 256, hidden 512, T = 50, N = 64)
with a Linear on every step's output; and the LSTM language model of PyTorch's
word-language-model example at its medium size (embedding 10 000 × 650, 2-layer LSTM 650 with
dropout 0.5, Linear decoder 650 → 10 000, T = 35, N = 20). Each as a training step (forward,
cross-entropy, backward, plain SGD) and inference (eval, no_grad). The models are brgemm.bench's, as
`python -m brgemm bench --torch` runs them.

Tracked: the converted model's time, the ratio (plain PyTorch time / converted time, the same
inputs in the same process) and % of the measured fp32 peak, counting the convolutions' or the
LSTM's FLOPs (the language model's: its LSTM and its decoder; 2 per multiply-add; a training
step 3× the forward). The bar: training step, 2 threads, ≥ 1.2× plain PyTorch for every model.
"""

from brgemm.bench import TORCH_MODELS, TORCH_PASSES, torch_model_fns

from .common import PeerTimed, ThreadPin, import_torch

# The bar is set at 2 threads, whatever the machine; ThreadPin skips 2 on a 1-CPU machine.
THREADS = [1, 2]


class TorchModel(PeerTimed):
    params = [list(TORCH_MODELS), list(TORCH_PASSES), THREADS]
    param_names = ["model", "pass", "threads"]
    timeout = 180  # a training step of the language model takes ~0.75 s on one thread, and ratios time both

    def setup(self, model, pass_, threads):
        torch = import_torch()
        if torch is None:
            raise NotImplementedError("PyTorch is not installed")
        self.pin = ThreadPin(threads)  # after importing torch, so that it is pinned too
        self.fns, self.flops, _, _ = torch_model_fns(torch, model, pass_)
