"""The LESS gradient datastore: projected, normalised per-example gradient features in shards.

For one warm-up checkpoint and one example set (candidates or target), a shard job takes its
contiguous range of rows and computes its features with the gradient-feature engine
(`skillmix.engine.gradient_units`, `feature_maps`): batched per-example LoRA loss gradients, transformed
(candidates: LESS's Adam feature from the checkpoint's optimizer moments; targets: the plain
gradient, or its sign), projected per parameter slice with the portable Rademacher matrix (so the
full gradient vector is never formed), then each row normalised. Several output widths come from
one pass: the d-wide projection is the first d columns of the widest one
(docs/methods/less.md#projection). Rows are then written as float16 `.npy` shards
(`skillmix.selection.shards.write_shard`) with a Parquet index of example ids.

Row ranges follow `shard_range`, so the shards of any shard count concatenate to the rows of
one unsharded job, bit for bit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from skillmix.engine.encoding import EncodedSet, encode_frame
from skillmix.engine.feature_transforms import (
    PROJECTION_KINDS,
    AdamState,
    FeatureMap,
    Projection,
    Transform,
    project_slices,
)
from skillmix.engine.gradient_units import example_loss_gradients
from skillmix.engine.lora_gradients import labelled_examples
from skillmix.engine.modeling import Runtime
from skillmix.engine.projection import normalise_rows
from skillmix.infra import processes
from skillmix.infra.config import complete
from skillmix.infra.errors import SkillmixInputError
from skillmix.infra.jobs import parse_scatteritem, shard_range
from skillmix.selection.shards import FeatureResult, gather_features, write_feature_shard
from skillmix.selection.warmup import load_epoch_checkpoint

log = logging.getLogger(__name__)

FEATURES = ("adam", "sgd", "sign")


def gradient_features(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    skills: Sequence[str],
    dims: Sequence[int],
    feature: str = "sgd",
    optimizer_state: dict[str, Any] | None = None,
    adam_variant: str = "less",
    projection_seed: int = 0,
    batch_size: int = 16,
    projection_input: str = "float32",
    exact: bool = True,
    projection_kind: str = "dense",
    projection_nonzeros: int = 1,
) -> FeatureResult:
    """Projected, unit-normalised per-example gradient features of every example of `data`.

    `skills` labels each example with its skill, kept alongside the ids. `feature` is
    "adam" (needs `optimizer_state`, a torch AdamW state_dict over exactly the LoRA
    parameters), "sgd" or "sign". Examples without label tokens are excluded and reported; a
    non-finite loss or gradient raises FloatingPointError naming the example.
    `projection_input` "float16" rounds the transformed gradient to float16 before projecting,
    as the original does (docs/methods/less.md#projection); the product is accumulated in float32 either way.
    With `exact`, a width at least the gradient's dimension gets the unprojected transformed
    gradient instead (as many columns as the gradient has, so its cosines are exact); the
    narrower widths are still prefixes of the widest projected one. Without it every width is
    projected, as the original always does (with `projection_kind` "sjlt" a width above the
    gradient's dimension is an error: a sparse sketch wider than its input compresses nothing).
    `projection_kind` "dense" is the portable Rademacher matrix; "sjlt" a sparse JL sketch per
    width with `projection_nonzeros` nonzeros per coordinate (`engine.projection.SparseJLProjector`).
    """
    return gradient_feature_sets(
        model, runtime, pad_id, data, skills, dims, [feature], optimizer_state, adam_variant,
        projection_seed, batch_size, projection_input, exact, projection_kind, projection_nonzeros,
    )[feature]  # fmt: skip


def gradient_feature_sets(
    model: torch.nn.Module,
    runtime: Runtime,
    pad_id: int,
    data: EncodedSet,
    skills: Sequence[str],
    dims: Sequence[int],
    features: Sequence[str],
    optimizer_state: dict[str, Any] | None = None,
    adam_variant: str = "less",
    projection_seed: int = 0,
    batch_size: int = 16,
    projection_input: str = "float32",
    exact: bool = True,
    projection_kind: str = "dense",
    projection_nonzeros: int = 1,
) -> dict[str, FeatureResult]:
    """:func:`gradient_features` of several feature kinds (e.g. "adam" and "sgd") from one pass of
    per-example gradients: one result per kind, same examples, same projection."""
    features, dims = _checked_request(features, dims, projection_input, projection_kind, projection_nonzeros)
    if len(skills) != len(data):
        raise ValueError("one skill label per example is needed")
    kept, excluded = labelled_examples(data)
    model.to(runtime.device)
    stats: dict[str, dict[str, Any]] = {
        f: {"feature": f, "examples": len(data), "excluded": len(excluded)} for f in features
    }
    layout, batches = example_loss_gradients(model, runtime, pad_id, data, kept, "lora", batch_size)
    transforms = _transforms(features, optimizer_state, layout, adam_variant, runtime.device, stats)
    grad_dim = sum(p.numel for p in layout)
    exact_dims = [d for d in dims if exact and d >= grad_dim]
    projected_dims = [d for d in dims if d not in exact_dims]
    if projection_kind == "sjlt" and projected_dims and projected_dims[-1] > grad_dim:
        raise SkillmixInputError(
            f"select.grads.dims: width {projected_dims[-1]} is larger than the gradient's dimension "
            f"{grad_dim}, which a sparse sketch cannot compress; set select.grads.exact to store the "
            f"exact feature, use widths <= {grad_dim}, or projection_kind dense (the original's "
            "projection to any width)"
        )
    projection = None
    if projected_dims:
        projection = Projection(
            grad_dim, projected_dims[-1], projection_seed, runtime.device,
            kind=projection_kind, widths=projected_dims, nonzeros=projection_nonzeros,
        )  # fmt: skip
    pass_ = _FeaturePass(layout, transforms, projection, projection_input, bool(exact_dims), len(kept))
    for pos, grads in tqdm(batches, total=-(-len(kept) // batch_size), mininterval=5.0, desc="gradients"):
        pass_.add(pos, grads)
    results = {}
    for j, (f, transform) in enumerate(zip(features, transforms, strict=True)):
        st = stats[f]
        if f == "adam" and kept:
            st["share_v_above_1e-9"] = transform.large_v / (len(kept) * grad_dim)
        st["grad_dim"] = grad_dim
        st["projection_input"] = projection_input
        st["projector"] = projection.identity if projection is not None else None
        st["exact_dims"] = exact_dims
        feats = {d: normalise_rows(pass_.projected[j][:, projection.columns(d)]) for d in projected_dims}
        feats.update({d: normalise_rows(pass_.raw[j]) for d in exact_dims})
        results[f] = FeatureResult(
            feats,
            [data.ids[i] for i in kept],
            [str(skills[i]) for i in kept],
            excluded,
            st,
        )
    return results


def _checked_request(
    features: Sequence[str], dims: Sequence[int], projection_input: str, kind: str, nonzeros: int
) -> tuple[list[str], list[int]]:
    """The distinct feature kinds (in order) and the distinct widths (ascending) asked for, with
    the projection settings checked before any gradient is computed."""
    if projection_input not in ("float32", "float16"):
        raise SkillmixInputError(f"projection_input must be float32 or float16, got {projection_input!r}")
    if kind not in PROJECTION_KINDS:
        raise SkillmixInputError(
            f"select.grads.projection_kind must be one of {PROJECTION_KINDS}, got {kind!r}"
        )
    odd = [int(d) for d in dims if kind == "sjlt" and (int(nonzeros) < 1 or int(d) % int(nonzeros))]
    if odd:
        raise SkillmixInputError(
            f"select.grads.projection_nonzeros {nonzeros}: sjlt widths must be multiples of it, got {odd}"
        )
    features = list(dict.fromkeys(features))
    bad = [f for f in features if f not in FEATURES]
    if bad or not features:
        raise SkillmixInputError(f"gradient feature must be one of {FEATURES}, got {bad or features!r}")
    dims = sorted({int(d) for d in dims})
    if not dims:
        raise SkillmixInputError("select.grads.dims is empty")
    return features, dims


def _transforms(
    features: Sequence[str],
    optimizer_state: dict[str, Any] | None,
    layout: Sequence[Any],
    adam_variant: str,
    device: torch.device,
    stats: dict[str, dict[str, Any]],
) -> list[Transform]:
    """The transform of each feature kind; Adam's moments (and its settings, into `stats`) from
    the checkpoint's optimizer state."""
    transforms = []
    for f in features:
        if f == "adam":
            if optimizer_state is None:
                raise SkillmixInputError("the Adam feature needs the checkpoint's optimizer state")
            adam = AdamState.from_optimizer(optimizer_state, layout, adam_variant)
            transforms.append(Transform("adam", adam.to(device)))
            stats[f].update(beta1=adam.beta1, beta2=adam.beta2, eps=adam.eps, adam_variant=adam_variant)
        else:
            transforms.append(Transform("sign" if f == "sign" else "sgd"))
    return transforms


class _FeaturePass:
    """The feature rows of every transform, filled batch by batch in one pass over the gradients.

    `projected[j]` [rows, widest projected d] (None without a projection); with `keep_raw` also
    `raw[j]` [rows, gradient dimension], the unprojected transformed gradients, from which the
    projection is taken per parameter slice exactly as a projecting FeatureMap takes it (each
    transform runs once per row).
    """

    def __init__(
        self,
        layout: Sequence[Any],
        transforms: list[Transform],
        projection: Projection | None,
        projection_input: str,
        keep_raw: bool,
        rows: int,
    ) -> None:
        self.layout, self.projection, self.projection_input = layout, projection, projection_input
        grad_dim = sum(p.numel for p in layout)
        self.whole = FeatureMap(layout, transforms) if keep_raw else None
        self.fmap = None if keep_raw else FeatureMap(layout, transforms, projection, projection_input)
        n = len(transforms)
        self.raw = [
            torch.zeros((rows, grad_dim), dtype=torch.float32) if keep_raw else None for _ in range(n)
        ]
        self.projected = [
            torch.zeros((rows, projection.dim), dtype=torch.float32) if projection is not None else None
            for _ in range(n)
        ]

    def add(self, pos: list[int], grads: Any) -> None:
        """The feature rows of one batch of gradients, at rows `pos`."""
        if self.whole is None:
            for j, x in enumerate(self.fmap(grads)):
                self.projected[j][pos] = x.cpu()
            return
        for j, x in enumerate(self.whole(grads)):
            self.raw[j][pos] = x.cpu()
            if self.projection is not None:
                self.projected[j][pos] = project_slices(
                    x, self.layout, self.projection, self.projection_input
                ).cpu()


def build_shard(
    feature: str,
    checkpoint_dir: str | os.PathLike,
    examples_path: str | os.PathLike,
    scatteritem: str,
    feature_paths: dict[int, str | os.PathLike],
    index_path: str | os.PathLike,
    info_path: str | os.PathLike,
    *,
    model_cfg: dict[str, Any],
    lora_cfg: dict[str, Any],
    grads_cfg: dict[str, Any],
    stamp: dict[str, Any] | None = None,
) -> FeatureResult | None:
    """One datastore shard job: the shard's rows of an examples file, features at one checkpoint.

    The examples file is the candidate pool or the target set (both grouped by column `skill`).
    Candidates with feature "adam" use the checkpoint's optimizer moments. In a job of several
    processes each computes a contiguous part of the shard's rows and the first writes them all
    (the same files as one process writes); it returns the features there, None elsewhere.
    """
    grads_cfg = complete("select.grads", grads_cfg)
    model_cfg = complete("model", model_cfg)
    frame = pd.read_parquet(examples_path)
    index, count = parse_scatteritem(scatteritem)
    start, stop = shard_range(len(frame), index, count)
    first, last = shard_range(stop - start, processes.rank() + 1, processes.world_size())
    part = frame.iloc[start + first : start + last]
    model, tokenizer, runtime, opt_state = load_epoch_checkpoint(checkpoint_dir, model_cfg, lora_cfg)
    data = encode_frame(tokenizer, part, str(examples_path), model_cfg["max_length"])
    log.info(
        "shard %s: rows %d..%d of %s (%d examples), feature %s, dims %s",
        scatteritem,
        start + first,
        start + last,
        examples_path,
        len(part),
        feature,
        sorted(feature_paths),
    )
    result = gradient_features(
        model,
        runtime,
        tokenizer.pad_token_id,
        data,
        part["skill"].astype(str).tolist(),
        sorted(feature_paths),
        feature=feature,
        optimizer_state=opt_state if feature == "adam" else None,
        adam_variant=grads_cfg["adam_variant"],
        projection_seed=grads_cfg["projection_seed"],
        batch_size=grads_cfg["batch_size"],
        projection_input=grads_cfg["projection_input"],
        exact=grads_cfg["exact"],
        projection_kind=grads_cfg["projection_kind"],
        projection_nonzeros=grads_cfg["projection_nonzeros"],
    )
    result = gather_features(result)
    if result is None:
        return None
    if "share_v_above_1e-9" in result.stats:
        log.info("share of coordinates with v' > 1e-9: %.4f", result.stats["share_v_above_1e-9"])
    info = {
        "checkpoint": str(checkpoint_dir),
        "examples": str(examples_path),
        "shard": scatteritem,
        "row_range": [start, stop],
    }
    write_feature_shard(result, feature_paths, index_path, info_path, info, stamp)
    return result


def shard_job(
    feature: str,
    checkpoint: str,
    examples: str,
    scatteritem: str,
    dims: list[int],
    features: list[str],
    index: str,
    info: str,
    *,
    model_cfg: dict[str, Any],
    lora_cfg: dict[str, Any],
    grads_cfg: dict[str, Any],
    stamp: dict[str, Any] | None = None,
) -> None:
    """The `grads` rule's job (in each of its processes): :func:`build_shard` with the feature file of
    width dims[i] at features[i]."""
    build_shard(
        feature,
        checkpoint,
        examples,
        scatteritem,
        dict(zip(dims, features, strict=True)),
        index,
        info,
        model_cfg=model_cfg,
        lora_cfg=lora_cfg,
        grads_cfg=grads_cfg,
        stamp=stamp,
    )
