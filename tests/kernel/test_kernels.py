"""Exactness tests of the eNTK kernels and solvers (entk.md §9), on small float64 models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradient_oracles import kernel, per_logit_jacobians
from torch.func import functional_call

from skillmix.engine.feature_transforms import gram
from skillmix.engine.gradient_units import select_parameters
from skillmix.infra.errors import SkillmixInputError
from skillmix.kernel.kernels import (
    accuracy,
    predictions_to_labels,
    ridge,
    solve_logistic,
    solve_lstsq,
    targets_matrix,
)

D, H, C, N, M = 5, 7, 3, 4, 3


class TwoLayer(torch.nn.Module):
    """f(x) = W2·tanh(W1 x + b1) + b2, plus one parameter the output does not use."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(H, D, generator=g, dtype=torch.float64))
        self.b1 = torch.nn.Parameter(torch.randn(H, generator=g, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(C, H, generator=g, dtype=torch.float64))
        self.b2 = torch.nn.Parameter(torch.randn(C, generator=g, dtype=torch.float64))
        self.unused = torch.nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2 @ torch.tanh(self.w1 @ x + self.b1) + self.b2


def outputs(model, params, x):
    return functional_call(model, params, (x,))


@pytest.fixture
def setup():
    model = TwoLayer()
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(N, D, generator=g, dtype=torch.float64)
    xo = torch.randn(M, D, generator=g, dtype=torch.float64)
    return model, xs, xo


def loop_jacobian(model, x) -> torch.Tensor:
    params = [p for p in model.parameters()]
    rows = []
    for c in range(C):
        grads = torch.autograd.grad(model(x)[c], params, allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def test_t1_jacobians_equal_a_loop_of_autograd(setup):
    model, xs, _ = setup
    jac = per_logit_jacobians(model, outputs, xs, batch_size=3)
    assert jac.shape == (N, C, H * D + H + C * H + C + 2) and jac.dtype == torch.float64
    for i in range(N):
        torch.testing.assert_close(jac[i], loop_jacobian(model, xs[i]), atol=1e-14, rtol=0)
    assert torch.all(jac[:, :, -2:] == 0)  # the unused parameter


def test_t2_sgd_kernel_equals_the_closed_form(setup):
    model, xs, xo = setup
    k = kernel(per_logit_jacobians(model, outputs, xs), per_logit_jacobians(model, outputs, xo), "sgd")
    assert k.shape == (N, C, M, C)
    w1, b1, w2 = model.w1.detach(), model.b1.detach(), model.w2.detach()
    for i in range(N):
        for j in range(M):
            z, z2 = w1 @ xs[i] + b1, w1 @ xo[j] + b1
            h, h2 = torch.tanh(z), torch.tanh(z2)
            s, s2 = 1 - h**2, 1 - h2**2
            for c in range(C):
                for d in range(C):
                    want = float(c == d) * (h @ h2 + 1) + (w2[c] * w2[d] * s * s2).sum() * (xs[i] @ xo[j] + 1)
                    assert abs(float(k[i, c, j, d]) - float(want)) < 1e-12


def test_t4_t5_sign_kernels(setup):
    model, xs, xo = setup
    jt, jo = per_logit_jacobians(model, outputs, xs), per_logit_jacobians(model, outputs, xo)
    asym = kernel(jt, jo, "asymmetric_signgd")
    assert asym.shape == (2, N, C, M, C)
    torch.testing.assert_close(asym[0], torch.einsum("icp,jdp->icjd", jt.sign(), jo), atol=1e-14, rtol=0)
    torch.testing.assert_close(asym[1], torch.einsum("icp,jdp->icjd", jt, jo.sign()), atol=1e-14, rtol=0)
    # on the training set, the flipped kernel is the transpose of the first
    self_asym = kernel(jt, jt, "asymmetric_signgd")
    torch.testing.assert_close(self_asym[1], self_asym[0].permute(2, 3, 0, 1), atol=1e-14, rtol=0)
    sign = kernel(jt, jo, "signgd")
    assert torch.equal(sign, sign.round())  # integer-valued
    nnz = (jt != 0).sum(dim=2).to(torch.float64)  # [N, C]
    assert torch.all(sign.abs() <= nnz[:, :, None, None])
    assert torch.all(jt.sign()[:, :, -2:] == 0)  # the unused parameter has sign 0


def test_t6_one_sgd_step_moves_outputs_by_the_kernel(setup):
    model, xs, xo = setup
    k = kernel(per_logit_jacobians(model, outputs, xo), per_logit_jacobians(model, outputs, xs), "sgd")
    y = torch.randn(N, C, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    before = torch.stack([model(x) for x in xo]).detach()
    r = (torch.stack([model(x) for x in xs]) - y).detach()  # ½·MSE residuals
    loss = 0.5 * ((torch.stack([model(x) for x in xs]) - y) ** 2).sum()
    loss.backward()
    eta = 1e-6
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= eta * p.grad
    after = torch.stack([model(x) for x in xo]).detach()
    predicted = -eta * torch.einsum("jcid,id->jc", k, r)
    # first order in eta: the error is O(eta^2), relative to the size of the change
    scale = float(predicted.abs().max())
    assert scale > 1e-8
    torch.testing.assert_close(after - before, predicted, rtol=0, atol=1e-5 * scale)


def test_t7_one_signgd_step_follows_the_asymmetric_kernel(setup):
    """One output, batch 1: a SignGD step on ½(f(x_i) − y)² moves f(x_j) by
    −η·sign(r)·⟨g(x_j), sign g(x_i)⟩, i.e. by the asymmetric kernel [0] read from i to j."""
    model, xs, xo = setup

    def first(model, params, x):
        return functional_call(model, params, (x,))[:1]

    k = kernel(
        per_logit_jacobians(model, first, xs[:1]), per_logit_jacobians(model, first, xo), "asymmetric_signgd"
    )
    before = torch.stack([model(x)[0] for x in xo]).detach()
    r = float(model(xs[0])[0]) - 0.3
    (0.5 * (model(xs[0])[0] - 0.3) ** 2).backward()
    eta = 1e-6
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= eta * torch.sign(p.grad)
    after = torch.stack([model(x)[0] for x in xo]).detach()
    predicted = -eta * np.sign(r) * k[0, 0, 0, :, 0]
    scale = float(predicted.abs().max())
    assert scale > 1e-8
    torch.testing.assert_close(after - before, predicted, rtol=0, atol=1e-5 * scale)


def test_t9_t10_linear_model_gradient_descent_equals_kernel_regression_with_f0():
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(C, D + 1, generator=g, dtype=torch.float64)
    lin = torch.nn.Linear(D, C, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(w0[:, :D])
        lin.bias.copy_(w0[:, D])
    xs = torch.randn(N, D, generator=g, dtype=torch.float64)
    xo = torch.randn(M, D, generator=g, dtype=torch.float64)
    y = torch.randn(N, C, generator=g, dtype=torch.float64)
    jt = per_logit_jacobians(lin, outputs, xs)
    jo = per_logit_jacobians(lin, outputs, xo)
    f0_train = lin(xs).detach()
    f0_test = lin(xo).detach()
    # closed form
    k_tt, k_to = kernel(jt, jt, "sgd"), kernel(jt, jo, "sgd")
    result = solve_lstsq(
        k_tt, y.numpy().reshape(-1), k_to, f0_train=f0_train.numpy(), f0_test=f0_test.numpy()
    )
    # 20k steps of gradient descent on ½·MSE
    xa = torch.cat([xs, torch.ones(N, 1, dtype=torch.float64)], dim=1)
    w = w0.clone()
    eta = 0.9 / float(torch.linalg.eigvalsh(xa @ xa.T).max())
    for _ in range(20000):
        w -= eta * (xa @ w.T - y).T @ xa
    gd = torch.cat([xo, torch.ones(M, 1, dtype=torch.float64)], dim=1) @ w.T
    np.testing.assert_allclose(result.predictions, gd.numpy().reshape(-1), atol=1e-11, rtol=0)
    # lstsq interpolates the training targets for a full-rank kernel
    fit = solve_lstsq(k_tt, y.numpy().reshape(-1), k_tt, f0_train=f0_train.numpy(), f0_test=f0_train.numpy())
    np.testing.assert_allclose(fit.predictions, y.numpy().reshape(-1), atol=1e-11)


def test_t11_blocks_do_not_change_the_kernel():
    g = torch.Generator().manual_seed(4)
    rows = torch.randn(7, 2, 30, generator=g, dtype=torch.float64)
    cols = torch.randn(5, 2, 30, generator=g, dtype=torch.float64)
    whole = gram(rows, cols, row_block=7, col_block=5)
    for rb, cb in ((3, 2), (1, 1), (4, 5), (100, 3)):
        torch.testing.assert_close(gram(rows, cols, row_block=rb, col_block=cb), whole, atol=1e-14, rtol=0)
    torch.testing.assert_close(whole, torch.einsum("icp,jdp->icjd", rows, cols), atol=1e-13, rtol=0)


def test_relative_ridge_and_target_conversions():
    g = np.random.default_rng(5)
    a = g.normal(size=(6, 6))
    k = a @ a.T
    top = np.linalg.eigvalsh(k).max()
    np.testing.assert_allclose(ridge(k, 0.1), k + 0.1 * top * np.eye(6), atol=1e-12)
    y = g.normal(size=6)
    res = solve_lstsq(k.reshape(6, 1, 6, 1), y, k.reshape(6, 1, 6, 1), reg=0.1)
    np.testing.assert_allclose(res.predictions, k @ np.linalg.solve(k + 0.1 * top * np.eye(6), y), atol=1e-10)
    assert targets_matrix([0, 1, 1], 1).tolist() == [-1.0, 1.0, 1.0]
    assert targets_matrix([2, 0], 3).tolist() == [0, 0, 1, 1, 0, 0]
    assert predictions_to_labels(np.array([-0.5, 0.2]), 1).tolist() == [0, 1]
    assert predictions_to_labels(np.array([0.1, 0.9, 0.3, 0.7, 0.2, 0.1]), 3).tolist() == [1, 0]
    assert accuracy(np.array([1, 0, 1]), [1, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(SkillmixInputError):
        targets_matrix([0, 3], 3)
    with pytest.raises(SkillmixInputError):
        ridge(k, -1.0)


@pytest.mark.parametrize("n_logits", [1, 2])
def test_solvers_recover_a_separable_problem(n_logits):
    g = np.random.default_rng(6)
    labels = np.repeat([0, 1], 20)
    x = g.normal(scale=0.5, size=(40, 2)) + np.where(labels[:, None] == 1, 3.0, -3.0)
    xt_labels = np.repeat([0, 1], 10)
    xt = g.normal(scale=0.5, size=(20, 2)) + np.where(xt_labels[:, None] == 1, 3.0, -3.0)
    # features per (example, logit): the linear kernel, one block per logit
    eye = np.eye(n_logits)
    feats = np.einsum("np,cd->ncdp", x, eye).reshape(40, n_logits, -1)
    feats_t = np.einsum("np,cd->ncdp", xt, eye).reshape(20, n_logits, -1)
    k_tt = gram(torch.from_numpy(feats), torch.from_numpy(feats))
    k_to = gram(torch.from_numpy(feats), torch.from_numpy(feats_t))
    y = targets_matrix(labels, n_logits)
    for result in (solve_lstsq(k_tt, y, k_to, reg=1e-6), solve_logistic(k_tt, y, k_to)):
        assert accuracy(result.labels, xt_labels) == 1.0, result.settings


def test_parameter_subsets():
    model = TwoLayer()
    names = list(select_parameters(model.named_parameters(), "all"))
    assert names == ["w1", "b1", "w2", "b2", "unused"]
    assert list(select_parameters(model.named_parameters(), "b1,b2")) == ["b1", "b2"]
    with pytest.raises(SkillmixInputError, match="selects no trainable parameter"):
        select_parameters(model.named_parameters(), "lora")


def test_t8_adam_first_step_is_signgd_and_the_less_feature_regimes():
    from skillmix.engine.feature_transforms import AdamState, Transform
    from skillmix.engine.lora_gradients import ParamSlice

    def adam_feature(g, m, v, b1, b2, e, variant):
        return Transform("adam", AdamState(m, v, b1, b2, e, variant))(g, ParamSlice("p", (len(m),), 0))

    g = torch.tensor([0.5, -2.0, 1e-3, -7.0], dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=0.1, eps=1e-300)
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), -0.1 * g.sign(), atol=1e-15, rtol=0)
    # LESS's feature from a zero state: sign-like only where v' = (1 − β2)·g² ≫ ε
    zero = torch.zeros(2, dtype=torch.float64)
    big, small = (
        torch.tensor([0.5, -0.2], dtype=torch.float64),
        torch.tensor([1e-4, -1e-4], dtype=torch.float64),
    )
    feat_big = adam_feature(big, zero, zero, 0.9, 0.999, 1e-8, "less")
    # (1 − β1)·g / sqrt((1 − β2)·g² + ε), which is (1 − β1)/sqrt(1 − β2)·sign g up to ε's share
    torch.testing.assert_close(feat_big, 0.1 * big / (0.001 * big**2 + 1e-8).sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(feat_big, (0.1 / 0.001**0.5) * big.sign(), rtol=2e-4, atol=0)
    feat_small = adam_feature(small, zero, zero, 0.9, 0.999, 1e-8, "less")
    assert torch.all(feat_small.abs() < 0.05 * (0.1 / 0.001**0.5))  # far from the sign regime


def test_t12_rademacher_projection_keeps_the_gram_matrix():
    from skillmix.engine.projection import RademacherProjector

    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 20000, generator=g)
    exact = x @ x.T
    proj = RademacherProjector(20000, 4096, seed=0).project(x) / 4096**0.5
    approx = proj @ proj.T
    rel = (approx - exact).abs().max() / exact.diagonal().mean()
    assert rel < 0.06


def test_binary_collapse_and_the_asym_solver_on_a_separable_problem():
    from skillmix.kernel.kernels import binary_collapse, solve_asym

    g = torch.Generator().manual_seed(8)
    labels = torch.tensor([0, 1] * 15)
    xs = torch.randn(30, 3, generator=g, dtype=torch.float64) * 0.5 + 5.0 * (2 * labels[:, None] - 1)
    xt_labels = torch.tensor([0, 1] * 10)
    xt = torch.randn(20, 3, generator=g, dtype=torch.float64) * 0.5 + 5.0 * (2 * xt_labels[:, None] - 1)
    # two logits (a linear model); the binary output f1 − f0 has Jacobian J1 − J0
    two = torch.nn.Linear(3, 2, dtype=torch.float64)
    jt2, jo2 = per_logit_jacobians(two, outputs, xs), per_logit_jacobians(two, outputs, xt)
    jt, jo = binary_collapse(jt2), binary_collapse(jo2)
    assert jt.shape == (30, 1, jt2.shape[2])
    torch.testing.assert_close(jt[:, 0], jt2[:, 1] - jt2[:, 0])
    with pytest.raises(SkillmixInputError):
        binary_collapse(torch.zeros(2, 3, 4))
    k_tt, k_to = kernel(jt, jt, "asymmetric_signgd"), kernel(jt, jo, "asymmetric_signgd")
    y = targets_matrix(labels.numpy(), 1)
    result = solve_asym(k_tt, y, k_to, gamma=1.0, mix=0.5)
    assert accuracy(result.labels, xt_labels.numpy()) == 1.0
    assert result.settings == {
        "solver": "asym", "gamma": 1.0, "mix": 0.5, "reg": 0.0, "f0": False, "f0_scaling": 1.0
    }  # fmt: skip
    with pytest.raises(SkillmixInputError):
        solve_asym(kernel(jt, jt, "sgd"), y, kernel(jt, jo, "sgd"))  # not an asymmetric pair
