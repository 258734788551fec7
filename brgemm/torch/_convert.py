"""convert: swaps a model's layers for brgemm.torch's modules, fuses ReLUs into their
epilogues and passes the blocked layout between convolutions; ConversionReport says what it did."""

from torch import nn

from ._bridge import _algorithm_arg, _module_algorithm
from ._modules import (GRU, LSTM, AdaptiveAvgPool2d, Conv2d, Dropout, KTanh, Linear, TaylorSoftmax, _compute_dtype_arg,
                       _global)


_EXACT = (Conv2d, Linear, LSTM, GRU, Dropout)
_APPROXIMATE = (KTanh, TaylorSoftmax)


class ConversionReport:
    """What :func:`convert` did: ``swapped`` (name, from, to), ``fused`` (name of the ReLU, the
    layer whose epilogue now applies it), ``blocked`` (pairs that pass the blocked layout: a
    convolution and the convolution or global average pooling after it) and ``kept`` (name,
    type, why it was left alone)."""

    def __init__(self):
        self.swapped, self.fused, self.kept, self.blocked = [], [], [], []

    def __str__(self):
        lines = [f"swapped {len(self.swapped)} module(s), fused {len(self.fused)} ReLU(s), kept {len(self.kept)}"]
        lines += [f"  swapped  {n or '(model)'}: {a} -> {b}" for n, a, b in self.swapped]
        lines += [f"  fused    {n} into {into}" for n, into in self.fused]
        lines += [f"  blocked  {a} -> {b}" for a, b in self.blocked]
        lines += [f"  kept     {n}: {t} ({why})" for n, t, why in self.kept]
        return "\n".join(lines)

    __repr__ = __str__


def _target(module, approximate):
    """(brgemm class, None) for a module convert swaps, else (None, why not)."""
    if isinstance(module, _EXACT + _APPROXIMATE):
        return None, "already a brgemm module"
    for cls in _EXACT + (_APPROXIMATE if approximate else ()):
        if type(module) is cls._torch_class:
            reason = cls._unsupported(module) if hasattr(cls, "_unsupported") else None
            return (None, reason) if reason else (cls, None)
    if type(module) in (nn.Tanh, nn.Softmax):
        return None, "exact function kept; approximate=True swaps in K-TanH / Taylor softmax"
    for cls in _EXACT:
        if isinstance(module, cls._torch_class):
            return None, f"a subclass of {cls._torch_class.__name__} (its forward may differ)"
    return None, "no brgemm counterpart"


# Activations a swapped Conv2d or Linear takes into its epilogue from the module after it.
_FUSABLE = {nn.ReLU: "relu", nn.ReLU6: "relu6"}


def convert(model, dtype=None, *, approximate=False, fuse=True, blocked=False, algorithm="direct"):
    """Swaps every supported submodule of ``model`` in place for its brgemm.torch version on
    the same parameters (Conv2d with zero padding, grouped and depthwise too, Linear, LSTM without
    projections, GRU, Dropout (brgemm's hashed mask in float32 training: the masks differ from
    PyTorch's, their distribution does not); with ``approximate=True`` also Tanh → KTanh and
    Softmax → TaylorSoftmax)
    and returns a :class:`ConversionReport`. ``dtype="bfloat16"`` makes the swapped layers
    compute in bf16 (f32 master weights; results in the input's dtype). ``dtype="dfp16"``: the
    swapped Conv2d (groups 1) and Linear layers train in DFP-16 (brgemm.nn's dfp16 layers:
    int16 mantissas with shared exponents, exact int32 sums per batch element; float32
    activations, Parameters and gradients; a ReLU fuses, a ReLU6 stays; plain NCHW between
    layers); the other swapped modules compute in float32. ``fuse``: a ReLU (or ReLU6) that
    directly follows a swapped Conv2d or Linear in a Sequential moves into its epilogue (the
    ReLU becomes Identity). ``blocked=True``: a swapped Conv2d whose next module in a Sequential
    (Identity modules skipped) is another swapped Conv2d, or a global average pooling
    (``AdaptiveAvgPool2d(1)``, which becomes :class:`AdaptiveAvgPool2d`), returns the blocked
    layout (N, K/bk, OH, OW, bk), so the pair skips a conversion each way in forward and
    backward; the tensors between them are then 5-D, which matters only to code that looks at
    them (hooks). ``algorithm``: the swapped Conv2d's ("direct", "auto" or "winograd": where it
    applies, stride-1 3×3; brgemm.torch.Conv2d).
    A model that is itself supported is converted by changing its class."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _compute_dtype_arg(dtype, dfp16=True)
    _algorithm_arg(algorithm)

    def dtype_for(cls, child):  # dfp16: Conv2d (groups 1) and Linear; the rest float32
        if dtype != "dfp16":
            return dtype
        return dtype if cls is Linear or (cls is Conv2d and child.groups == 1) else None

    report = ConversionReport()

    def visit(module, prefix):
        for name, child in list(module.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            cls, why = _target(child, approximate)
            if cls is not None:
                new = cls.from_torch(child, dtype_for(cls, child))
                if isinstance(new, Conv2d):
                    new.algorithm = _module_algorithm(algorithm, new)
                setattr(module, name, new)
                report.swapped.append((full, type(child).__name__, f"brgemm.torch.{cls.__name__}"))
            elif len(child._modules) and why == "no brgemm counterpart":
                visit(child, full)
            else:
                report.kept.append((full, type(child).__name__, why))
        if fuse and isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            for (a, first), (b, second) in zip(kids, kids[1:]):
                if (isinstance(first, (Conv2d, Linear)) and first.activation == "none" and type(second) in _FUSABLE
                        and (first.compute_dtype != "dfp16" or _FUSABLE[type(second)] == "relu")):
                    first.activation = _FUSABLE[type(second)]
                    setattr(module, b, nn.Identity())
                    full = f"{prefix}.{b}" if prefix else b
                    report.fused.append((full, f"{prefix}.{a}" if prefix else a))
                    report.kept = [k for k in report.kept if k[0] != full]
        if blocked and isinstance(module, nn.Sequential):
            kids = [(n, c) for n, c in module.named_children() if not isinstance(c, nn.Identity)]
            for (a, first), (b, second) in zip(kids, kids[1:]):
                if not isinstance(first, Conv2d) or first.compute_dtype == "dfp16":  # dfp16 takes plain NCHW
                    continue
                if (isinstance(second, Conv2d) and first.compute_dtype == second.compute_dtype
                        and first.out_channels == second.in_channels):
                    first.blocked_output = True
                elif type(second) in (nn.AdaptiveAvgPool2d, AdaptiveAvgPool2d) and _global(second.output_size):
                    pool = AdaptiveAvgPool2d(second.output_size)
                    pool.channels = first.out_channels
                    setattr(module, b, pool)
                    first.blocked_output = True
                else:
                    continue
                report.blocked.append(tuple(f"{prefix}.{n}" if prefix else n for n in (a, b)))

    cls, _ = _target(model, approximate)
    if cls is not None and cls in _EXACT:
        swapped = cls.from_torch(model, dtype_for(cls, model))
        model.__class__ = cls
        model.__dict__.update(swapped.__dict__)
        report.swapped.append(("", cls._torch_class.__name__, f"brgemm.torch.{cls.__name__}"))
    else:
        visit(model, "")
    return report

