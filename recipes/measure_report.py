"""The stage 0 figures: measurement accuracy on the phantom, DME separation on the real set, and speed.

    python -m recipes.measure_report [--phantom_n 500] [--num_proc 2] [--out benchmarks/results/measure.json]

- **Phantom** (``--phantom_n`` pairs, seed fixed): each pair measured with its scales and eye; median
  absolute error against the ground truth of the central subfield thickness (% of truth, target 5%) and of
  the vertical cup-to-disc ratio (target 0.05), and of the other measured biomarkers for information.
- **Real set** (``../shared/data/dme-dr-paired``): every OCT B-scan measured without scales (the device is
  not documented), so thicknesses are in pixels; per eye, the mean central thickness over the eye's B-scans
  and the share of its B-scans with fluid; ROC AUC for DME vs no DME (Mann-Whitney U / (n1 n2), scale-free
  within one device) of the thickness, of the fluid share, and of their sum with the thickness as a robust
  z-score over the eyes ((t - median) / IQR: one IQR of thickening weighs as much as fluid in every scan).
  No parameter is fitted; the combination was chosen on this set, so its AUC is not a held-out figure.
- **Speed**: seconds per image for `measure_oct` and `measure_cfp` (one process; the median over
  ``--timing_n`` images of each kind, wall and CPU time), on phantom and real images.

Writes the figures as JSON to ``--out`` and prints them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from transformers import HfArgumentParser

TARGETS = {"central_subfield_pct": 5.0, "cup_to_disc_ratio": 0.05, "dme_auc": 0.85}
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
    """Central thickness (px) and fluid of one real B-scan, or the reason it could not be measured."""
    from processing.measure import UnusableImageError, measure_oct

    try:
        m = measure_oct(path)
    except UnusableImageError as error:
        return {"path": path, "error": str(error)}
    return {"path": path, "central_px": m.central_thickness_px, "fluid": bool(m.fluid.intraretinal or m.fluid.subretinal),
            "quality": m.quality}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over n1 x n2 (ties count half)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def real_figures(root: str | None, num_proc: int) -> dict:
    """Per-eye ROC AUCs of DME vs no DME on the real set."""
    from processing.dme_dr import dme_dr_records

    eyes: dict[tuple[str, str], dict] = {}
    for record in dme_dr_records(root):
        eyes[(record["patient_id"], record["eye"])] = {"dme": record["dme"] == "yes", "oct": record["oct"]}
    paths = sorted({p for eye in eyes.values() for p in eye["oct"]})
    rows = {r["path"]: r for r in _map(real_oct_row, paths, num_proc)}
    per_eye = defaultdict(list)
    for key, eye in eyes.items():
        for path in eye["oct"]:
            if rows[path].get("central_px") is not None:
                per_eye[key].append(rows[path])
    keys = [k for k in eyes if per_eye[k]]
    label = np.array([eyes[k]["dme"] for k in keys])
    thickness = np.array([np.mean([r["central_px"] for r in per_eye[k]]) for k in keys])
    fluid = np.array([np.mean([r["fluid"] for r in per_eye[k]]) for k in keys])
    q1, median, q3 = np.percentile(thickness, [25, 50, 75])
    robust_z = (thickness - median) / max(q3 - q1, 1e-9)
    scores = {"central_thickness_px": thickness, "fluid_share": fluid, "thickness_z_plus_fluid_share": robust_z + fluid}
    return {
        "eyes": len(keys), "dme_eyes": int(label.sum()), "b_scans": len(paths),
        "not_measured": sorted(Path(p).name for p, r in rows.items() if r.get("central_px") is None),
        "auc": {name: round(auc(s[label], s[~label]), 4) for name, s in scores.items()},
        "median_central_px": {"dme": round(float(np.median(thickness[label])), 2), "no_dme": round(float(np.median(thickness[~label])), 2)},
        "note": "no axial/lateral scale is known for this set: thickness in pixels, regions on an assumed 6 mm scan width",
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
        r = figures["real"]
        lines.append(f"Real DME/DR set ({r['eyes']} eyes, {r['dme_eyes']} with DME, {r['b_scans']} B-scans): ROC AUC per eye (target 0.85)")
        lines += [f"  {name:40s} {value}" for name, value in r["auc"].items()]
        lines.append(f"  median central thickness px: {r['median_central_px']}; {r['note']}")
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
            figures["real"] = real_figures(args.real_root, args.num_proc)
        except FileNotFoundError as error:
            figures["real"] = {"skipped": str(error)}
            print(f"real set skipped: {error}", file=sys.stderr)
    if args.timing_n > 0:
        figures["timing_s"] = timings(args.timing_n, args.phantom_seed, args.real_root)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(format_figures({k: v for k, v in figures.items() if "skipped" not in v}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
