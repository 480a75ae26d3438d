"""Every other operation of a forward pass: which cost class it belongs to, and its size.

Conv2d and Linear modules are recorded by hooks (records.LayerRecord); every
other aten operation a forward pass dispatches is captured (capture.py) and
becomes an :class:`OpRecord`. This module holds the pure part: the table from
aten operator to cost class, and the geometry each class is costed on.

Cost classes:

* ``free``: views and allocations (``view``, ``permute``, ``expand``,
  ``empty``...). They launch no kernel and are not recorded.
* memory-bound *stream* classes, costed on the bytes they read and write:
  ``elementwise`` (add, mul, activations, fill), ``norm`` (batch, layer and
  group norm), ``reduce`` (mean, sum, softmax), ``pool`` (max/avg/adaptive
  pooling) and ``copy`` (copy, clone, cat, roll, index, pad).
* matrix products: ``linear`` (``mm``/``addmm`` outside a Linear module, e.g.
  ``F.linear``; costed as a Linear layer by the profile's layer family),
  ``matmul`` (``bmm``/``baddbmm``) and ``attention`` (fused scaled dot-product
  attention). ``_native_multi_head_attention`` (nn.MultiheadAttention's
  inference fast path) is costed as its parts: the input projection, the
  attention and the output projection.

FLOPs are counted only for the matrix products, with FlopCounterMode's
formulas (torch.utils.flop_counter), so totals agree with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

STREAM_CLASSES = ("elementwise", "norm", "reduce", "pool", "copy")
MATRIX_CLASSES = ("linear", "matmul", "attention")
OP_CLASSES = STREAM_CLASSES + MATRIX_CLASSES

_ELEMENTWISE = """
add add_ sub sub_ rsub mul mul_ div div_ neg exp exp_ log pow pow_ sqrt rsqrt reciprocal abs
relu relu_ clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ hardtanh hardtanh_
sigmoid sigmoid_ silu silu_ gelu gelu_ hardswish hardswish_ hardsigmoid hardsigmoid_ tanh tanh_
leaky_relu leaky_relu_ elu elu_ softplus mish mish_ erf erf_ sign
masked_fill masked_fill_ where eq ne lt le gt ge logical_not logical_and bitwise_not
fill fill_ zero_ zeros zeros_like ones ones_like full full_like new_zeros new_ones new_full scalar_tensor
addcmul addcdiv lerp maximum minimum floor ceil round remainder fmod
native_dropout bernoulli_ uniform_ normal_ rand randn rand_like randn_like arange
""".split()
_NORM = """
native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training cudnn_batch_norm
miopen_batch_norm native_layer_norm native_group_norm _fused_rms_norm
""".split()
_REDUCE = """
mean sum amax amin max min prod _softmax _log_softmax var var_mean std std_mean
linalg_vector_norm norm argmax argmin cumsum logsumexp all any
""".split()
_POOL = """
max_pool2d max_pool2d_with_indices avg_pool2d _adaptive_avg_pool2d adaptive_max_pool2d
_adaptive_avg_pool3d max_pool3d_with_indices avg_pool3d
""".split()
_COPY = """
copy_ _to_copy clone cat stack roll index _unsafe_index index_select gather scatter
constant_pad_nd reflection_pad2d replication_pad2d flip repeat native_channel_shuffle
channel_shuffle pixel_shuffle pixel_unshuffle upsample_nearest2d upsample_bilinear2d
_upsample_nearest_exact2d _upsample_bilinear2d_aa tril triu lift_fresh_copy _index_put_impl_ index_put_
""".split()
# no kernel of their own: allocations, metadata, views the schema does not mark as such
_FREE = """
empty empty_like empty_strided new_empty new_empty_strided lift_fresh _unsafe_view detach
resize_ set_ as_strided_ sym_size sym_stride sym_numel sym_storage_offset is_same_size _local_scalar_dense
dropout feature_dropout alpha_dropout
""".split()
_MATMUL = ("bmm", "baddbmm")
_LINEAR = ("mm", "addmm")
_ATTENTION = ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
              "_scaled_dot_product_fused_attention_overrideable", "_efficient_attention_forward",
              "_flash_attention_forward")
MHA = "_native_multi_head_attention"
# one name for the variants of an operator that run the same kind of kernel (per-operator
# calibrated parameters are keyed by it): in-place forms, and each backend's batch norm
_ALIASES = {"cudnn_batch_norm": "batch_norm", "native_batch_norm": "batch_norm",
            "_native_batch_norm_legit": "batch_norm", "_native_batch_norm_legit_no_training": "batch_norm",
            "miopen_batch_norm": "batch_norm", "native_layer_norm": "layer_norm",
            "native_group_norm": "group_norm", "max_pool2d_with_indices": "max_pool2d",
            "_adaptive_avg_pool2d": "adaptive_avg_pool2d", "_softmax": "softmax",
            "_log_softmax": "log_softmax", "clamp_min": "relu", "_to_copy": "copy_", "clone": "copy_"}
# operators whose speed depends on the length of the rows they reduce over ('inner' axis):
# "spatial" = H x W of an N x C x H x W input, "last" = the last dimension
INNER_RULES = {"batch_norm": "spatial", "layer_norm": "last", "group_norm": "spatial",
               "softmax": "last", "log_softmax": "last"}
# operators that reduce each of ``outer`` slices independently ('outer' axis): batch norm's
# statistics are one reduction per channel, over N x H x W, so few channels leave the GPU
# part-idle however many bytes they move
OUTER_RULES = {"batch_norm": "channels"}


def canonical(packet: str) -> str:
    """The operator name per-operator parameters are keyed by (relu_ -> relu, cudnn_batch_norm -> batch_norm)."""
    name = _ALIASES.get(packet, packet)
    if name.endswith("_") and not name.startswith("_") and name not in ("copy_", "fill_", "zero_"):
        name = _ALIASES.get(name[:-1], name[:-1])
    return name


def inner_size(op: str, shape: Shape) -> int:
    """The reduced-row length of ``op`` (canonical name) on an input of ``shape``; 0 if none."""
    rule = INNER_RULES.get(op)
    if rule is None or not shape:
        return 0
    if rule == "last":
        return int(shape[-1])
    return _prod(shape[2:]) if len(shape) >= 3 else int(shape[-1])


def outer_size(op: str, shape: Shape) -> int:
    """The number of independent reductions of ``op`` (canonical name) on ``shape``; 0 if none."""
    if OUTER_RULES.get(op) is None or len(shape) < 2:
        return 0
    return int(shape[1])


# operators that only write their first argument (its old value is not read)
_WRITE_ONLY = frozenset({"fill_", "zero_", "copy_", "uniform_", "normal_", "bernoulli_"})

OP_TABLE: Dict[str, str] = {}
for _cls, _names in (("elementwise", _ELEMENTWISE), ("norm", _NORM), ("reduce", _REDUCE),
                     ("pool", _POOL), ("copy", _COPY), ("free", _FREE), ("matmul", _MATMUL),
                     ("linear", _LINEAR), ("attention", _ATTENTION)):
    for _name in _names:
        OP_TABLE[_name] = _cls
OP_TABLE[MHA] = "attention"

# the host-side launch class of each cost class (eager mode, see eager.py)
HOST_CLASSES = ("conv", "linear", "matmul", "attention", "elementwise", "norm", "reduce", "pool", "copy")


def op_class(packet_name: str, is_view: bool = False) -> Optional[str]:
    """The cost class of an aten operator (its overload packet name), 'free', or None (unknown)."""
    if is_view:
        return "free"
    return OP_TABLE.get(packet_name)


# --------------------------------------------------------------------- records
Shape = Tuple[int, ...]


@dataclass(frozen=True)
class TensorMeta:
    """What an operation's tensor argument or result is, without the tensor."""

    shape: Shape
    dtype: str
    itemsize: int
    unique: int  # elements actually stored (expanded, stride-0 dimensions count once)


