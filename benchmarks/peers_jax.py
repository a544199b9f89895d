"""JAX peers for bench_train.py (optional: the ``bench`` extra installs jax, CPU build).

The same network, loss and optimizer as the other rows (Linear-ReLU-...-Linear, softmax +
cross-entropy on int labels, mean over the batch, plain SGD lr 0.01, float32), the same data,
and the same batches: each epoch draws a NumPy permutation and cuts it into batches of B rows
(the last one shorter). X and y sit on the device; each step gathers its rows there.

- **jax-step**: one ``jax.jit`` train step (gather, forward, loss, ``jax.grad``, update), called
  from Python for every batch; the epoch loss is summed on the device and read once.
- **jax-scan**: the whole epoch as one jitted ``lax.scan`` over the full batches (the batch index
  matrix is the scanned input), then the jitted step for the remainder batch, if any.

Compilation happens in the warm-up epoch (each distinct batch shape compiles once).
"""

from __future__ import annotations

import numpy as np


class Unavailable(Exception):
    """JAX is not installed here."""


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:
        raise Unavailable("jax not installed (pip install jax, or the bench extra)") from e
    return jax, jnp


def _model(cfg, seed, lr):
    """Initial parameters and the jitted step; shared by both peers."""
    jax, jnp = _jax()
    rng = np.random.default_rng(seed)
    params = []
    for a, b in zip(cfg.sizes[:-1], cfg.sizes[1:]):
        lim = np.sqrt(6.0 / (a + b))
        params.append((jnp.asarray(rng.uniform(-lim, lim, (a, b)).astype(np.float32)), jnp.zeros(b, jnp.float32)))

    def loss_fn(ps, xb, yb):
        h = xb
        for i, (W, b) in enumerate(ps):
            h = h @ W + b
            if i < len(ps) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1)), xb.shape[0]

    def step(ps, X, y, idx):
        (loss, rows), grads = jax.value_and_grad(loss_fn, has_aux=True)(ps, X[idx], y[idx])
        ps = jax.tree_util.tree_map(lambda p, g: p - lr * g, ps, grads)
        return ps, loss * rows

    return jax, jnp, params, step


def _batches(cfg, perm):
    full = (cfg.n_samples // cfg.batch_size) * cfg.batch_size
    return perm[:full].reshape(-1, cfg.batch_size), perm[full:]


def setup_jax_step(cfg, X, y, seed, lr):
    jax, jnp, params, step = _model(cfg, seed, lr)
    jstep = jax.jit(step)
    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    rng = np.random.default_rng(seed)
    state = {"params": params}

    def run_epoch():
        perm = rng.permutation(cfg.n_samples)
        ps, total = state["params"], jnp.zeros((), jnp.float32)
        for start in range(0, cfg.n_samples, cfg.batch_size):
            ps, loss = jstep(ps, Xd, yd, jnp.asarray(perm[start : start + cfg.batch_size]))
            total = total + loss
        state["params"] = ps
        float(total)  # one read per epoch; waits for the device

    return run_epoch, f"jax {jax.__version__}, jit step, {jax.devices()[0].platform}"


def setup_jax_scan(cfg, X, y, seed, lr):
    jax, jnp, params, step = _model(cfg, seed, lr)
    jstep = jax.jit(step)

    @jax.jit
    def epoch(ps, X, y, idx_mat):
        ps, losses = jax.lax.scan(lambda p, idx: step(p, X, y, idx), ps, idx_mat)
        return ps, losses.sum()

    Xd, yd = jnp.asarray(X), jnp.asarray(y)
    rng = np.random.default_rng(seed)
    state = {"params": params}

    def run_epoch():
        full, rest = _batches(cfg, rng.permutation(cfg.n_samples))
        ps, total = epoch(state["params"], Xd, yd, jnp.asarray(full))
        if rest.size:
            ps, loss = jstep(ps, Xd, yd, jnp.asarray(rest))
            total = total + loss
        state["params"] = ps
        float(total)

    return run_epoch, f"jax {jax.__version__}, lax.scan epoch, {jax.devices()[0].platform}"
