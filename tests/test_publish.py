"""`grok-retina publish`: dry-run trees, uploads through an injected fake HfApi, and offline cache resolution."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard
from huggingface_hub.repocard import metadata_load

from grok_retina.publish import PublishError, publish, tree_files, wheel_url, write_tree_atomically
from recipes.publish import main
from tests.tiny_components import fundus_image, messages, oct_image, tiny_model_and_processor

MODEL_TREE = {
    "README.md", "chat_template.jinja", "component_loading.py", "config.json", "configuration_grok.py",
    "generation_config.json", "image_processing_grok.py", "model.safetensors", "modeling_grok.py",
    "processing_grok.py", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
}
SPACE_CODE = {"app.py", "examples.py", "panels.py", "validation.py"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny GROK folder with training leftovers that must not be published."""
    model, processor = tiny_model_and_processor()
    folder = tmp_path_factory.mktemp("trained") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "optimizer.pt").write_bytes(b"state")
    (folder / "training_args.bin").write_bytes(b"args")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"old")
    return model, processor, folder


class FakeApi:
    """Records create_repo and upload_folder calls, and the uploaded folder's files at upload time."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", tree_files(Path(kwargs["folder_path"])), kwargs))
        return "commit-info"


def test_model_dry_run_tree_is_exact(tiny, tmp_path):
    _, _, folder = tiny
    result = publish("model", "grok-retina/grok-retina", folder, dry_run_dir=tmp_path / "tree", datasets=["org/data"])
    assert result.dry_run and result.tree == tmp_path / "tree"
    assert set(result.files) == MODEL_TREE == set(tree_files(result.tree))
    for name in MODEL_TREE - {"README.md"}:
        assert (result.tree / name).read_bytes() == (folder / name).read_bytes(), name
    meta = metadata_load(result.tree / "README.md")
    assert meta["pipeline_tag"] == "image-text-to-text" and meta["datasets"] == ["org/data"]
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]  # no temporary folder left behind


def test_cli_dry_run_and_its_errors(tiny, tmp_path, capsys):
    folder = str(tiny[2])
    argv = ["model", "--repo-id", "org/grok", "--model-dir", folder, "--dataset", "org/data", "--dry-run"]
    assert main([*argv, str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"dry run: {len(MODEL_TREE)} files in {tmp_path / 'out'}" in out and "  model.safetensors" in out
    assert main([*argv, str(tmp_path / "out")]) == 2  # never mixes with an earlier tree
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["model", "--repo-id", "grok-retina", "--model-dir", folder, "--dry-run", str(tmp_path / "x")]) == 2
    assert "'grok-retina' has no namespace; use 'your-name-or-org/grok-retina'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dataset", "--repo-id", "org/d", "--source", folder])  # --provenance is required
    ablation = tmp_path / "ablation.json"
    ablation.write_text(json.dumps({"reports": {}, "sections": {}}))
    assert main([*argv, str(tmp_path / "y"), "--results", str(ablation)]) == 2  # not gou_results.json
    err = capsys.readouterr().err
    assert f"{ablation} is not an evaluation result" in err and "pass --results the gou_results.json" in err
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("model.safetensors", "has no .safetensors weights"),
        ("tokenizer.json", "has no tokenizer files"),
        ("chat_template.jinja", "has no chat template"),
        ("modeling_grok.py", r"lacks the remote code \(modeling_grok.py\)"),
        ("processor_config.json", "lacks processor_config.json"),
    ],
)
def test_incomplete_model_folders_are_refused(tiny, tmp_path, remove, message):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny[2], folder)
    (folder / remove).unlink()
    with pytest.raises(PublishError, match=message):
        publish("model", "org/grok", folder, dry_run_dir=tmp_path / "tree", datasets="org/data")
    assert not (tmp_path / "tree").exists()


def test_tree_writes_are_atomic(tmp_path):
    def fill(tmp):
        (tmp / "half.txt").write_text("written")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_tree_atomically(tmp_path / "tree", fill)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    assert tree_files(write_tree_atomically(tmp_path / "empty", lambda t: (t / "a").write_text("a"))) == ["a"]


def test_upload_calls_create_repo_and_upload_folder(tiny, tmp_path):
    api = FakeApi()
    result = publish("model", "org/grok", tiny[2], private=True, token="hf_fake", api=api, datasets="org/data")
    (_, repo_id, create), (_, uploaded, upload) = api.calls
    assert repo_id == "org/grok"
    assert create == {"token": "hf_fake", "private": True, "repo_type": "model", "exist_ok": True}
    assert set(uploaded) == MODEL_TREE == set(result.files)
    assert upload["repo_id"] == "org/grok" and upload["repo_type"] == "model" and upload["token"] == "hf_fake"
    assert upload["delete_patterns"] == ["*.safetensors"]  # stale shards of an earlier upload go
    assert not Path(upload["folder_path"]).exists()  # the temporary tree is cleaned up
    assert result.url == "https://huggingface.co/org/grok" and result.commit == "commit-info" and not result.dry_run

    api = FakeApi()
    publish("space", "org/demo", None, api=api, model_id="org/grok", package_spec="grok-retina @ git+https://x/y@abc")
    (_, _, create), (_, uploaded, upload) = api.calls
    assert create["repo_type"] == "space" and create["space_sdk"] == "gradio" and create["private"] is False
    assert set(uploaded) == SPACE_CODE | {"README.md", "requirements.txt"} and upload["repo_type"] == "space"


def test_space_tree_with_a_package_spec(tmp_path):
    spec = "grok-retina[demo] @ git+https://github.com/org/grok-retina@0123abc"
    result = publish("space", "org/demo", None, dry_run_dir=tmp_path / "space", model_id="org/grok", package_spec=spec)
    assert set(result.files) == SPACE_CODE | {"README.md", "requirements.txt"}
    lines = [l for l in (result.tree / "requirements.txt").read_text().splitlines() if not l.startswith("#")]
    assert lines == [spec, "pandas>=2.0"]
    card = SpaceCard.load(result.tree / "README.md")
    assert card.data.models == ["org/grok"] and card.data.sdk == "gradio" and spec in card.text
    root = Path(__file__).resolve().parents[1] / "spaces"
    assert (result.tree / "app.py").read_bytes() == (root / "app.py").read_bytes()


def test_space_tree_with_the_wheel(tmp_path):
    result = publish("space", "org/demo", None, dry_run_dir=tmp_path / "space")
    (wheel,) = [f for f in result.files if f.startswith("wheels/")]
    name = Path(wheel).name
    assert name.startswith("grok_retina-") and name.endswith("-py3-none-any.whl")
    requirement = [l for l in (result.tree / "requirements.txt").read_text().splitlines() if not l.startswith("#")][0]
    assert requirement == f"grok-retina[demo] @ {wheel_url('org/demo', name)}"
    assert requirement.endswith(f"/spaces/org/demo/resolve/main/wheels/{name}")
    contents = zipfile.ZipFile(result.tree / wheel).namelist()
    assert {"grok_retina/publish.py", "grok_retina/pipeline.py", "hub_cards/templates/space_readme.md",
            "modeling_grok/modeling_grok.py", "processing/biomarkers.py"} <= set(contents)
    assert not any(n.startswith(("tests/", "spaces/")) for n in contents)


def test_dataset_tree_embeds_images(tmp_path):
    from processing.grok_dataset import load_grok_dataset

    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(3):
        fundus_image(seed=i).save(images / f"cfp{i}.png")
        oct_image(seed=i).save(images / f"oct{i}.png")
        rows.append({"id": f"s{i}", "patient_id": f"p{i}", "eye": "OD", "cfp": f"images/cfp{i}.png",
                     "oct": f"images/oct{i}.png", "label": "Glaucoma", "rnfl": 20.0 + i})
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = publish("dataset", "org/grok-phantom", tmp_path / "manifest.csv", dry_run_dir=tmp_path / "tree",
                     synthetic=True, max_shard_rows=2)
    assert result.files == ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    meta = metadata_load(result.tree / "README.md")
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    for i in range(3):  # the Parquet files must not point at the source images
        (images / f"cfp{i}.png").unlink()
        (images / f"oct{i}.png").unlink()
    loaded = load_grok_dataset(result.tree / "data", split="train")
    assert loaded["id"] == ["s0", "s1", "s2"] and [b["rnfl"] for b in loaded["biomarkers"]] == [20.0, 21.0, 22.0]
    assert loaded[2]["cfp"].size == (96, 96) and list(loaded[2]["oct"][0].getdata()) == list(oct_image(seed=2).getdata())


CHILD = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_grok", "processing", "grok_retina", "hub_cards", "tests"):
        sys.modules[name] = None  # any import of the package now fails
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    repo_id, spec = sys.argv[1], json.load(open(sys.argv[2]))
    model = AutoModelForImageTextToText.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)
    inputs = processor(text=[spec["text"]], images=[[Image.open(p) for p in spec["images"]]], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    print(json.dumps({"file": sys.modules[type(model).__module__].__file__, "ids": out[0].tolist()}))
    """
)


