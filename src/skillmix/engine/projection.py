"""The portable Rademacher projector used for LESS gradient features (docs/methods/less.md#projection).

The matrix P (input_dim × output_dim, entries ±1, no 1/√d scaling) is cut into blocks of 128 output
columns. Block i is the ±1 matrix that TRAK's `BasicProjector` drew on the CPU with
`bernoulli_(0.5) * 2 - 1` from a torch generator seeded with `seed + 1000·i + 100000·model_id`
under torch 2.1.2 (the LESS authors' stack; MKL builds), written here as a closed rule so that
every device computes the same numbers. Equality with TRAK holds for that torch only: on torch
2.13 (CPU), traker 0.3.2's `BasicProjector` draws another stream, whose entries agree with this
rule on 50% of entries, as unrelated signs would (measured 2026-12; docs/methods/less.md). The
rule itself does not depend on the torch version.

* s = the first 32-bit output of MT19937 seeded as `torch.manual_seed(block_seed)` seeds it (the
  standard `init_genrand`, identical to NumPy's legacy `RandomState(block_seed)`);
* MCG31 stream: m = 2^31 − 1, a = 1132489760, x_0 = s mod m (0 → 1), x_k = a^k · x_0 mod m for the
  flat index k = row·128 + col inside the block (row = input coordinate, col 0..127);
* entry = +1 if x_k < 1073741792 (= the float32 rounding of 0.5·m) else −1.

The entries are generated with vectorised int64 modular arithmetic (all products of two residues are
below 2^62, so int64 is exact on every device), a row range at a time, so memory stays bounded by
`block_rows × 128` entries however long the input vector is.
"""

from __future__ import annotations

import numpy as np
import torch

from skillmix.infra.errors import SkillmixInputError

BLOCK = 128
MODULUS = 2**31 - 1
MULTIPLIER = 1132489760
THRESHOLD = 1073741792  # x_k / m < 0.5 in float32  <=>  x_k < 1073741792


def mt19937_first_output(seed: int) -> int:
    """The first 32-bit output of MT19937 seeded with `seed` (torch.manual_seed / legacy NumPy).

    Uses NumPy's legacy `RandomState`, whose stream NumPy guarantees not to change (NEP 19): a
    uint64 draw with range 2^32 returns the raw 32-bit output. Seeds are taken modulo 2^32, as
    torch's CPU generator does.
    """
    if seed < 0:
        raise SkillmixInputError(f"projector block seed must be non-negative, got {seed}")
    rs = np.random.RandomState(seed % 2**32)
    return int(rs.randint(0, 2**32, dtype=np.uint64))


def _mod_powers(base: int, n: int, device: torch.device) -> torch.Tensor:
    """[base^0, base^1, …, base^(n−1)] mod m as int64, by doubling (log2 n vectorised steps)."""
    out = torch.ones(max(n, 1), dtype=torch.int64, device=device)
    filled, mult = 1, base % MODULUS
    while filled < n:
        take = min(filled, n - filled)
        out[filled : filled + take] = out[:take] * mult % MODULUS
        filled += take
        mult = mult * mult % MODULUS
    return out[:n]


def _check_input(x: torch.Tensor, row_offset: int, input_dim: int) -> None:
    """A projector's input: 2-D [rows, features], its coordinates within 0..input_dim."""
    if x.ndim != 2:
        raise SkillmixInputError(f"projector input must be 2-D [rows, features], got shape {tuple(x.shape)}")
    k = x.shape[1]
    if row_offset < 0 or row_offset + k > input_dim:
        raise SkillmixInputError(
            f"projector input covers coordinates {row_offset}..{row_offset + k} outside 0..{input_dim}"
        )


