"""The stage 0 figures: measurement accuracy on the phantom, DME separation on the real set, and speed.

    python -m recipes.measure_report [--phantom_n 500] [--num_proc 2] [--out benchmarks/results/measure.json]

- **Phantom** (``--phantom_n`` pairs, seed fixed): each pair measured with its scales and eye; median
  absolute error against the ground truth of the central subfield thickness (% of truth, target 5%) and of
  the vertical cup-to-disc ratio (target 0.05), and of the other measured biomarkers for information.
- **Real set** (``../shared/data/dme-dr-paired``): every OCT B-scan measured without scales (the device is
  not documented), so thicknesses are in pixels. Per eye, over its B-scans: the mean central thickness, the
  mean peak thickness (within 1.5 mm of the fovea) and the share of B-scans flagged with fluid. ROC AUC for
  DME vs no DME (Mann-Whitney U / (n1 n2)):

  - each feature alone (nothing fitted), over all eyes and over the validation eyes;
  - *held out*: a logistic regression on `MODEL_FEATURES` fitted on the eyes of the patient-level train split
    of `processing.dme_dr.load_dme_dr` (``val_fraction=0.2, seed=0``) and scored on its validation eyes (only
    4 of which have DME: a coarse figure);
  - *cross-validated*: ``--cv_folds`` folds of patients (stratified by DME), each eye scored by the model
    fitted on the other folds, so by a model that never saw its patient; AUC of the pooled scores, median
    and range over ``--cv_repeats`` fold draws, and a 95% interval from resampling patients.

  The fluid detector's thresholds and `MODEL_FEATURES` were chosen looking at train-split eyes only.
- **Speed**: seconds per image for `measure_oct` and `measure_cfp` (one process; the median over
  ``--timing_n`` images of each kind, wall and CPU time), on phantom and real images.

Writes the figures as JSON to ``--out`` (atomically: a reader never sees a partial file) and prints them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from transformers import HfArgumentParser

from grok_retina.evaluation.classification import roc_auc
from grok_retina.evaluation.report import atomic_write_text

TARGETS = {"central_subfield_pct": 5.0, "cup_to_disc_ratio": 0.05, "dme_auc": 0.85}
EYE_FEATURES = ("central_thickness_px", "peak_thickness_px", "fluid_share")
MODEL_FEATURES = ("peak_thickness_px", "fluid_share")
L2 = 1.0  # the model's penalty on its standardised weights: mild, keeps separable folds finite
SPLIT = {"val_fraction": 0.2, "seed": 0}  # processing.dme_dr.load_dme_dr's patient-level split
RELATIVE = ("central_subfield", "inner_nasal", "inner_temporal", "outer_nasal", "outer_temporal", "overall_macular",
            "rnfl", "gc_ipl", "inl", "rpe", "inl_elm_central", "elm_isos_central", "isos_rpe_central",
            "inl_rpe_central", "vertical_disc_diameter")
ABSOLUTE = ("cup_to_disc_ratio", "av_ratio", "arterial_tortuosity", "venular_tortuosity")


@dataclass
class ReportArguments:
    """Options of the stage 0 report."""

    phantom_n: int = field(default=500, metadata={"help": "Phantom pairs measured (0: skip the phantom)."})
    phantom_seed: int = field(default=0, metadata={"help": "Phantom seed."})
    real_root: str | None = field(default=None, metadata={"help": "The DME/DR folder (default: ../shared/data/dme-dr-paired)."})
    skip_real: bool = field(default=False, metadata={"help": "Leave out the real-set AUC."})
    cv_folds: int = field(default=5, metadata={"help": "Patient-grouped cross-validation folds on the real set."})
    cv_repeats: int = field(default=10, metadata={"help": "Fold draws of the cross-validation (median and range reported)."})
    timing_n: int = field(default=10, metadata={"help": "Images of each kind timed (0: no timing)."})
    num_proc: int = field(default=2, metadata={"help": "Processes measuring in parallel (timing uses one)."})
    out: str = field(default="benchmarks/results/measure.json", metadata={"help": "Where to write the figures."})


@lru_cache(maxsize=2)
def _phantom(seed: int):
    from processing.phantom import RetinaPhantom

    return RetinaPhantom(seed=seed)


def phantom_errors(index: int, seed: int = 0) -> dict:
    """Signed errors of pair ``index``: % of truth for thicknesses and the disc diameter, absolute for ratios;
    plus the DME flag and whether fluid was found."""
    from processing.measure import measure_biomarkers

    phantom = _phantom(seed)
    sample, subject = phantom[index], phantom.subject(index)
    truth = subject.biomarkers
    result = measure_biomarkers(
        sample["cfp"], sample["oct"], eye=sample["eye"], oct_axial_um_per_px=sample["oct_axial_um_per_px"],
        oct_lateral_um_per_px=sample["oct_lateral_um_per_px"], cfp_um_per_px=sample["cfp_um_per_px"],
    )
    measured = result["biomarkers"]
    errors = {name: None if measured[name] is None else 100.0 * (measured[name] - truth[name]) / truth[name] for name in RELATIVE}
    errors.update({name: None if measured[name] is None else measured[name] - truth[name] for name in ABSOLUTE})
    return {"errors": errors, "dme": subject.dme,
            "fluid": bool(result["extra"].get("intraretinal_fluid") or result["extra"].get("subretinal_fluid"))}


def _map(function, items, num_proc: int, **kwargs) -> list:
    """``[function(item, **kwargs) for item in items]``, in ``num_proc`` processes when more than one."""
    call = partial(function, **kwargs)
    if num_proc <= 1:
        return [call(item) for item in items]
    with ProcessPoolExecutor(num_proc) as pool:
        return list(pool.map(call, items, chunksize=4))


def phantom_figures(n: int, seed: int, num_proc: int) -> dict:
    """Median absolute (and median signed) errors over ``n`` phantom pairs."""
    rows = _map(phantom_errors, range(n), num_proc, seed=seed)
    figures = {}
    for name in (*RELATIVE, *ABSOLUTE):
        values = np.array([r["errors"][name] for r in rows if r["errors"][name] is not None], dtype=float)
        unit = "%" if name in RELATIVE else "abs"
        figures[name] = {
            "unit": unit,
            "median_abs_error": round(float(np.median(np.abs(values))), 4) if values.size else None,
            "median_error": round(float(np.median(values)), 4) if values.size else None,
            "measured": int(values.size),
        }
    dme = np.array([r["dme"] for r in rows], bool)
    fluid = np.array([r["fluid"] for r in rows], bool)
    figures["fluid_flag"] = {
        "sensitivity_dme": round(float(fluid[dme].mean()), 3) if dme.any() else None,
        "false_positive_rate_no_dme": round(float(fluid[~dme].mean()), 3) if (~dme).any() else None,
        "dme_eyes": int(dme.sum()),
    }
    return {"pairs": n, "seed": seed, "biomarkers": figures}


def real_oct_row(path: str) -> dict:
    """Central and peak thickness (px) and the fluid flag of one real B-scan, or why it could not be measured."""
    from processing.measure import UnusableImageError, measure_oct

    try:
        m = measure_oct(path)
    except UnusableImageError as error:
        return {"path": path, "error": str(error)}
    return {"path": path, "central_px": m.central_thickness_px, "peak_px": m.profile.peak_px,
            "fluid": bool(m.fluid.intraretinal or m.fluid.subretinal), "quality": m.quality}


@dataclass
class LogisticModel:
    """Logistic regression on standardised features, with an L2 penalty on the weights (not the intercept)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # per standardised feature
    bias: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = L2, max_steps: int = 100) -> LogisticModel:
        """Newton's method on ``x`` (eyes x features) and 0/1 labels ``y``."""
        if len(np.unique(y)) < 2:
            raise ValueError("y: the training eyes hold one class only; give eyes with and without DME.")
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        design = np.c_[np.ones(len(x)), (x - mean) / scale]
        penalty = np.r_[0.0, np.full(x.shape[1], l2)]
        w = np.zeros(design.shape[1])
        for _ in range(max_steps):
            p = 1.0 / (1.0 + np.exp(-design @ w))
            hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
            step = np.linalg.solve(hessian, design.T @ (p - y) + penalty * w)
            w -= step
            if np.abs(step).max() < 1e-9:
                break
        return cls(mean, scale, w[1:], float(w[0]))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of DME per row of ``x``."""
        return (x - self.mean) / self.scale @ self.weights + self.bias

    def coefficients(self, names: tuple[str, ...]) -> dict[str, float]:
        """Log-odds change per unit of each (raw) feature, and the intercept."""
        raw = self.weights / self.scale
        return {**{n: round(float(c), 4) for n, c in zip(names, raw)},
                "intercept": round(self.bias - float(raw @ self.mean), 4)}


def patient_folds(patients: list[str], label: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index (0 .. folds-1) per eye with all eyes of a patient in one fold; patients with a positive eye
    and the others are each dealt round the folds in random order, so every fold gets its share of both."""
    rng = np.random.default_rng(seed)
    positive = {p for p, y in zip(patients, label) if y}
    fold_of: dict[str, int] = {}
    for group in (sorted(positive), sorted(set(patients) - positive)):
        start = int(rng.integers(folds))
        for i, patient in enumerate(rng.permutation(group)):
            fold_of[str(patient)] = (start + i) % folds
    return np.array([fold_of[p] for p in patients])


