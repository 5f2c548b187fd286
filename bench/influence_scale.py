"""LESS influence over a large synthetic datastore: peak RSS and GB/s vs a plain read (issue 4).

Issue 4 asks for "influence over a synthetic 1M × 8192 float16 datastore (memmap) against 1,000
targets: peak RSS (target < 2 GB) and GB/s against a plain read of the same files".

The store is written once (and reused while its shape matches): per checkpoint, `--shards`
float16 `.npy` shards of seeded random normal rows normalised to unit length, written block by
block so that generation never holds more than one block, plus `--targets` unit target rows
labelled round-robin with `--skills` skills. Then, each in a child process of its own (so
that the peak RSS, the child's VmHWM, belongs to one measurement):

  plain      a sequential read of every shard file into one reusable buffer of the chunk's size;
  influence  `skillmix.selection.influence.influence_scores` over the whole store (wall seconds, store
             bytes / seconds, peak RSS), then a check of three 2,000-row slices of its scores
             (the first rows, rows across a shard boundary, the last rows) against a dense
             float64 numpy computation (mean over each skill of the dot products, weighted
             sum over checkpoints, max over skills), to 1e-5;
  compute    the in-memory part of one chunk: float16 → float32 conversion and the
             [chunk × d] · [d × skills] product, timed on a chunk already in memory and
             scaled to the whole store (no I/O), to tell I/O-bound from compute-bound.

As root the page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before each
measurement, so both reads are cold; otherwise the plain read runs first and the cache state is
reported as found (`Cached:` of /proc/meminfo before each measurement is recorded either way).
GB are 10^9 bytes, MB 10^6. Prints a Markdown table and writes JSON to bench/out/influence_scale.json.

    python bench/influence_scale.py                       # 1M × 8192, 16 shards, 1000 targets
    python bench/influence_scale.py --rows 20000 --dim 512 --shards 3 --targets 50   # quick
    python bench/influence_scale.py --extra-chunk-rows 65536   # also at influence_scores' default
    python bench/influence_scale.py --keep --baseline-src /tmp/old/src   # also an older skillmix's
        influence_scores (PYTHONPATH=<src> in its child), measured in the same invocation
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GB = 1e9
CHECK_ROWS = 2000


# ---------------------------------------------------------------- store


def store_meta(args) -> dict:
    return {
        "rows": args.rows,
        "dim": args.dim,
        "shards": args.shards,
        "targets": args.targets,
        "skills": args.skills,
        "checkpoints": args.checkpoints,
        "seed": args.seed,
        "format": 1,
    }


def shard_rows(rows: int, shards: int) -> list[int]:
    base, extra = divmod(rows, shards)
    return [base + (1 if s < extra else 0) for s in range(shards)]


def shard_paths(root: Path, meta: dict) -> dict[str, list[Path]]:
    return {
        f"ckpt{c}": [root / f"ckpt{c}" / f"candidates_{s:03d}.npy" for s in range(meta["shards"])]
        for c in range(meta["checkpoints"])
    }


def target_paths(root: Path, meta: dict) -> dict[str, Path]:
    return {f"ckpt{c}": root / f"ckpt{c}" / "target.npy" for c in range(meta["checkpoints"])}


def skill_of_targets(meta: dict) -> list[str]:
    return [f"skill-{i % meta['skills']:02d}" for i in range(meta["targets"])]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x.astype(np.float16)


def write_npy(path: Path, n: int, d: int, blocks) -> None:
    """A float16 [n, d] `.npy` written block by block (the header as numpy writes it), then renamed."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f,
            {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")), "fortran_order": False, "shape": (n, d)},
        )
        written = 0
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype="<f2").data)
            written += block.shape[0]
        if written != n:
            raise RuntimeError(f"{path}: wrote {written} rows, expected {n}")
    os.replace(tmp, path)


def store_ok(root: Path, meta: dict) -> bool:
    from skillmix.selection.shards import shard_layout

    try:
        if json.loads((root / "meta.json").read_text()) != meta:
            return False
        for paths in shard_paths(root, meta).values():
            for p, n in zip(paths, shard_rows(meta["rows"], meta["shards"]), strict=True):
                if shard_layout(p)[0] != (n, meta["dim"]):
                    return False
        return all(p.exists() for p in target_paths(root, meta).values())
    except Exception:
        return False


