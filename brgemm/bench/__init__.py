"""`python -m brgemm bench`: brgemm against numpy, PyTorch, ONNX Runtime and OpenVINO on the same
shapes and thread counts, in the same run, as % of the measured peak, % of the roofline bound
and the ratio to each peer (peer time / brgemm time: above 1 means brgemm is faster).

  harness.py   peers, timing in rounds, result rows, tables, progress, JSON
  headline.py  the default run: one row per kind of work, about a minute
  kernels.py   --kernels: microkernels, gemm, GEMV on f16 weights, K-TanH
  mlp.py       --mlp: Linear and MLP
  conv.py      --conv: ResNet-50's convolutions
  rnn.py       --rnn: LSTM and GRU
  sparse.py    --sparse: block-sparse (pruned) Linear, Conv2d and LSTM training step against dense and PyTorch (BSR); GEMV on shared weights
  models.py    --torch: PyTorch models through brgemm.torch.convert
  networks.py  --models: whole networks (vision.py) through brgemm.torch, inference and training
  vision.py    ResNet-18/50, ResNeXt-50 32x4d, MobileNetV2 as torchvision defines them, and their
               FLOPs (imports torch: not imported here)
  ceilings.py  --ceilings: PyTorch alone, % of the peak it reaches
  plot.py      --plot: the roofline chart
  cli.py       the command line

The names below are the ones other code uses (asv_benchmarks builds the same cases)."""

from .cli import main, parse_args
from .conv import CONV_BATCHES, CONV_LAYERS, _conv_label, _torch_conv, _torch_qconv, conv_work
from .harness import Log, Peers, _row, compare, format_table, geomean, ratio_summary, write_json
from .headline import format_headline, run_headline
from .kernels import GEMM_SHAPES, KERNEL_SHAPE, LOWP_GEMM_SHAPES, PEAK_OP, _int8_variants, _kernel_operands, _torch_peers
from .mlp import LINEAR_SHAPES, MLP_BATCH, MLP_SIZES, _torch_mlp, mlp_flops
from .models import (TORCH_CLASSES, TORCH_CONV_INPUT, TORCH_CONV_STACK, TORCH_LM, TORCH_LSTM, TORCH_MODELS, TORCH_PASSES,
                     model_peers, torch_model, torch_model_fns, torch_model_work)
from .networks import (DEFAULT_NETWORKS, INFERENCE_BATCHES, NETWORK_IMAGE, NETWORK_PASSES, NETWORKS, TRAIN_BATCHES,
                       network_case, network_cases, network_flops)
from .rnn import RNN_BATCHES, RNN_SIZES, RNN_STEPS, _torch_rnn
from .sparse import CROSSOVER, SHARED_BITS, SHARED_GEMV, SPARSE_SHAPE, SPARSITIES, TERNARY_LEVELS, TRAIN_SPARSITY