def out_of_fold_scores(x: np.ndarray, label: np.ndarray, patients: list[str], folds: int, seed: int) -> np.ndarray:
    """Log-odds of every eye from the `LogisticModel` fitted on the folds without its patient."""
    fold = patient_folds(patients, label, folds, seed)
    scores = np.empty(len(label))
    for k in range(folds):
        scores[fold == k] = LogisticModel.fit(x[fold != k], label[fold != k]).score(x[fold == k])
    return scores


def cross_validated_auc(x: np.ndarray, label: np.ndarray, patients: list[str], folds: int, repeats: int) -> dict:
    """AUC of the pooled out-of-fold scores: median and range over ``repeats`` fold draws, and the 95% interval
    over resampled patients of the first draw's."""
    draws = [out_of_fold_scores(x, label, patients, folds, seed) for seed in range(repeats)]
    aucs = [roc_auc(scores, label) for scores in draws]
    return {"folds": folds, "repeats": repeats, "eyes": len(label), "dme_eyes": int(label.sum()),
            "auc_median": round(float(np.median(aucs)), 4),
            "auc_range": [round(min(aucs), 4), round(max(aucs), 4)],
            "auc_95_interval": bootstrap_interval(draws[0], label, patients)}


def bootstrap_interval(scores: np.ndarray, label: np.ndarray, patients: list[str], n: int = 2000,
                       seed: int = 0) -> list[float]:
    """95% interval of the AUC over ``n`` resamplings of the patients (with all their eyes)."""
    rng = np.random.default_rng(seed)
    names = sorted(set(patients))
    rows = {name: [i for i, p in enumerate(patients) if p == name] for name in names}
    aucs = []
    for _ in range(n):
        index = np.concatenate([rows[names[j]] for j in rng.integers(len(names), size=len(names))])
        if 0 < label[index].sum() < len(index):
            aucs.append(roc_auc(scores[index], label[index]))
    return [round(float(q), 4) for q in np.percentile(aucs, [2.5, 97.5])]