def place_in_cache(tree: Path, repo_id: str, cache: Path) -> Path:
    """Copy a tree into a Hub cache the way huggingface_hub lays it out: content-named blobs, a snapshot
    of relative symlinks named by the commit, and refs/main holding the commit hash."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1("".join(tree_files(tree)).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name in tree_files(tree):
        data = (tree / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_dry_run_tree_resolves_offline_from_the_cache_without_the_package(tiny, tmp_path):
    # A Hub model id needs a namespace ("grok-retina" alone is not a valid model repo id), so the short
    # name is published as "grok-retina/grok-retina".
    model, processor, folder = tiny
    repo_id = "grok-retina/grok-retina"
    tree = publish("model", repo_id, folder, dry_run_dir=tmp_path / "tree", datasets="org/data").tree
    cache = tmp_path / "hub"
    snapshot = place_in_cache(tree, repo_id, cache)
    paths = [tmp_path / "cfp.png", tmp_path / "oct.png"]
    fundus_image().save(paths[0])
    oct_image().save(paths[1])
    text = processor.apply_chat_template(messages(True, True), add_generation_prompt=True, tokenize=False)
    (tmp_path / "inputs.json").write_text(json.dumps({"text": text, "images": [str(p) for p in paths]}))
    (tmp_path / "child.py").write_text(CHILD)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(tmp_path / "child.py"), repo_id, str(tmp_path / "inputs.json")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert "transformers_modules" in child["file"]  # the remote code from the cached snapshot ran
    from PIL import Image

    inputs = processor(text=[text], images=[[Image.open(p) for p in paths]], return_tensors="pt")
    assert child["ids"] == model.generate(**inputs, max_new_tokens=6, do_sample=False)[0].tolist()
    assert (snapshot / "model.safetensors").is_symlink()
