"""Build the exact file trees of a GROK model, dataset or Space repo, and upload them with ``huggingface_hub``.

``publish(kind, repo_id, source, ...)`` builds the tree (into ``dry_run_dir`` for a dry run, which uploads
nothing) and otherwise calls ``HfApi.create_repo(..., exist_ok=True)`` and ``HfApi.upload_folder``. The token
comes from ``token``, else ``HF_TOKEN`` or ``huggingface-cli login``. Trees are written atomically: into a
temporary sibling folder that is renamed onto the destination when complete.

The Space installs this package from a wheel built from the local source checkout and uploaded into the
Space (``wheels/``); ``requirements.txt`` points pip at that file's Hub URL, because a Space installs its
requirements before the repository's files are copied in (a relative path would not resolve). For a private
Space, pass ``package_spec`` instead (e.g. ``grok-retina[demo] @ git+https://github.com/org/grok-retina@<commit>``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hub_cards.cards import (
    COLUMN_DOCS,
    DEFAULT_MODEL_REPO,
    render_dataset_card,
    render_model_card,
    render_space_readme,
)

Kind = Literal["model", "dataset", "space"]
KINDS: tuple[str, ...] = ("model", "dataset", "space")
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the source checkout (editable install)
SPACES_DIR = PROJECT_ROOT / "spaces"
# Files of a saved GROK folder that belong on the Hub, besides the weights, the remote code and the card.
MODEL_FILES = ("config.json", "generation_config.json", "processor_config.json", "chat_template.jinja",
               "chat_template.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "model.safetensors.index.json")
REQUIRED_MODEL_FILES = ("config.json", "processor_config.json", "tokenizer_config.json")
SPACE_FILES = ("*.py", "requirements.txt")
WHEELS_DIR = "wheels"


class PublishError(ValueError):
    """A source that cannot be published as asked; the message names the file or option and the fix."""


@dataclass
class PublishResult:
    """What was built (its relative ``files``; ``tree`` holds them after a dry run, None after an upload) and,
    unless a dry run, where it went (``url``, ``commit``)."""

    kind: str
    repo_id: str
    tree: Path | None
    files: list[str]
    dry_run: bool
    url: str | None = None
    commit: Any = field(default=None, repr=False)


def tree_files(tree: Path) -> list[str]:
    """The tree's files as sorted POSIX paths relative to ``tree``."""
    return sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())