def held_out_auc(x: np.ndarray, label: np.ndarray, patients: list[str], validation: set[str]) -> dict:
    """`LogisticModel` fitted on the eyes of patients outside ``validation``, AUC on the eyes of those inside."""
    is_val = np.array([p in validation for p in patients])
    model = LogisticModel.fit(x[~is_val], label[~is_val])
    scores, y = model.score(x[is_val]), label[is_val]
    return {
        "train_eyes": int((~is_val).sum()), "train_dme_eyes": int(label[~is_val].sum()),
        "validation_eyes": int(is_val.sum()), "validation_dme_eyes": int(y.sum()),
        "auc": round(roc_auc(scores, y), 4),
        "coefficients": model.coefficients(MODEL_FEATURES),
    }


def eye_features(rows: dict[str, dict], eyes: dict[tuple[str, str], dict]) -> tuple[list, dict[str, np.ndarray]]:
    """The eyes with a measured B-scan and their `EYE_FEATURES`: means over the eye's measured B-scans."""
    measured = {key: [rows[p] for p in eye["oct"] if rows[p].get("central_px") is not None]
                for key, eye in eyes.items()}
    keys = [key for key, scans in measured.items() if scans]
    columns = {"central_thickness_px": "central_px", "peak_thickness_px": "peak_px", "fluid_share": "fluid"}
    return keys, {name: np.array([np.mean([s[column] for s in measured[k]]) for k in keys], float)
                  for name, column in columns.items()}


