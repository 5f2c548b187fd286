"""The AsK-LS solver honours kernel.reg, kernel.f0 and kernel.f0_scaling as the original's
AsymmetricLstsqKernelSolver does (ridge on the train kernel; targets y − f0/s; + f0/s on
predictions), checked against its defining equations on a random asymmetric kernel pair."""

from __future__ import annotations

import numpy as np
import pytest

from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.kernel.kernels import solve_asym, solve_lstsq
from skillmix.kernel.task_kernels import solve_kernels

N, M = 8, 5


def pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An asymmetric train pair [2, N, 1, N, 1] (K[1] of train = K[0]ᵀ), a test pair, ±1 targets and
    initial outputs of train and test."""
    rng = np.random.default_rng(seed)
    sign, grad = np.sign(rng.normal(size=(N + M, 6))), rng.normal(size=(N + M, 6))
    k0 = sign[:N] @ grad.T  # ⟨sign g(x_i), g(x)⟩ over train and test columns
    k1 = grad[:N] @ sign.T  # ⟨g(x_i), sign g(x)⟩
    train = np.stack([k0[:, :N], k1[:, :N]]).reshape(2, N, 1, N, 1)
    test = np.stack([k0[:, N:], k1[:, N:]]).reshape(2, N, 1, M, 1)
    y = np.where(rng.random(N) < 0.5, -1.0, 1.0)
    return train, test, y, rng.normal(size=(N, 1)), rng.normal(size=(M, 1))


def by_the_equations(train, test, y, gamma, mix, reg, f0_train=None, f0_test=None, s=1.0) -> np.ndarray:
    """Scores from the AsK-LS equations written out: K_λ = K0 + λ·‖K0‖₂·I, r = y − f0/s,
    H = diag(r) K_λ diag(r), [[I/γ, H], [Hᵀ, I/γ]]·[α; β] = 1, score = mix·K0*ᵀ(α⊙r) +
    (1 − mix)·K1*ᵀ(β⊙r) + f0*/s."""
    k0 = train[0].reshape(N, N)
    k_reg = k0 + reg * np.linalg.svd(k0, compute_uv=False).max() * np.eye(N)
    r = y if f0_train is None else y - f0_train.reshape(-1) / s
    h = np.diag(r) @ k_reg @ np.diag(r)
    system = np.zeros((2 * N, 2 * N))
    system[:N, :N] = system[N:, N:] = np.eye(N) / gamma
    system[:N, N:], system[N:, :N] = h, h.T
    coef = np.linalg.solve(system, np.ones(2 * N))
    alpha, beta = coef[:N], coef[N:]
    score = mix * test[0].reshape(N, M).T @ (alpha * r) + (1 - mix) * test[1].reshape(N, M).T @ (beta * r)
    return score if f0_test is None else score + f0_test.reshape(-1) / s


@pytest.mark.parametrize(
    ("reg", "use_f0", "s"), [(0.0, False, 1.0), (0.1, False, 1.0), (0.0, True, 1.0), (0.05, True, 4.0)]
)
def test_asym_follows_its_equations(reg: float, use_f0: bool, s: float) -> None:
    train, test, y, f0_train, f0_test = pair()
    f0 = {"f0_train": f0_train, "f0_test": f0_test} if use_f0 else {}
    result = solve_asym(train, y, test, gamma=0.7, mix=0.3, reg=reg, f0_scaling=s, **f0)
    want = by_the_equations(train, test, y, 0.7, 0.3, reg, s=s, **f0)
    np.testing.assert_allclose(result.predictions, want, rtol=1e-9, atol=1e-9)
    settings = {"solver": "asym", "gamma": 0.7, "mix": 0.3, "reg": reg, "f0": use_f0, "f0_scaling": s}
    assert result.settings == settings


def test_asym_settings_change_the_solution_and_defaults_do_not() -> None:
    train, test, y, f0_train, f0_test = pair(1)
    plain = solve_asym(train, y, test).predictions
    np.testing.assert_array_equal(solve_asym(train, y, test, reg=0.0).predictions, plain)
    assert not np.allclose(solve_asym(train, y, test, reg=0.5).predictions, plain)
    with_f0 = solve_asym(train, y, test, f0_train=f0_train, f0_test=f0_test).predictions
    assert not np.allclose(with_f0, plain)
    zeros = solve_asym(train, y, test, f0_train=0 * f0_train, f0_test=0 * f0_test).predictions
    np.testing.assert_allclose(zeros, plain, rtol=1e-12, atol=1e-12)
    with pytest.raises(SkillmixInputError, match="f0_train and f0_test"):
        solve_asym(train, y, test, f0_train=f0_train)
    with pytest.raises(SkillmixInputError, match="kernel.f0_scaling"):
        solve_asym(train, y, test, f0_train=f0_train, f0_test=f0_test, f0_scaling=0.0)
    with pytest.raises(SkillmixInputError, match="kernel regularisation"):
        solve_asym(train, y, test, reg=-1.0)


def test_f0_scaling_reaches_lstsq_and_asym_through_solve_kernels() -> None:
    train, test, y, f0_train, f0_test = pair(2)
    data = {
        "K_train": train, "K_val": test, "y_train": (y > 0).astype(np.int64),
        "y_val": np.array([0, 1, 1, 0, 1]), "f0_train": f0_train, "f0_val": f0_test,
    }  # fmt: skip
    table = solve_kernels(data, "asymmetric_signgd", ["lstsq", "asym"], 0.1, True, 0.7, 0.3, f0_scaling=2.0)
    assert table[["solver", "reg", "f0", "f0_scaling"]].to_dict("records") == [
        {"solver": "lstsq", "reg": 0.1, "f0": True, "f0_scaling": 2.0},
        {"solver": "asym", "reg": 0.1, "f0": True, "f0_scaling": 2.0},
    ]
    want = by_the_equations(train, test, y, 0.7, 0.3, 0.1, f0_train, f0_test, 2.0)
    got = solve_asym(train, y, test, 0.7, 0.3, reg=0.1, f0_train=f0_train, f0_test=f0_test, f0_scaling=2.0)
    np.testing.assert_allclose(got.predictions, want, rtol=1e-9, atol=1e-9)
    assert table.loc[1, "accuracy"] == np.mean((want > 0).astype(int) == data["y_val"])
    lstsq = solve_lstsq(train[0], y, test[0], 0.1, f0_train, f0_test, f0_scaling=2.0)
    assert table.loc[0, "accuracy"] == np.mean(lstsq.labels == data["y_val"])
    off = solve_kernels(data, "asymmetric_signgd", ["asym"], 0.0, False, 0.7, 0.3)
    recorded = off[["reg", "f0", "f0_scaling"]].to_dict("records")
    assert recorded == [{"reg": 0.0, "f0": False, "f0_scaling": 1.0}]


def test_f0_scaling_setting() -> None:
    assert complete("kernel", None)["f0_scaling"] == 1.0
    with pytest.raises(SkillmixInputError, match="f0_scaling"):
        complete("kernel", {"f0_scaling": 0})
