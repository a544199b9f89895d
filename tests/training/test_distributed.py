"""Data-parallel training (gpumlp.distributed): 2 MPI ranks reach the weights of one process.

The MPI tests launch ``mpiexec -n 2`` on tests/distributed_worker.py, each launch under a
subprocess timeout, and are skipped with the reason when mpi4py or mpiexec is missing
(``pip install -e '.[mpi]'`` provides both). The reference is a single-process run with the
same global batch size, seed and data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gpumlp as gm
from gpumlp.distributed import shard

import distributed_worker as worker
from mpi_launch import launch, mpi, needs_mpi

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Both ranks' weights and histories after training every worker case on 2 ranks."""
    out = tmp_path_factory.mktemp("mpi")
    code, log, _ = launch(str(out))
    assert code == 0, f"mpiexec -n 2 failed with exit code {code}:\n{log[-4000:]}"
    why = "the 2 processes did not form one MPI job (is mpiexec from another MPI than mpi4py's?)"
    assert "of 2: done" in log, f"{why}:\n{log}"
    return [np.load(out / f"rank{r}.npz") for r in range(2)]


@mpi
@needs_mpi
@pytest.mark.parametrize("case", list(worker.CASES))
def test_two_ranks_equal_one_process(two_ranks: list, case: str) -> None:
    rank0, rank1 = two_ranks
    weights, history = worker.train(case)  # one process, same global batch, seed and data
    tol = TOLERANCE[worker.CASES[case]["dtype"]]
    start = gm.MLP(worker.SIZES, hidden_activation="tanh", seed=100, dtype="float64").get_weights()
    for i, (W, b) in enumerate(weights):
        np.testing.assert_allclose(rank0[f"{case}/W{i}"], W, rtol=0, atol=tol)
        np.testing.assert_allclose(rank0[f"{case}/b{i}"], b, rtol=0, atol=tol)
        assert np.abs(W - start[i][0]).max() > 1e-2  # training moved the weights: the check is not vacuous
    for key, values in history.items():
        assert len(values) == worker.EPOCHS
        np.testing.assert_allclose(rank0[f"{case}/{key}"], values, rtol=tol, atol=0)
    for key in (k for k in rank0.files if k.startswith(case + "/")):
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=f"{key} differs between the ranks")


@mpi
@needs_mpi
def test_a_rank_that_raises_stops_every_rank(tmp_path: Path) -> None:
    code, log, _ = launch(str(tmp_path), "--fail", "1:2:raise")
    assert code != 0
    assert "rank 1 fails on purpose in epoch 2" in log
    assert "rank 1 of 2 stopped with RuntimeError; aborting all ranks" in log
    assert not list(tmp_path.glob("rank*.npz"))


@mpi
@needs_mpi
def test_a_rank_that_dies_stops_every_rank(tmp_path: Path) -> None:
    code, log, _ = launch(str(tmp_path), "--fail", "1:2:exit")
    assert code != 0, log
    assert not list(tmp_path.glob("rank*.npz"))


@mpi
@needs_mpi
def test_a_rank_that_hangs_times_out_with_a_clear_error(tmp_path: Path) -> None:
    # 8 s is generous: a busy CI core must not trip it early
    code, log, seconds = launch(str(tmp_path), "--fail", "1:2:hang", env={"GPUMLP_MPI_TIMEOUT": "8"})
    assert code != 0
    assert "DistributedError: rank 0 of 2 waited 8 s in the gradient allreduce" in log, log[-4000:]
    assert "rank 0 of 2 stopped with DistributedError; aborting all ranks" in log
    assert seconds < 60  # the 600 s sleep of rank 1 was cut short by the abort


# ----- the pieces, without MPI ---------------------------------------------------------------
@pytest.mark.parametrize("rows, size", [(10, 2), (7, 2), (1, 2), (0, 3), (103, 4), (5, 8)])
def test_shards_split_a_batch_into_near_equal_contiguous_parts(rows: int, size: int) -> None:
    parts = [shard(40, 40 + rows, r, size) for r in range(size)]
    assert parts[0][0] == 40 and parts[-1][1] == 40 + rows
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    lengths = [hi - lo for lo, hi in parts]
    assert max(lengths) - min(lengths) <= 1 and sum(lengths) == rows


@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict"])
def test_workspace_gradients_pack_into_one_buffer(backend_name: str, rng: np.random.Generator) -> None:
    model = gm.MLP([5, 7, 3], hidden_activation="tanh", dtype="float64", backend=backend_name, seed=0)
    X, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    ws = model.workspace(6)
    ws.Z[0] = model.ops.copy(model.to_device(X))
    T = model.to_device(gm.one_hot(y, 3, dtype="float64"))
    model.forward_into(ws)
    model.backward_into(ws, T, "cross_entropy", 1.0 / 6)
    flat = gm.to_numpy(ws.pack_grads(model.ops))
    expected = gm.numerical_gradients(model, X, y)  # central differences, [dW_1, db_1, dW_2, db_2]
    packed, at = [], 0
    for g in expected:  # each gradient starts on a multiple of 64 elements; the gaps stay zero
        packed.append(flat[at : at + g.size].reshape(g.shape))
        gap = -(-g.size // 64) * 64
        assert not flat[at + g.size : at + gap].any()
        at += gap
    assert flat.size == at
    for got, want, view in zip(packed, expected, ws.flat_grad_list()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(gm.to_numpy(view), got)  # ws.grads are the buffer's views


# ----- ranks that differ before training (issue 12 items 17, 18): an error on every rank, never a hang
@mpi
@needs_mpi
@pytest.mark.parametrize(
    "kind, rank1, rank0",
    [
        (
            "nan",
            "ValueError: X contains NaN",
            "rank 1 of 2 failed its checks, so no rank trains: ValueError: X contains",
        ),
        ("bad_resume", "no-such-checkpoint.npz", "rank 1 of 2 failed its checks, so no rank trains"),
        ("clip_norm", "clip_norm: rank 0 has None, rank 1 has 1.0", "clip_norm: rank 0 has None, rank 1 has 1.0"),
        ("lr", "optimizer: rank 0 has ('sgd', {'lr': 0.1,", "rank 1 has ('sgd', {'lr': 0.2,"),
        ("l2", "l2: rank 0 has 0.0, rank 1 has 0.001", "l2: rank 0 has 0.0, rank 1 has 0.001"),
        ("batch_size", "batch_size: rank 0 has 8, rank 1 has 9", "batch_size: rank 0 has 8, rank 1 has 9"),
        ("epochs", "epochs: rank 0 has 2, rank 1 has 3", "epochs: rank 0 has 2, rank 1 has 3"),
        ("threshold", "divergence_threshold: rank 0 has 10000.0, rank 1 has 10.0", "divergence_threshold: rank 0"),
        ("resume", "resume: rank 0 has 'epoch 1, digest", "rank 1 has None"),
    ],
)
def test_ranks_that_differ_before_training_all_stop_with_an_error(
    tmp_path: Path, kind: str, rank1: str, rank0: str
) -> None:
    # 30 s: the timeout would only end a hang that the start check failed to prevent
    code, log, seconds = launch(str(tmp_path), "--hostile", kind, env={"GPUMLP_MPI_TIMEOUT": "30"})
    assert code == 0, log[-4000:]
    outcome = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert rank1 in outcome[1] and rank0 in outcome[0], outcome
    assert "trained" not in outcome and "waited" not in log
    assert seconds < 30  # answered by the start check, not by the timeout