def generate_store(root: Path, meta: dict, block_rows: int = 8192) -> float:
    """Write the store under root (removing what is there); returns seconds."""
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    d = meta["dim"]
    for c, (ckpt, paths) in enumerate(shard_paths(root, meta).items()):
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for s, (path, n) in enumerate(zip(paths, shard_rows(meta["rows"], meta["shards"]), strict=True)):
            rng = np.random.default_rng([meta["seed"], c, s])
            blocks = (unit_rows(rng, min(block_rows, n - i), d) for i in range(0, n, block_rows))
            write_npy(path, n, d, blocks)
            print(
                f"  {ckpt}: shard {s + 1}/{meta['shards']} written ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        rng = np.random.default_rng([meta["seed"], c, 10**6])
        write_npy(target_paths(root, meta)[ckpt], meta["targets"], d, [unit_rows(rng, meta["targets"], d)])
    (root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- children


def proc_status(key: str) -> int:
    """A memory line of /proc/self/status (VmHWM, VmRSS) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child_plain(root: Path, meta: dict, chunk_rows: int) -> dict:
    buf = bytearray(chunk_rows * meta["dim"] * 2)
    view = memoryview(buf)
    base = proc_status("VmRSS")
    total = 0
    t0 = time.perf_counter()
    for paths in shard_paths(root, meta).values():
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    total += n
    seconds = time.perf_counter() - t0
    return {
        "bytes": total,
        "seconds": seconds,
        "gb_per_s": total / GB / seconds,
        "rss_after_imports": base,
        "peak_rss": proc_status("VmHWM"),
    }


def rows_of(paths: list[Path], start: int, stop: int) -> np.ndarray:
    """Rows start..stop of the concatenated shards, read independently of skillmix (memory maps)."""
    parts, offset = [], 0
    for p in paths:
        arr = np.load(p, mmap_mode="r")
        lo, hi = max(start, offset), min(stop, offset + len(arr))
        if hi > lo:
            parts.append(np.asarray(arr[lo - offset : hi - offset]))
        offset += len(arr)
    return np.concatenate(parts)


def dense_scores(root: Path, meta: dict, start: int, stop: int) -> np.ndarray:
    """Scores of rows start..stop computed densely in float64 from the dot products with every target."""
    from skillmix.selection.shards import read_shard

    labels = skill_of_targets(meta)
    uniq = list(dict.fromkeys(labels))
    col = np.array([uniq.index(lab) for lab in labels])
    ckpts = shard_paths(root, meta)
    acc = np.zeros((stop - start, len(uniq)))
    for ckpt, paths in ckpts.items():
        x = rows_of(paths, start, stop).astype(np.float64)
        t = read_shard(target_paths(root, meta)[ckpt], mmap=False).astype(np.float64)
        dots = x @ t.T  # [rows, targets]
        per = np.stack([dots[:, col == j].mean(axis=1) for j in range(len(uniq))], axis=1)
        acc += per / len(ckpts)
    return acc.max(axis=1)


def child_influence(root: Path, meta: dict, chunk_rows: int) -> dict:
    from skillmix.selection.influence import influence_scores

    ckpts = shard_paths(root, meta)
    weights = {c: 1.0 / len(ckpts) for c in ckpts}
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    scores, per_skill = influence_scores(
        ckpts, target_paths(root, meta), skill_of_targets(meta), weights, chunk_rows=chunk_rows
    )
    seconds = time.perf_counter() - t0
    peak = proc_status("VmHWM")
    nbytes = sum(p.stat().st_size for paths in ckpts.values() for p in paths)
    # correctness: first rows, rows across the first shard boundary, last rows
    n = meta["rows"]
    b = shard_rows(n, meta["shards"])[0]
    k = min(CHECK_ROWS, n)
    slices = sorted(
        {(0, k), (max(0, min(b - k // 2, n - k)), max(0, min(b - k // 2, n - k)) + k), (n - k, n)}
    )
    errs = [float(np.abs(scores[a:z] - dense_scores(root, meta, a, z)).max()) for a, z in slices]
    return {
        "bytes": nbytes,
        "seconds": seconds,
        "gb_per_s": nbytes / GB / seconds,
        "rss_after_imports": base,
        "peak_rss": peak,
        "check_slices": slices,
        "check_max_abs_err": max(errs),
        "check_ok": max(errs) <= 1e-5,
        "score_range": [float(scores.min()), float(scores.max())],
        "per_skill_shape": list(per_skill.shape),
    }


def child_compute(root: Path, meta: dict, chunk_rows: int, repeats: int = 3) -> dict:
    """float16 → float32 and the product with the skill means, on one in-memory chunk, scaled up."""
    from skillmix.selection.shards import read_shard

    rows = min(chunk_rows, shard_rows(meta["rows"], meta["shards"])[0])
    ckpt, paths = next(iter(shard_paths(root, meta).items()))
    raw = np.array(read_shard(paths[0])[:rows])
    means = np.random.default_rng(0).standard_normal((meta["skills"], meta["dim"])).astype(np.float32)
    out = np.empty((rows, meta["dim"]), dtype=np.float32)
    conv, mm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = np.empty((rows, meta["dim"]), dtype=np.float32)
        out[:] = raw
        t1 = time.perf_counter()
        _ = out @ means.T
        t2 = time.perf_counter()
        conv.append(t1 - t0)
        mm.append(t2 - t1)
    scale = meta["rows"] * meta["checkpoints"] / rows
    c, m = min(conv) * scale, min(mm) * scale
    nbytes = meta["rows"] * meta["checkpoints"] * meta["dim"] * 2
    return {
        "rows_timed": rows,
        "convert_seconds": c,
        "matmul_seconds": m,
        "compute_seconds": c + m,
        "compute_gb_per_s": nbytes / GB / (c + m),
        "threads": os.cpu_count(),
    }


CHILDREN = {"plain": child_plain, "influence": child_influence, "compute": child_compute}


# ---------------------------------------------------------------- parent


def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def drop_caches() -> bool:
    if os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def measure(mode: str, args, chunk_rows: int, cold: bool, src: str | None = None) -> dict:
    """One child measurement; `src` puts another skillmix source tree first on the child's path."""
    dropped = drop_caches() if cold else False
    cached = meminfo("Cached")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--dir",
        str(args.dir),
        "--chunk-rows",
        str(chunk_rows),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env if src else None)
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(
        {
            "mode": mode,
            "chunk_rows": chunk_rows,
            "caches_dropped": dropped,
            "page_cache_before": cached,
            "src": src or "this checkout",
        }
    )
    return result


def mb(x: float) -> str:
    return f"{x / 1e6:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--skills", type=int, default=10)
    parser.add_argument("--checkpoints", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=8192,
        help="rows per chunk: a chunk costs rows × dim × 6 bytes (float16 read + float32 copy)",
    )
    parser.add_argument(
        "--extra-chunk-rows",
        type=int,
        nargs="*",
        default=[],
        help="also time influence_scores at these chunk sizes (e.g. its default 65536)",
    )
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "out" / "influence_store")
    parser.add_argument("--keep", action="store_true", help="keep the store at the end (default: delete it)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "influence_scale.json")
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="a skillmix src/ folder (e.g. an older commit's) whose influence_scores is timed too",
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        meta = json.loads((args.dir / "meta.json").read_text())
        print(json.dumps(CHILDREN[args.child](args.dir, meta, args.chunk_rows)))
        return

    meta = store_meta(args)
    store_bytes = args.rows * args.dim * 2 * args.checkpoints
    ram = meminfo("MemTotal")
    print(
        f"store: {args.rows} × {args.dim} float16 × {args.checkpoints} checkpoint(s) = "
        f"{store_bytes / GB:.1f} GB in {args.shards} shards/checkpoint; RAM {ram / 2**30:.1f} GiB; "
        f"root: {os.geteuid() == 0}",
        flush=True,
    )
    gen_seconds = None
    if store_ok(args.dir, meta):
        print(f"reusing the store in {args.dir}", flush=True)
    else:
        free = shutil.disk_usage(args.dir.parent if args.dir.parent.exists() else REPO).free
        if free < store_bytes * 1.1:
            sys.exit(
                f"not enough free disk for the store: {free / GB:.1f} GB free, "
                f"{store_bytes / GB:.1f} GB needed"
            )
        args.dir.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating the store in {args.dir} ...", flush=True)
        gen_seconds = generate_store(args.dir, meta)
        print(f"generated in {gen_seconds:.0f} s", flush=True)

    runs = [("plain", args.chunk_rows, None)]
    if args.baseline_src:
        runs.append(("influence", args.chunk_rows, args.baseline_src))
    runs += [("influence", args.chunk_rows, None)]
    runs += [("influence", c, None) for c in args.extra_chunk_rows]
    if args.baseline_src:
        runs.append(("plain", args.chunk_rows, None))  # the disk's rate again, after the influence runs
    results = []
    for mode, chunk, src in runs:
        print(f"measuring {mode} (chunk_rows {chunk}, code: {src or 'this checkout'}) ...", flush=True)
        r = measure(mode, args, chunk, cold=True, src=src)
        print(
            f"  {r['seconds']:.1f} s, {r['gb_per_s']:.2f} GB/s, peak RSS {mb(r['peak_rss'])} MB, "
            f"caches dropped: {r['caches_dropped']}",
            flush=True,
        )
        results.append(r)
    compute = measure("compute", args, args.chunk_rows, cold=False)
    compute.pop("caches_dropped")

    plain = results[0]
    plain_times = ", ".join(f"{r['seconds']:.1f} s" for r in results if r["mode"] == "plain")
    influence_runs = [r for r in results if r["mode"] == "influence"]
    lines = [
        "| code | rows | dim | ckpts | store GB | chunk rows | plain read GB/s | influence s "
        "| influence GB/s | influence / plain | peak RSS MB | RSS after imports MB | check max abs err |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in influence_runs:
        lines.append(
            f"| {r['src']} | {args.rows:,} | {args.dim} | {args.checkpoints} | {store_bytes / GB:.1f} "
            f"| {r['chunk_rows']:,} "
            f"| {plain['gb_per_s']:.2f} | {r['seconds']:.1f} | {r['gb_per_s']:.2f} "
            f"| {r['gb_per_s'] / plain['gb_per_s']:.2f} | {mb(r['peak_rss'])} | {mb(r['rss_after_imports'])} "
            f"| {r['check_max_abs_err']:.1e} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    print()
    print(
        f"plain read: {plain_times}, "
        f"peak RSS {mb(plain['peak_rss'])} MB; caches dropped before "
        f"each measurement: {all(r['caches_dropped'] for r in results)}; page cache before each (GB): "
        f"{[round(r['page_cache_before'] / GB, 2) for r in results]}"
    )
    print(
        f"in-memory compute only (chunk {compute['rows_timed']:,} rows, scaled to the store): "
        f"float16→float32 {compute['convert_seconds']:.1f} s + matmul {compute['matmul_seconds']:.1f} s = "
        f"{compute['compute_seconds']:.1f} s ({compute['compute_gb_per_s']:.2f} GB/s of float16)"
    )
    print(
        f"correctness (scores vs dense float64, {CHECK_ROWS} rows × "
        f"{len(influence_runs[0]['check_slices'])} slices): "
        f"{'ok' if all(r['check_ok'] for r in influence_runs) else 'FAILED'}"
    )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "store": meta,
                "store_bytes": store_bytes,
                "mem_total": ram,
                "cpus": os.cpu_count(),
                "generation_seconds": gen_seconds,
                "results": results,
                "compute": compute,
                "table": table,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.json}")
    if not args.keep:
        shutil.rmtree(args.dir)
        print(f"deleted {args.dir}")
    if not all(r["check_ok"] for r in influence_runs):
        sys.exit("influence scores differ from the dense computation")


if __name__ == "__main__":
    main()
