"""The bridge from Python to the C++ layers: one runner per layer kind (conv, linear, rnn and
their int8 versions), each owning its ``_core`` object, its packed weights (:mod:`.weights`),
its scratch arrays (:mod:`.scratch`) and the plain ↔ blocked layout handling. brgemm.nn's
layers and brgemm.torch's operators both go through them: nn checks numpy arguments, torch
checks tensors and hands over numpy views of their memory, and neither talks to ``_core``'s
layer objects directly.
"""