def real_figures(root: str | None, num_proc: int, folds: int = 5, repeats: int = 10) -> dict:
    """Per-eye ROC AUCs of DME vs no DME on the real set: single features, held out and cross-validated."""
    from processing.dme_dr import dme_dr_records, load_dme_dr

    eyes: dict[tuple[str, str], dict] = {}
    for record in dme_dr_records(root):
        eyes[(record["patient_id"], record["eye"])] = {"dme": record["dme"] == "yes", "oct": record["oct"]}
    paths = sorted({p for eye in eyes.values() for p in eye["oct"]})
    rows = {r["path"]: r for r in _map(real_oct_row, paths, num_proc)}
    keys, features = eye_features(rows, eyes)
    label = np.array([eyes[k]["dme"] for k in keys])
    patients = [patient for patient, _ in keys]
    validation = set(load_dme_dr(root, **SPLIT)["validation"]["patient_id"])
    is_val = np.array([p in validation for p in patients])
    x = np.stack([features[name] for name in MODEL_FEATURES], axis=1)
    thickness = features["central_thickness_px"]
    return {
        "eyes": len(keys), "dme_eyes": int(label.sum()), "b_scans": len(paths),
        "not_measured": sorted(Path(p).name for p, r in rows.items() if r.get("central_px") is None),
        "single_feature_auc": {
            "all_eyes": {name: round(roc_auc(f, label), 4) for name, f in features.items()},
            "validation_eyes": {name: round(roc_auc(f[is_val], label[is_val]), 4)
                                for name, f in features.items()},
        },
        "model": {"kind": f"logistic regression on standardised features, L2 {L2} on the weights",
                  "features": list(MODEL_FEATURES)},
        "held_out": {"split": f"processing.dme_dr.load_dme_dr(val_fraction={SPLIT['val_fraction']}, "
                              f"seed={SPLIT['seed']}), by patient",
                     **held_out_auc(x, label, patients, validation)},
        "cross_validated": cross_validated_auc(x, label, patients, folds, repeats),
        "median_central_px": {"dme": round(float(np.median(thickness[label])), 2),
                              "no_dme": round(float(np.median(thickness[~label])), 2)},
        "note": "no axial/lateral scale is known for this set: thickness in pixels, regions on an assumed 6 mm scan "
                "width; the fluid detector's thresholds and the model's features were chosen on train-split eyes only",
    }


def _median_seconds(function, images: list) -> dict | None:
    """Median wall and CPU seconds of ``function`` over ``images`` (CPU time does not depend on what else
    the machine runs)."""
    wall, cpu = [], []
    for image in images:
        start, start_cpu = time.perf_counter(), time.process_time()
        function(image)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall": round(float(np.median(wall)), 3), "cpu": round(float(np.median(cpu)), 3)} if wall else None


def timings(n: int = 10, seed: int = 0, root: str | None = None) -> dict:
    """Median seconds per image of `measure_oct` and `measure_cfp` on phantom and (if present) real images,
    after one warm-up call each."""
    from processing.measure import measure_cfp, measure_oct

    phantom = _phantom(seed)
    samples = [phantom[i] for i in range(n + 1)]
    measure_oct(samples[0]["oct"][0]), measure_cfp(samples[0]["cfp"])
    out = {
        "phantom_oct_496x512": _median_seconds(measure_oct, [s["oct"][0] for s in samples[1:]]),
        "phantom_cfp_512": _median_seconds(measure_cfp, [s["cfp"] for s in samples[1:]]),
    }
    try:
        from processing.dme_dr import dme_dr_records

        records = dme_dr_records(root)[:n]
        out["real_oct_704x288"] = _median_seconds(measure_oct, [r["oct"][0] for r in records])
        out["real_cfp_512"] = _median_seconds(measure_cfp, [r["cfp"] for r in records])
    except FileNotFoundError:
        out["real"] = "real set not found"
    out["machine"] = {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                      "python": platform.python_version(), "processes": 1}
    return out