def write_tree_atomically(out_dir: str | Path, fill: Callable[[Path], None]) -> Path:
    """Run ``fill(tmp)`` on a temporary sibling of ``out_dir`` and rename it onto ``out_dir``.

    ``out_dir`` must not exist or be empty, so a dry run never mixes with or deletes earlier files.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PublishError(f"--dry-run {out_dir} exists and is not an empty folder; choose a new folder or remove it.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        fill(tmp)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------------------------- model


def _auto_map_modules(model_dir: Path) -> set[str]:
    """Module files named by the ``auto_map`` entries of the folder's config files."""
    modules = set()
    for name in ("config.json", "processor_config.json", "tokenizer_config.json"):
        path = model_dir / name
        entries = json.loads(path.read_text(encoding="utf-8")).get("auto_map", {}) if path.is_file() else {}
        for value in entries.values():
            for reference in value if isinstance(value, list) else [value]:
                if reference:
                    modules.add(reference.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return modules


def model_tree_files(model_dir: str | Path) -> list[Path]:
    """The files of a saved GROK folder that go to the Hub: safetensors weights, config, processor, tokenizer,
    chat template and the remote-code modules. Raises `PublishError` naming what is missing."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PublishError(f"model_dir: {model_dir} is not a folder; pass the folder written by save_pretrained.")
    fix = "save it with model.save_pretrained(folder) and processor.save_pretrained(folder)"
    missing = [name for name in REQUIRED_MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise PublishError(f"model_dir: {model_dir} lacks {', '.join(missing)}; {fix}.")
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise PublishError(f"model_dir: {model_dir} has no .safetensors weights; {fix} (safetensors is the default).")
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        absent = sorted(s for s in shards if not (model_dir / s).is_file())
        if absent:
            raise PublishError(f"model_dir: weight shards {', '.join(absent)} named in {index.name} are missing.")
    if not any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise PublishError(f"model_dir: {model_dir} has no tokenizer files; {fix}.")
    if not any((model_dir / name).is_file() for name in ("chat_template.jinja", "chat_template.json")):
        raise PublishError(f"model_dir: {model_dir} has no chat template (chat_template.jinja); {fix}.")
    code = sorted(model_dir.glob("*.py"))
    absent = sorted(_auto_map_modules(model_dir) - {p.name for p in code})
    if not _auto_map_modules(model_dir) or absent:
        what = ", ".join(absent) if absent else "auto_map entries in config.json"
        raise PublishError(
            f"model_dir: {model_dir} lacks the remote code ({what}); import modeling_grok before saving so "
            "save_pretrained writes auto_map and copies the modules."
        )
    return weights + code + [model_dir / name for name in MODEL_FILES if (model_dir / name).is_file()]


def build_model_tree(model_dir: str | Path, out_dir: str | Path, card) -> Path:
    """Write the model repo's tree (see `model_tree_files`) plus ``README.md`` = ``card`` into ``out_dir``."""
    files = model_tree_files(model_dir)

    def fill(tmp: Path) -> None:
        for file in files:
            shutil.copy2(file, tmp / file.name)
        _write_text(tmp / "README.md", str(card))

    return write_tree_atomically(out_dir, fill)


# ----------------------------------------------------------------------------------------------- dataset


def _splits(dataset) -> dict:
    from datasets import DatasetDict

    return dict(dataset) if isinstance(dataset, DatasetDict) else {"train": dataset}


def dataset_card_for(dataset, repo_id: str, synthetic: bool, **card_kwargs):
    """The dataset card for a loaded GROK ``dataset`` (a `Dataset` or `DatasetDict`)."""
    splits = _splits(dataset)
    columns = dict.fromkeys(c for part in splits.values() for c in part.column_names)
    features = {name: COLUMN_DOCS.get(name, "extra column") for name in columns}
    rows = {name: part.num_rows for name, part in splits.items()}
    return render_dataset_card(repo_id, rows, features, synthetic=synthetic, **card_kwargs)


def build_dataset_tree(dataset, out_dir: str | Path, card, max_shard_rows: int = 500) -> Path:
    """Write ``data/{split}-{i:05d}-of-{n:05d}.parquet`` shards (images embedded as bytes, as
    ``push_to_hub`` does) and ``README.md`` = ``card`` into ``out_dir``."""
    from datasets.table import embed_table_storage

    if max_shard_rows < 1:
        raise PublishError(f"max_shard_rows must be at least 1, got {max_shard_rows}.")
    splits = _splits(dataset)

    def fill(tmp: Path) -> None:
        (tmp / "data").mkdir()
        for split, part in splits.items():
            count = max(1, -(-part.num_rows // max_shard_rows))
            for index in range(count):
                shard = part.shard(num_shards=count, index=index, contiguous=True).with_format("arrow")
                shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
                shard.to_parquet(str(tmp / "data" / f"{split}-{index:05d}-of-{count:05d}.parquet"))
        _write_text(tmp / "README.md", str(card))

    return write_tree_atomically(out_dir, fill)


# ----------------------------------------------------------------------------------------------- space


# Checkout paths the wheel build never needs (version control, outputs, environments, caches).
_NOT_IN_WHEEL = (".git", ".ci", "build", "dist", "outputs", "runs", "test-artifacts", "*.egg-info", "__pycache__",
                 ".pytest_cache", ".venv*", "venv", "tests", "spaces", "benchmarks")


def build_wheel(out_dir: str | Path, project_root: Path = PROJECT_ROOT) -> Path:
    """Build this package's wheel from the source checkout (no dependencies, no network); returns its path."""
    if not (project_root / "setup.cfg").is_file():
        raise PublishError(
            f"No source checkout at {project_root} to build the grok-retina wheel from; pass package_spec "
            "(--package-spec) with a pip requirement for the package instead."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as build:
        source = Path(build) / "src"  # a copy, so the build leaves nothing in the checkout
        shutil.copytree(project_root, source, ignore=shutil.ignore_patterns(*_NOT_IN_WHEEL))
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--wheel-dir", build, str(source)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=build)
        wheels = list(Path(build).glob("grok_retina-*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise PublishError(f"Building the grok-retina wheel failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return Path(shutil.copy2(wheels[0], out_dir / wheels[0].name))


def wheel_url(space_id: str, wheel_name: str) -> str:
    """The Hub URL of a wheel uploaded into the Space's ``wheels/`` folder."""
    return f"https://huggingface.co/spaces/{space_id}/resolve/main/{WHEELS_DIR}/{wheel_name}"


def _app_requirements(spaces_dir: Path) -> list[str]:
    lines = (spaces_dir / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def build_space_tree(
    out_dir: str | Path,
    space_id: str,
    model_id: str = DEFAULT_MODEL_REPO,
    *,
    spaces_dir: str | Path = SPACES_DIR,
    package_spec: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write the Space: ``spaces/*.py``, ``README.md`` (YAML header, ``models: [model_id]``), ``requirements.txt``
    whose first line installs this package — the wheel placed in ``wheels/`` by default, or ``package_spec`` —
    followed by the app's own requirements from ``spaces/requirements.txt``."""
    spaces_dir = Path(spaces_dir)
    if not (spaces_dir / "app.py").is_file() or not (spaces_dir / "requirements.txt").is_file():
        raise PublishError(f"spaces_dir: {spaces_dir} lacks app.py or requirements.txt; pass the repo's spaces/ folder.")

    def fill(tmp: Path) -> None:
        for pattern in SPACE_FILES:
            for file in sorted(spaces_dir.glob(pattern)):
                shutil.copy2(file, tmp / file.name)
        requirement = package_spec
        if requirement is None:
            wheel = build_wheel(tmp / WHEELS_DIR)
            requirement = f"grok-retina[demo] @ {wheel_url(space_id, wheel.name)}"
        header = "# Written by `grok-retina publish space`: the grok-retina package, then the app's own requirements."
        _write_text(tmp / "requirements.txt", "\n".join([header, requirement, *_app_requirements(spaces_dir)]) + "\n")
        readme = render_space_readme(model_id, package_requirement=requirement, license=license)
        _write_text(tmp / "README.md", str(readme))

    return write_tree_atomically(out_dir, fill)


# ----------------------------------------------------------------------------------------------- upload

_DELETE_PATTERNS: dict[str, list[str]] = {"model": ["*.safetensors"], "dataset": ["data/*.parquet"], "space": [f"{WHEELS_DIR}/*"]}


def build_tree(kind: Kind, repo_id: str, source: str | Path | None, out_dir: str | Path, **options: Any) -> Path:
    """The tree of a ``kind`` repo named ``repo_id`` from ``source`` (model folder, dataset source, spaces/ folder).

    Model options: ``results``, ``base_model``, ``datasets``, ``license``. Dataset options: ``synthetic``
    (required), ``license``, ``model_repo_id``, ``max_shard_rows``. Space options: ``model_id``,
    ``package_spec``, ``license``.
    """
    if kind == "model":
        if source is None:
            raise PublishError("source: pass the saved GROK model folder (--model-dir).")
        card_options = {k: options.pop(k) for k in ("results", "base_model", "datasets", "license") if k in options}
        _no_extra(kind, options)
        card = render_model_card(source, repo_id=repo_id, **card_options)
        return build_model_tree(source, out_dir, card)
    if kind == "dataset":
        from processing.grok_dataset import load_grok_dataset

        if source is None:
            raise PublishError("source: pass a GROK dataset (a manifest, a save_to_disk folder or Parquet files).")
        if "synthetic" not in options:
            raise PublishError("synthetic: say whether the samples are synthetic phantoms or real data (--provenance).")
        max_shard_rows = options.pop("max_shard_rows", 500)
        card_options = {k: options.pop(k) for k in ("synthetic", "license", "model_repo_id") if k in options}
        _no_extra(kind, options)
        dataset = load_grok_dataset(source)
        card = dataset_card_for(dataset, repo_id, **card_options)
        return build_dataset_tree(dataset, out_dir, card, max_shard_rows=max_shard_rows)
    if kind == "space":
        space_options = {k: options.pop(k) for k in ("model_id", "package_spec", "license") if k in options}
        _no_extra(kind, options)
        return build_space_tree(out_dir, repo_id, spaces_dir=source or SPACES_DIR, **space_options)
    raise PublishError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")


def _no_extra(kind: str, options: Mapping[str, Any]) -> None:
    if options:
        raise PublishError(f"Options {sorted(options)} do not apply to a {kind}; see grok_retina.publish.build_tree.")


def publish(
    kind: Kind,
    repo_id: str,
    source: str | Path | None,
    private: bool = False,
    dry_run_dir: str | Path | None = None,
    token: str | None = None,
    *,
    api=None,
    **options: Any,
) -> PublishResult:
    """Build the ``kind`` repo's tree and upload it to ``repo_id`` (created if absent, ``private`` if new).

    With ``dry_run_dir`` the tree is written there and nothing is uploaded. ``api`` defaults to
    ``huggingface_hub.HfApi()``; ``options`` go to `build_tree`.
    """
    from huggingface_hub.utils import validate_repo_id

    if kind not in KINDS:
        raise PublishError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    validate_repo_id(repo_id)
    if "/" not in repo_id:
        raise PublishError(f"repo_id: {repo_id!r} has no namespace; use 'your-name-or-org/{repo_id}'.")
    if dry_run_dir is not None:
        tree = build_tree(kind, repo_id, source, dry_run_dir, **options)
        return PublishResult(kind, repo_id, tree, tree_files(tree), dry_run=True)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="grok-publish-") as tmp:
        tree = build_tree(kind, repo_id, source, Path(tmp) / "tree", **options)
        files = tree_files(tree)
        repo_url = api.create_repo(
            repo_id, token=token, private=private, repo_type=kind, exist_ok=True,
            **({"space_sdk": "gradio"} if kind == "space" else {}),
        )
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=tree, repo_type=kind, token=token,
            commit_message=f"Publish GROK {kind} with grok-retina", delete_patterns=_DELETE_PATTERNS[kind],
        )
    return PublishResult(kind, repo_id, None, files, dry_run=False, url=str(repo_url), commit=commit)