class RademacherProjector:
    """x ↦ x @ P for the portable ±1 matrix P of shape [input_dim, output_dim].

    `project` takes any contiguous range of input coordinates (e.g. one layer's LoRA gradient),
    so a long feature vector can be projected piece by piece and the pieces summed.
    """

    def __init__(
        self, input_dim: int, output_dim: int, seed: int = 0, model_id: int = 0, block_rows: int = 65536
    ) -> None:
        if int(input_dim) <= 0:
            raise SkillmixInputError(f"projector input_dim must be positive, got {input_dim}")
        if int(output_dim) <= 0 or int(output_dim) % BLOCK:
            raise SkillmixInputError(
                f"projector output_dim must be a positive multiple of {BLOCK}, got {output_dim}"
            )
        if int(block_rows) <= 0:
            raise SkillmixInputError(f"projector block_rows must be positive, got {block_rows}")
        if int(seed) < 0 or int(model_id) < 0:
            raise SkillmixInputError(
                f"projector seed and model_id must be non-negative, got {seed}, {model_id}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.seed = int(seed)
        self.model_id = int(model_id)
        self.block_rows = int(block_rows)
        self.n_blocks = self.output_dim // BLOCK
        self.identity = {
            "kind": "rademacher-portable",
            "seed": self.seed,
            "model_id": self.model_id,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "block": BLOCK,
        }
        # x_0 of every block (a Python int < m).
        self._x0 = []
        for i in range(self.n_blocks):
            s = mt19937_first_output(self.block_seed(i)) % MODULUS
            self._x0.append(s if s else 1)
        self._row_step = pow(MULTIPLIER, BLOCK, MODULUS)  # x advances by a^128 per row
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._scratch: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def block_seed(self, i: int) -> int:
        """The torch generator seed of block i (as in TRAK's BasicProjector)."""
        return self.seed + 1000 * int(i) + 100000 * self.model_id

    def _power_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """a^col (col < 128) and a^(128·r) (r < block_rows), mod m, cached per device."""
        if device not in self._tables:
            cols = _mod_powers(MULTIPLIER, BLOCK, device)
            rows = _mod_powers(self._row_step, min(self.block_rows, self.input_dim), device)
            self._tables[device] = (cols, rows)
        return self._tables[device]

    def _rows(self, i: int, start: int, stop: int, device: torch.device, reuse: bool = False) -> torch.Tensor:
        """Rows start..stop of block i as float32 ±1, stop − start ≤ block_rows.

        With reuse=True the result lives in a per-device scratch buffer that the next call
        overwrites (no fresh allocation per block: that dominated the run time).
        """
        cols, rows = self._power_tables(device)
        n = stop - start
        if reuse:
            if device not in self._scratch:
                size = (rows.shape[0], BLOCK)
                self._scratch[device] = (
                    torch.empty(size, dtype=torch.int64, device=device),
                    torch.empty(size, dtype=torch.bool, device=device),
                    torch.empty(size, dtype=torch.float32, device=device),
                )
            ibuf, bbuf, fbuf = (t[:n] for t in self._scratch[device])
        else:
            ibuf = torch.empty(n, BLOCK, dtype=torch.int64, device=device)
            bbuf = torch.empty(n, BLOCK, dtype=torch.bool, device=device)
            fbuf = torch.empty(n, BLOCK, dtype=torch.float32, device=device)
        first = self._x0[i] * pow(self._row_step, start, MODULUS) % MODULUS  # x at (row start, col 0)
        torch.mul((rows[:n] * first).remainder_(MODULUS)[:, None], cols[None, :], out=ibuf)
        ibuf.remainder_(MODULUS)
        torch.lt(ibuf, THRESHOLD, out=bbuf)  # True where the entry is +1
        fbuf.copy_(bbuf)
        return fbuf.mul_(2.0).sub_(1.0)

    def block(self, i: int, rows: slice | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows (input coordinates) of block i as a float32 ±1 tensor [len(rows), 128]."""
        if not 0 <= int(i) < self.n_blocks:
            raise SkillmixInputError(f"projector block {i} out of range 0..{self.n_blocks - 1}")
        start, stop, step = (rows or slice(None)).indices(self.input_dim)
        if step != 1:
            raise SkillmixInputError(f"projector block rows must be a contiguous slice, got step {step}")
        device = torch.device(device)
        pieces = [
            self._rows(int(i), r, min(r + self.block_rows, stop), device)
            for r in range(start, stop, self.block_rows)
        ]
        if not pieces:
            return torch.empty(0, BLOCK, dtype=torch.float32, device=device)
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def project(self, x: torch.Tensor, row_offset: int = 0) -> torch.Tensor:
        """x [n, k] (input coordinates row_offset..row_offset+k) ↦ x @ P[row_offset:row_offset+k], fp32.

        The product is accumulated in float32 whatever x's dtype (cast x first, e.g. to fp16, to
        reproduce the original's rounding). Matrix rows are generated on x's device with exact
        integer arithmetic, at most block_rows × 128 at a time.
        """
        _check_input(x, row_offset, self.input_dim)
        k = x.shape[1]
        xf = x.to(torch.float32)
        out = torch.zeros(x.shape[0], self.output_dim, dtype=torch.float32, device=x.device)
        for r in range(0, k, self.block_rows):
            r_end = min(r + self.block_rows, k)
            xs = xf[:, r:r_end]
            for i in range(self.n_blocks):
                p = self._rows(i, row_offset + r, row_offset + r_end, x.device, reuse=True)
                out[:, i * BLOCK : (i + 1) * BLOCK] += single_row_safe_matmul(xs, p)
        return out


def single_row_safe_matmul(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x @ m, with a one-row x computed as part of a two-row product.

    BLAS libraries take a matrix-vector path for a single row whose float32 sums round
    differently from the matrix-matrix path; padding keeps every row's result the same
    whatever the number of rows, so shards and batches of any size agree bit for bit.
    """
    if x.shape[0] != 1:
        return x @ m
    return (torch.cat([x, torch.zeros_like(x)]) @ m)[:1]


def normalise_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each row divided by max(‖row‖₂, eps), in float32 (as torch.nn.functional.normalize).

    Non-finite rows stay non-finite (NaN), so that later stages can find and report them.
    """
    xf = x.to(torch.float32)
    return xf / xf.norm(dim=-1, keepdim=True).clamp_min(eps)


SJLT_HASH_CHUNK = 1 << 22  # hash words drawn per step when building a sketch


class SparseJLProjector:
    """x ↦ x @ S for a sparse JL transform (count sketch) S [input_dim, output_dim], never formed.

    The output columns are cut into `nonzeros` (s) blocks of m = output_dim / s columns. Input
    coordinate j has one nonzero in each block t, at column t·m + h_t(j), of value σ_t(j)/√s with
    σ_t(j) = ±1, so every row of S has unit length and E‖xS‖² = ‖x‖² (variance
    2(‖x‖⁴ − Σ x_j⁴)/output_dim: two coordinates collide in a block with probability 1/m).
    h_t and σ_t are a portable rule: the raw 64-bit words of NumPy's PCG64 seeded with
    `SeedSequence([seed, output_dim, s, t])` (bit-generator streams are stable across NumPy
    versions, NEP 19), word j giving h_t(j) = (w >> 32) mod m and σ_t(j) = +1 if w is even, −1 if odd.

    The hash (s·input_dim bucket indices and signs) is drawn once per projector and kept per
    device; `project` adds each input coordinate into its buckets with `index_add_` (rows
    independent, batch dimension kept), a cost of s additions per coordinate instead of the
    dense matrix's output_dim multiply-adds.
    """

    def __init__(self, input_dim: int, output_dim: int, seed: int = 0, nonzeros: int = 1) -> None:
        if int(input_dim) <= 0:
            raise SkillmixInputError(f"sparse projector input_dim must be positive, got {input_dim}")
        if int(nonzeros) <= 0 or int(output_dim) <= 0 or int(output_dim) % int(nonzeros):
            raise SkillmixInputError(
                f"sparse projector: output_dim {output_dim} must be a positive multiple of "
                f"nonzeros {nonzeros}"
            )
        if int(seed) < 0:
            raise SkillmixInputError(f"sparse projector seed must be non-negative, got {seed}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.seed, self.nonzeros = int(seed), int(nonzeros)
        self.identity = {
            "kind": "sjlt",
            "seed": self.seed,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "nonzeros": self.nonzeros,
            "hash": "pcg64-raw",
        }
        buckets, signs = self._hash()
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {
            torch.device("cpu"): (buckets, signs)
        }

    def _hash(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns [s, input_dim] (int64, block offset included) and values [s, input_dim] (float32)."""
        s, m = self.nonzeros, self.output_dim // self.nonzeros
        buckets = np.empty((s, self.input_dim), dtype=np.int64)
        signs = np.empty((s, self.input_dim), dtype=np.float32)
        for t in range(s):
            gen = np.random.PCG64(np.random.SeedSequence([self.seed, self.output_dim, s, t]))
            for lo in range(0, self.input_dim, SJLT_HASH_CHUNK):
                w = gen.random_raw(min(SJLT_HASH_CHUNK, self.input_dim - lo))
                buckets[t, lo : lo + w.size] = (w >> np.uint64(32)) % np.uint64(m) + t * m
                signs[t, lo : lo + w.size] = 1.0 - 2.0 * (w & np.uint64(1)).astype(np.float32)
        signs /= np.float32(np.sqrt(s))
        return torch.from_numpy(buckets), torch.from_numpy(signs)

    def tables(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(columns, values) of the nonzeros, [nonzeros, input_dim] each, on `device` (cached)."""
        device = torch.device(device)
        if device not in self._tables:
            cpu = self._tables[torch.device("cpu")]
            self._tables[device] = (cpu[0].to(device), cpu[1].to(device))
        return self._tables[device]

    def matrix(self) -> torch.Tensor:
        """S as a dense float32 [input_dim, output_dim] tensor (for tests and small sizes)."""
        cols, vals = self.tables()
        out = torch.zeros(self.input_dim, self.output_dim, dtype=torch.float32)
        rows = torch.arange(self.input_dim)
        for t in range(self.nonzeros):
            out[rows, cols[t]] = vals[t]
        return out

    def project(self, x: torch.Tensor, row_offset: int = 0) -> torch.Tensor:
        """x [n, k] (input coordinates row_offset..row_offset+k) ↦ x @ S[row_offset:row_offset+k], fp32.

        Each output element sums its coordinates in input order, whatever n, so batches and
        shards of any size give the same rows (on CPU; CUDA's index_add_ adds atomically, in an
        order that can change the last bits unless torch's deterministic mode is on).
        """
        _check_input(x, row_offset, self.input_dim)
        k = x.shape[1]
        cols, vals = self.tables(x.device)
        xf = x.to(torch.float32)
        out = torch.zeros(x.shape[0], self.output_dim, dtype=torch.float32, device=x.device)
        for t in range(self.nonzeros):
            sl = slice(row_offset, row_offset + k)
            out.index_add_(1, cols[t, sl], xf * vals[t, sl])
        return out
