"""The CPU fast path: the optimizer's update fused into the backward pass (Ops.fused_update).

The same math as ``backward_into`` + L2 + ``optimizer.step``, in another order: each dW_l is
made in blocks of rows (Ops.weight_blocks) that are applied as soon as they are made, so no
full gradient is stored and each block is still in cache when the update reads it. It is
chosen inside :func:`gpumlp.training.step.train_step`, where it replaces the backward pass and
the update; it cannot serve steps that need the whole gradient first (an allreduce across
ranks, a global-norm clip), nor an optimizer whose own ``step`` must see every gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..network import MLP
    from ..optimizers import Optimizer
    from ..workspace import Workspace


def can_fuse(ops: Any, optimizer: Optimizer, ranks: int, clip_norm: float | None) -> bool:
    """True when a step on ``ops`` with ``optimizer`` may take the fused path: the Ops has it,
    the optimizer allows it (:attr:`Optimizer.fusable`), one process, no clipping."""
    return bool(ops.fused_update and optimizer.fusable and ranks == 1 and clip_norm is None)


def backward_update(
    model: MLP, ws: Workspace, T: Any, loss: str, scale: float, l2: float, optimizer: Optimizer, weights: Any = None
) -> None:
    """Backward pass of scale·Σ_n w_n ℓ_n and one optimizer step, fused, after ``model.forward_into(ws)``
    (``weights`` w as for ``MLP.backward_into``).

    D_{l-1} is taken before W_l changes; each Z_{l-1} (l > 1) is spent as scratch by the last
    use of it, the activation backward. When the update is p ← p + c·∇E (plain SGD, c = −η;
    :attr:`Optimizer.prescale`), c rides along in the deltas (they are linear in D_L), and
    W_l ← (1 + cλ)W_l + Z_{l-1}ᵀ D_l is one GEMM where the Ops has a GEMM with β
    (Ops.gemm_update), else each block is added as it comes; b_l ← b_l + 1ᵀD_l is then made by
    the kernel that makes D_l where the Ops offers that (CupyOps: ``output_delta_add_bias``,
    ``backprop_add_bias``), else by ``add_column_sums`` in one kernel, else as an update.
    """
    Z, D, ops, layers = ws.Z, ws.D, model.ops, model.layers
    if ws.bias_grads is None:
        ws.bias_grads = [ops.alloc((n,), model.xp_dtype) for n in model.sizes[1:]]
    numbered = list(enumerate(model.params))  # the optimizer's slot of each parameter
    by_layer = list(zip(numbered[0::2], numbered[1::2]))  # ((slot, W_l), (slot, b_l)) for l = 1 … L
    L = len(layers)
    c = optimizer.prescale
    update = optimizer.update if c is None else optimizer.apply_prescaled
    if c is not None:
        scale, l2 = scale * c, l2 * c
    optimizer.begin_step()
    # collect: the optimizer takes whole gradients in ws.grads and applies them all at once (the
    # device loop's multi-tensor update), so the full gradient exists after all
    collect = c is None and getattr(optimizer, "collects_grads", False)
    # b_l ← b_l + 1ᵀD_l (collect: db_l = 1ᵀD_l) made by the kernel that makes D_l, where the Ops can
    fold = weights is None and (c is not None or collect) and hasattr(ops, "backprop_add_bias")
    target = ws.db if collect else (lambda l: by_layer[l - 1][1][1])  # what that kernel writes for layer l
    if fold:
        D[L], bias_done = ops.output_delta_add_bias(
            model.output_activation, loss, Z[L], T, scale, D[L], target(L), assign=collect
        )
    else:
        D[L], bias_done = ops.output_delta(model.output_activation, loss, Z[L], T, scale, out=D[L]), False
        if weights is not None:  # per-sample weights scale each sample's delta (and so every gradient)
            D[L] = ops.scale_rows(D[L], weights)
    for l in range(L, 0, -1):
        (iW, W), (ib, b) = by_layer[l - 1]
        if l > 1:
            D[l - 1] = ops.gemm(D[l], W, out=D[l - 1], trans_b=True)
        if collect:
            g = ops.gemm(Z[l - 1], D[l], out=ws.dW(l), trans_a=True)
            update(iW, W, ops.add_scaled(g, l2, W) if l2 else g)
            update(ib, b, ws.db(l) if bias_done else ops.sum_rows(D[l], out=ws.db(l)))
            bias_done = True
        elif c is None or not ops.gemm_update(W, Z[l - 1], D[l], 1.0, 1.0 + l2, trans_a=True):
            if ws.update_plan is None:
                ws.allocate_update_plan(model)
            for rows, buf in ws.update_plan[l - 1]:  # dW_l = Z_{l-1}ᵀ D_l (+ λ W_l), block by block
                Zb, Wb = (Z[l - 1], W) if rows is None else (Z[l - 1][:, rows], W[rows])
                g = ops.gemm(Zb, D[l], out=buf, trans_a=True)
                if l2:
                    g = ops.add_scaled(g, l2, Wb)
                update(iW, Wb, g, rows)
        if not bias_done and (c is None or not getattr(ops, "add_column_sums", _no)(b, D[l])):
            update(ib, b, ops.sum_rows(D[l], out=ws.bias_grads[l - 1]))
        bias_done = False
        if l > 1:
            act = model.activations[l - 2]
            bias_done = fold and ops.backprop_add_bias(act, Z[l - 1], D[l - 1], target(l - 1), assign=collect)
            if not bias_done:
                D[l - 1] = ops.backprop_activation(act, Z[l - 1], D[l - 1], consume_z=True)


def _no(*args: Any) -> bool:
    """The answer of an Ops without ``add_column_sums`` (the prescaled bias update in one kernel)."""
    return False