def format_real(r: dict) -> list[str]:
    """The real-set ROC AUC table: each feature alone, then the model held out and cross-validated."""
    h, cv, single = r["held_out"], r["cross_validated"], r["single_feature_auc"]
    every, val = f"{r['eyes']} / {r['dme_eyes']}", f"{h['validation_eyes']} / {h['validation_dme_eyes']}"
    model = "logistic(" + " + ".join(r["model"]["features"]) + ")"
    rows = [(f"{name} alone (nothing fitted)", "all eyes", single["all_eyes"][name], every) for name in EYE_FEATURES]
    rows += [(f"{name} alone (nothing fitted)", "validation eyes", single["validation_eyes"][name], val)
             for name in EYE_FEATURES]
    rows += [(model, f"held out: fit on train ({h['train_eyes']} / {h['train_dme_eyes']}), AUC on validation",
              h["auc"], val),
             (model, f"{cv['folds']}-fold patient-grouped CV, median of {cv['repeats']} draws", cv["auc_median"], every)]
    lines = [f"Real DME/DR set ({r['eyes']} eyes, {r['dme_eyes']} with DME, {r['b_scans']} B-scans): "
             "ROC AUC of DME vs no DME per eye (target 0.85)",
             f"  {'score':48s} {'evaluated on':62s} {'AUC':>6s}  eyes / DME eyes"]
    lines += [f"  {score:48s} {where:62s} {value:6.3f}  {n}" for score, where, value, n in rows]
    lines.append(f"  CV AUC range over draws {cv['auc_range']}, 95% interval over patients {cv['auc_95_interval']}; "
                 f"held-out coefficients (log-odds per unit) {h['coefficients']}")
    lines.append(f"  median central thickness px: {r['median_central_px']}; {r['note']}")
    return lines


def format_figures(figures: dict) -> str:
    """A short text table of the figures against their targets."""
    lines = []
    if "phantom" in figures:
        p = figures["phantom"]["biomarkers"]
        lines.append(f"Phantom ({figures['phantom']['pairs']} pairs, seed {figures['phantom']['seed']}): median absolute error")
        for name, row in p.items():
            if name == "fluid_flag":
                lines.append(f"  fluid flag: sensitivity on DME {row['sensitivity_dme']}, false positives {row['false_positive_rate_no_dme']}")
                continue
            unit = "%" if row["unit"] == "%" else ""
            target = {"central_subfield": " (target 5%)", "cup_to_disc_ratio": " (target 0.05)"}.get(name, "")
            lines.append(f"  {name:24s} {row['median_abs_error']}{unit}{target}  [median signed {row['median_error']}, n={row['measured']}]")
    if "real" in figures:
        lines += format_real(figures["real"])
    if "timing_s" in figures:
        lines.append("Seconds per image (median, one process, wall / CPU): " + ", ".join(
            f"{k} {v['wall']} / {v['cpu']}" for k, v in figures["timing_s"].items() if isinstance(v, dict) and "wall" in v))
        lines.append(f"  machine: {figures['timing_s']['machine']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(ReportArguments, prog="python -m recipes.measure_report", description=__doc__.splitlines()[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    figures: dict = {}
    if args.phantom_n > 0:
        figures["phantom"] = phantom_figures(args.phantom_n, args.phantom_seed, args.num_proc)
    if not args.skip_real:
        try:
            figures["real"] = real_figures(args.real_root, args.num_proc, args.cv_folds, args.cv_repeats)
        except FileNotFoundError as error:
            figures["real"] = {"skipped": str(error)}
            print(f"real set skipped: {error}", file=sys.stderr)
    if args.timing_n > 0:
        figures["timing_s"] = timings(args.timing_n, args.phantom_seed, args.real_root)
    out = atomic_write_text(args.out, json.dumps(figures, indent=2) + "\n")
    print(format_figures({k: v for k, v in figures.items() if "skipped" not in v}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
