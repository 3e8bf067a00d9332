"""`RetinaPhantom`: seeded, streamed pairs of CFP and OCT images whose 37 biomarkers are ground truth."""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from ..labels import LABELS
from .distributions import Subject, patient_draw, sample_subject
from .render_cfp import CFPRenderer, CFPScene
from .render_oct import DEFAULT_AXIAL_UM_PER_PX, OCTRenderer, OCTScene

# Independent random streams per sample, so that any part can be recomputed alone.
_PATIENT, _EYE, _OCT_SCENE, _OCT_DRAW, _CFP_SCENE, _CFP_DRAW, _MISSING = range(1, 8)


@dataclass
class GroundTruth:
    """Everything a sample was drawn from: the subject (label, severity, biomarkers) and both scenes
    (OCT boundary rows per column, CFP disc/cup/fovea geometry and vessel trees)."""

    subject: Subject
    oct: OCTScene
    cfp: CFPScene


class RetinaPhantom:
    """A digital phantom of paired colour fundus photos and foveal OCT B-scans with known biomarkers.

    Sample ``i`` is eye ``i % 2`` (0: OD, 1: OS) of patient ``i // 2``; both eyes share the patient's label
    and most of its biomarker draw. Samples depend only on ``seed``, the sizes and ``i``, so they can be
    made in any order or process. See `distributions`, `render_oct` and `render_cfp` for the model.

    Args:
        seed: seeds everything.
        cfp_size: side of the square fundus photo in pixels.
        oct_size: (height, width) of the B-scan in pixels; the scan always spans 6 mm.
        label_weights: probability of each label, as a mapping label -> weight or a sequence in
            `LABELS` order; uniform by default.
        n: number of samples; None makes the phantom unbounded (no ``len``).
        missing_rate: share of biomarkers reported as None (the images still carry them).
        oct_axial_um_per_px: axial scale of the B-scan.
    """

    def __init__(
        self,
        seed: int = 0,
        cfp_size: int = 512,
        oct_size: tuple[int, int] = (496, 512),
        label_weights: Mapping[str, float] | Sequence[float] | None = None,
        n: int | None = None,
        missing_rate: float = 0.0,
        oct_axial_um_per_px: float = DEFAULT_AXIAL_UM_PER_PX,
    ):
        if not 0.0 <= missing_rate <= 1.0:
            raise ValueError(f"missing_rate must be in [0, 1], got {missing_rate}.")
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0 or None (unbounded), got {n}.")
        self.seed, self.n, self.missing_rate = int(seed), n, float(missing_rate)
        self.label_weights = _label_weights(label_weights)
        self._oct = OCTRenderer(oct_size, oct_axial_um_per_px, self.seed)
        self._cfp = CFPRenderer(cfp_size, self.seed)
        self.config = {
            "seed": self.seed,
            "cfp_size": self._cfp.size,
            "oct_size": (self._oct.height, self._oct.width),
            "label_weights": tuple(self.label_weights.tolist()),
            "n": n,
            "missing_rate": self.missing_rate,
            "oct_axial_um_per_px": self._oct.axial_um_per_px,
        }

    @property
    def oct_axial_um_per_px(self) -> float:
        return self._oct.axial_um_per_px

    @property
    def oct_lateral_um_per_px(self) -> float:
        return self._oct.lateral_um_per_px

    @property
    def cfp_um_per_px(self) -> float:
        return self._cfp.um_per_px

    def __repr__(self) -> str:
        sizes = f"cfp_size={self._cfp.size}, oct_size={(self._oct.height, self._oct.width)}"
        return f"RetinaPhantom(seed={self.seed}, n={self.n}, {sizes})"

    def __len__(self) -> int:
        if self.n is None:
            raise TypeError("This RetinaPhantom is unbounded (n=None); pass n=... to give it a length.")
        return self.n

    def __getitem__(self, index: int) -> dict:
        if self.n is not None:
            if index < 0:
                index += self.n
            if not 0 <= index < self.n:
                raise IndexError(f"Index {index} out of range for a phantom of {self.n} samples.")
        elif index < 0:
            raise IndexError("An unbounded phantom has no negative indices.")
        return self.sample(index)

    def __iter__(self) -> Iterator[dict]:
        return self.iter_samples(0, self.n)

    def _rng(self, stream: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, index])

    @staticmethod
    def eye(index: int) -> str:
        return "OD" if index % 2 == 0 else "OS"

    def subject(self, index: int) -> Subject:
        """Label, severity and true biomarkers of sample ``index`` (cheap: nothing is rendered)."""
        patient = patient_draw(self._rng(_PATIENT, index // 2), self.label_weights)
        return sample_subject(patient, self._rng(_EYE, index))

    def ground_truth(self, index: int) -> GroundTruth:
        """The subject and the OCT and CFP scene geometry of sample ``index``."""
        subject, eye = self.subject(index), self.eye(index)
        return GroundTruth(
            subject,
            self._oct.scene(subject, eye, self._rng(_OCT_SCENE, index)),
            self._cfp.scene(subject, eye, self._rng(_CFP_SCENE, index)),
        )

    def sample(self, index: int) -> dict:
        """Sample ``index`` as a row of the GROK dataset schema (images as PIL)."""
        truth = self.ground_truth(index)
        biomarkers: dict[str, float | None] = dict(truth.subject.biomarkers)
        if self.missing_rate:
            gone = self._rng(_MISSING, index).random(len(biomarkers)) < self.missing_rate
            biomarkers = {name: None if drop else value for (name, value), drop in zip(biomarkers.items(), gone)}
        return {
            "id": f"phantom-s{self.seed}-{index:06d}",
            "patient_id": f"phantom-s{self.seed}-p{index // 2:06d}",
            "eye": self.eye(index),
            "cfp": self._cfp.draw(truth.cfp, self._rng(_CFP_DRAW, index)),
            "oct": [self._oct.draw(truth.oct, self._rng(_OCT_DRAW, index))],
            "biomarkers": biomarkers,
            "label": truth.subject.label,
            "report": None,
            "oct_axial_um_per_px": self.oct_axial_um_per_px,
            "oct_lateral_um_per_px": self.oct_lateral_um_per_px,
            "cfp_um_per_px": self.cfp_um_per_px,
        }

    def iter_samples(self, start: int = 0, stop: int | None = None) -> Iterator[dict]:
        """Samples ``start`` to ``stop - 1`` (to the end of a bounded phantom, forever for an unbounded one)."""
        stop = self.n if stop is None else stop
        index = start
        while stop is None or index < stop:
            yield self.sample(index)
            index += 1

    def to_dataset(self, n: int | None = None, *, num_proc: int | None = None, cache_dir: str | None = None):
        """The first ``n`` samples (default: the phantom's ``n``) as a `datasets.Dataset` with `grok_features`,
        streamed into Arrow by `datasets.Dataset.from_generator` (``num_proc`` processes render shards).

        The cache fingerprint covers the configuration and the phantom's source code, so a changed renderer
        never serves stale images.
        """
        from datasets import Dataset

        from ..grok_dataset import grok_features

        n = self.n if n is None else n
        if n is None:
            raise ValueError("An unbounded phantom needs n: phantom.to_dataset(n=...).")
        shards = max(1, num_proc or 1) * 4
        bounds = np.linspace(0, n, min(shards, max(n, 1)) + 1).astype(int)
        gen_kwargs = {"config": self.config, "ranges": [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]}
        fingerprint = hashlib.sha256(repr((self.config, n, _source_digest())).encode()).hexdigest()[:32]
        return Dataset.from_generator(
            _generate,
            features=grok_features(),
            gen_kwargs=gen_kwargs,
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            cache_dir=cache_dir,
            fingerprint=fingerprint,
        )


def phantom_dataset(n: int, seed: int = 0, *, num_proc: int | None = None, cache_dir: str | None = None, **kwargs):
    """``n`` phantom samples as a `datasets.Dataset`; ``kwargs`` go to `RetinaPhantom`."""
    return RetinaPhantom(seed=seed, **kwargs).to_dataset(n, num_proc=num_proc, cache_dir=cache_dir)


def _generate(config: dict, ranges: list[tuple[int, int]]) -> Iterator[dict]:
    """Generator for `datasets.Dataset.from_generator`, with the images encoded: the fundus photo as JPEG
    (quality 95, as fundus cameras save them; PNG of a noisy photo takes 10-40x longer) and the B-scans as
    lossless PNG (fast compression)."""
    phantom = _phantom(tuple(sorted(config.items())))
    for start, stop in ranges:
        for row in phantom.iter_samples(start, stop):
            row["cfp"] = _encode(row["cfp"], format="JPEG", quality=95)
            row["oct"] = [_encode(image, format="PNG", compress_level=1) for image in row["oct"]]
            yield row


@functools.lru_cache(maxsize=2)
def _phantom(config: tuple) -> RetinaPhantom:
    """One phantom per configuration and process (building the texture banks takes a fraction of a second)."""
    return RetinaPhantom(**{k: v for k, v in config if k != "n"})


def _encode(image, **save_kwargs) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, **save_kwargs)
    return {"bytes": buffer.getvalue(), "path": None}


def _source_digest() -> str:
    """Hash of the code that decides the samples: this package, the biomarker schema and the labels."""
    here = Path(__file__).parent
    files = sorted(here.glob("*.py")) + [here.parent / "biomarkers.py", here.parent / "labels.py"]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _label_weights(weights: Mapping[str, float] | Sequence[float] | None) -> np.ndarray:
    if weights is None:
        return np.full(len(LABELS), 1.0 / len(LABELS))
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(LABELS))
        if unknown:
            raise ValueError(f"label_weights has unknown labels {unknown}; valid labels are {', '.join(LABELS)}.")
        values = np.array([float(weights.get(label, 0.0)) for label in LABELS])
    else:
        values = np.asarray(weights, dtype=float)
        if values.shape != (len(LABELS),):
            raise ValueError(f"label_weights needs {len(LABELS)} values, in the order {', '.join(LABELS)}.")
    if (values < 0).any() or not values.sum() > 0:
        raise ValueError("label_weights must be non-negative with a positive sum.")
    return values / values.sum()