@dataclass(frozen=True)
class Piece:
    """One kernel-like unit of work: a stream of bytes, or a (batched) matrix product.

    Stream classes use ``nbytes``; matrix classes use ``batch`` products of an
    (m x k) by (k x n) matrix (attention: batch = batch x heads, m = query
    length, k = head size, n = key length, two products).
    """

    cls: str
    nbytes: int = 0
    batch: int = 1
    m: int = 1
    k: int = 1
    n: int = 1
    itemsize: int = 4
    op: str = ""  # canonical operator name (stream pieces: per-operator parameters)
    inner: int = 0  # reduced-row length for operators in INNER_RULES, else 0
    outer: int = 0  # independent reductions for operators in OUTER_RULES, else 0


@dataclass(frozen=True)
class OpRecord:
    """One captured operation, attributed to the innermost module that ran it."""

    name: str  # innermost module's qualified name ('' for the root)
    module_type: str
    op: str  # aten operator, e.g. 'add_.Tensor'
    op_class: str
    input_shapes: Tuple[Shape, ...]
    output_shapes: Tuple[Shape, ...]
    dtype: str
    nbytes: int  # bytes read + written
    flops: int  # FlopCounterMode's count for matrix products, else 0
    pieces: Tuple[Piece, ...] = ()
    call_index: int = 0  # position among all recorded calls (layers and ops)
    predicted_ms: Optional[float] = field(default=None)
    energy_j: Optional[float] = None  # with a profile that has power data (energy.py)


def _nbytes(t: TensorMeta) -> int:
    return t.unique * t.itemsize


