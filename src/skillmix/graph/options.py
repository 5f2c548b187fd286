"""The ``graph.assemble`` options: how a skills graph's matrix is measured from losses and then
post-processed (clip, threshold, binary edges, diagonal), for learned and gradient graphs alike."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from skillmix.infra.errors import SkillmixInputError

MEASURES = ("end", "window", "steps_to_target")
NORMALISATIONS = ("raw", "relative")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass
class GraphOptions:
    """How a learned graph is computed from the units' loss curves.

    Applied in this order after the deltas are measured: ``normalise``, ``clip_negative``,
    ``threshold``, ``binary_edge_weight``, ``diagonal``.
    """

    measure: str = "end"
    """``end``: loss at the unit's last step; ``window``: mean of the last ``window`` evaluations
    after step 0."""
    window: int = 2
    """Number of evaluations averaged by ``measure: window``."""
    normalise: str = "raw"
    """``raw``: loss decrease; ``relative``: loss decrease divided by the reference loss."""
    clip_negative: bool = False
    """Set negative entries (diagonal included) to 0."""
    threshold: float | None = None
    """Set off-diagonal entries <= threshold to 0."""
    binary_edge_weight: float | None = None
    """If set: off-diagonal entries > 0 become this weight, the other off-diagonal entries 0."""
    diagonal: float | str = "measured"
    """``measured`` keeps the measured diagonal; a number replaces it."""
    target_loss: float = 0.01
    """``measure: steps_to_target``: the validation loss a run must reach on a skill."""
    direct_edges: bool = False
    """``measure: steps_to_target``: also an edge i -> j when the run on i alone lowers L_j (the
    second clause of the paper's LEGO/Addition rule)."""

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise SkillmixInputError(
                f"graph.assemble.measure: got {self.measure!r}, expected one of {', '.join(MEASURES)}"
            )
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SkillmixInputError(f"graph.assemble.window: got {self.window!r}, expected an integer >= 1")
        if not _is_number(self.target_loss) or float(self.target_loss) <= 0:
            raise SkillmixInputError(
                f"graph.assemble.target_loss: got {self.target_loss!r}, expected a finite number > 0"
            )
        self.target_loss = float(self.target_loss)
        if not isinstance(self.direct_edges, bool):
            raise SkillmixInputError(
                f"graph.assemble.direct_edges: got {self.direct_edges!r}, expected true or false"
            )
        if self.direct_edges and self.measure != "steps_to_target":
            raise SkillmixInputError(
                "graph.assemble.direct_edges is a clause of measure steps_to_target; "
                f"got measure {self.measure!r}"
            )
        if self.normalise not in NORMALISATIONS:
            raise SkillmixInputError(
                f"graph.assemble.normalise: got {self.normalise!r}, "
                f"expected one of {', '.join(NORMALISATIONS)}"
            )
        if not isinstance(self.clip_negative, bool):
            raise SkillmixInputError(
                f"graph.assemble.clip_negative: got {self.clip_negative!r}, expected true or false"
            )
        if self.threshold is not None:
            if not _is_number(self.threshold):
                raise SkillmixInputError(
                    f"graph.assemble.threshold: got {self.threshold!r}, expected a finite number or null"
                )
            self.threshold = float(self.threshold)
        if self.binary_edge_weight is not None:
            if not _is_number(self.binary_edge_weight) or float(self.binary_edge_weight) <= 0:
                raise SkillmixInputError(
                    f"graph.assemble.binary_edge_weight: got {self.binary_edge_weight!r}, "
                    "expected a finite number > 0 or null"
                )
            self.binary_edge_weight = float(self.binary_edge_weight)
        if self.diagonal != "measured":
            if not _is_number(self.diagonal):
                raise SkillmixInputError(
                    f"graph.assemble.diagonal: got {self.diagonal!r}, expected 'measured' or a finite number"
                )
            self.diagonal = float(self.diagonal)

    @classmethod
    def from_config(cls, cfg: dict | None) -> GraphOptions:
        """Build options from a ``graph`` config section; unrelated keys are ignored, values checked."""
        if cfg is None:
            return cls()
        if not isinstance(cfg, dict):
            raise SkillmixInputError(f"graph: expected a mapping of options, got {type(cfg).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in cfg.items() if key in names})

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a plain dict (for graph.json)."""
        return dataclasses.asdict(self)


def postprocess(A: np.ndarray, options: GraphOptions) -> np.ndarray:
    """Apply clip_negative, threshold, binary_edge_weight and diagonal, in that order."""
    A = A.copy()
    off = ~np.eye(A.shape[0], A.shape[1], dtype=bool)
    if options.clip_negative:
        A[A < 0] = 0.0
    if options.threshold is not None:
        A[off & (A <= options.threshold)] = 0.0
    if options.binary_edge_weight is not None:
        edges = off & (A > 0)
        A[off] = 0.0
        A[edges] = options.binary_edge_weight
    if options.diagonal != "measured":
        np.fill_diagonal(A, float(options.diagonal))
    return A
