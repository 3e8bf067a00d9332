"""One way to name a dataset on the command line: ``phantom:N[:seed]``, ``dme-dr``, a folder, a manifest, a Hub id."""

from __future__ import annotations

from pathlib import Path

PHANTOM_PREFIX = "phantom:"
DME_DR = "dme-dr"


def parse_phantom_spec(spec: str, default_seed: int = 0) -> tuple[int, int]:
    """``phantom:N`` or ``phantom:N:seed`` -> (N, seed); ``default_seed`` when the spec names none."""
    parts = spec[len(PHANTOM_PREFIX) :].split(":")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts) or int(parts[0]) < 1:
        raise ValueError(f"dataset {spec!r}: write the phantom as 'phantom:N' or 'phantom:N:seed', e.g. phantom:600:0.")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else default_seed


def load_source(spec: str, split: str | None = None, default_seed: int = 0, **phantom_kwargs):
    """The dataset ``spec`` names, or its split ``split``.

    - ``phantom:N[:seed]``: N rendered phantom eyes (`processing.phantom.phantom_dataset`, keyword
      arguments such as ``cfp_size`` go to it; ``default_seed`` when the spec names no seed);
    - ``dme-dr``: the real paired DME/DR set, split by patient into train and validation;
    - a `save_to_disk` folder of any dataset (a Stage I output included);
    - anything `processing.grok_dataset.load_grok_dataset` reads (manifest, Parquet, Hub id).

    A source without splits (a phantom, a single saved Dataset) answers to ``split`` None or "train" (the
    whole set) and raises a ValueError for any other; an unknown split of a split source names its splits.
    """
    import datasets

    from .grok_dataset import check_no_split, load_grok_dataset, select_split

    if spec.startswith(PHANTOM_PREFIX):
        from .phantom import phantom_dataset

        n, seed = parse_phantom_spec(spec, default_seed)
        check_no_split(spec, split)  # before rendering
        return phantom_dataset(n, seed=seed, **phantom_kwargs)
    if spec == DME_DR:
        from .dme_dr import load_dme_dr

        return select_split(load_dme_dr(), spec, split)
    path = Path(spec)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return select_split(datasets.load_from_disk(str(path)), spec, split)
    return load_grok_dataset(spec, split=split)
