"""Reference recorder for the per-head q/k tensors (SPEC section 1).

The model code calls `record_qk(q, k)` at the exact point where q and k enter the score
product (after head split, rotary and repeat_kv; before any constant scaling of q). While a
reference is being taken, `recording()` installs a list that collects the pairs in execution
order. The rest of the time (tracing, scripting, plain runs) the recorder is None and the
call does nothing, so it leaves no trace in the exported graphs.
"""

import contextlib

import torch

_recorder = None


@torch.jit.unused
def record_qk(q, k):
    """Remember copies of q, k [batch, heads, seq, head_dim] when a recording is active.

    `torch.jit.unused` lets TorchScript compile callers that guard the call with
    `if not torch.jit.is_scripting():` (the scripted BERT) without compiling this body.
    """
    if _recorder is None:
        return
    if torch.jit.is_tracing():
        # A recording during a trace would be a bug in make_models: the trace must stay clean.
        raise RuntimeError("record_qk: recording must not be active while tracing")
    _recorder.append((q.detach().clone(), k.detach().clone()))


@contextlib.contextmanager
def recording():
    """Collect every record_qk call inside the block; yields the list of (q, k) pairs."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("recording() does not nest")
    _recorder = []
    try:
        yield _recorder
    finally:
        _recorder = None