def stream_bytes(packet: str, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta]) -> int:
    """Bytes an operation reads and writes: its tensor inputs and outputs, stored elements only."""
    reads = list(inputs)
    if packet in _WRITE_ONLY and reads:
        reads = reads[1:]  # the destination is written, not read
    return sum(_nbytes(t) for t in reads) + sum(_nbytes(t) for t in outputs)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def matrix_pieces(packet: str, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta],
                  args: Sequence[object] = ()) -> Tuple[Piece, ...]:
    """The matrix products of a matmul, linear or attention operation."""
    item = inputs[0].itemsize if inputs else 4
    if packet in _LINEAR:
        a, b = (inputs[0], inputs[1]) if packet == "mm" else (inputs[1], inputs[2])
        return (Piece("linear", m=a.shape[0], k=a.shape[1], n=b.shape[1], itemsize=item),)
    if packet in _MATMUL:
        a, b = (inputs[0], inputs[1]) if packet == "bmm" else (inputs[1], inputs[2])
        return (Piece("matmul", batch=a.shape[0], m=a.shape[1], k=a.shape[2], n=b.shape[2], itemsize=item),)
    if packet == MHA:
        # _native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, ...)
        q = inputs[0]
        embed, heads = int(args[3]), int(args[4])
        batch, seq = (q.shape[0], q.shape[1]) if len(q.shape) == 3 else (1, q.shape[0])
        kv_len = inputs[1].shape[-2] if len(inputs) > 1 and len(inputs[1].shape) >= 2 else seq
        d = embed // heads
        return (Piece("linear", m=batch * seq, k=embed, n=3 * embed, itemsize=item),
                Piece("attention", batch=batch * heads, m=seq, k=d, n=kv_len, itemsize=item),
                Piece("linear", m=batch * seq, k=embed, n=embed, itemsize=item))
    # fused attention: query (b, h, s_q, d), key (b, h, s_k, d)
    q, k = inputs[0], inputs[1]
    return (Piece("attention", batch=_prod(q.shape[:-2]), m=q.shape[-2], k=q.shape[-1], n=k.shape[-2],
                  itemsize=item),)


def mha_pieces(query: Shape, key: Shape, embed: int, heads: int, batch_first: bool, kdim: int, vdim: int,
               self_attention: bool, itemsize: int) -> Tuple[Piece, ...]:
    """nn.MultiheadAttention's work, whichever path runs it (fused on a GPU, decomposed elsewhere):
    the input projections, the attention and the output projection."""
    if len(query) == 2:  # unbatched (L, E)
        batch, q_len, kv_len = 1, query[0], key[0]
    elif batch_first:
        batch, q_len, kv_len = query[0], query[1], key[1]
    else:
        batch, q_len, kv_len = query[1], query[0], key[0]
    rows_q, rows_kv = batch * q_len, batch * kv_len
    if self_attention:
        proj = (Piece("linear", m=rows_q, k=embed, n=3 * embed, itemsize=itemsize),)
    else:
        proj = (Piece("linear", m=rows_q, k=embed, n=embed, itemsize=itemsize),
                Piece("linear", m=rows_kv, k=kdim, n=embed, itemsize=itemsize),
                Piece("linear", m=rows_kv, k=vdim, n=embed, itemsize=itemsize))
    return proj + (Piece("attention", batch=batch * heads, m=q_len, k=embed // heads, n=kv_len, itemsize=itemsize),
                   Piece("linear", m=rows_q, k=embed, n=embed, itemsize=itemsize))


def piece_bytes(p: Piece) -> int:
    """Bytes a piece reads and writes: a stream's own; a product's operands and result
    (attention: queries, keys, values and output)."""
    if p.cls == "attention":
        return p.itemsize * p.batch * (2 * p.m * p.k + 2 * p.n * p.k)
    if p.cls in MATRIX_CLASSES:
        return p.itemsize * p.batch * (p.m * p.k + p.k * p.n + p.m * p.n)
    return p.nbytes


def piece_macs(p: Piece) -> int:
    """Multiply-accumulates of a matrix piece (attention: its two products)."""
    macs = p.batch * p.m * p.k * p.n
    return 2 * macs if p.cls == "attention" else macs


def matrix_flops(func, pieces: Sequence[Piece], args, kwargs, out) -> int:
    """FLOPs as FlopCounterMode counts them: its own formula where it has one for ``func``
    (called on the real arguments, as FlopCounterMode does), else 2 per multiply-accumulate."""
    from torch.utils.flop_counter import flop_registry

    formula = flop_registry.get(func.overloadpacket)
    if formula is not None:
        return int(formula(*args, **(kwargs or {}), out_val=out))
    return sum(2 * piece_macs(p) for p in pieces)
