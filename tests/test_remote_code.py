"""A saved GROK folder loads with trust_remote_code=True in a process that cannot import this package."""

import json
import subprocess
import sys
import textwrap

import torch

from tests.tiny_components import fundus_image, messages, oct_image, tiny_model_and_processor

CHILD = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_grok", "processing", "grok_retina", "tests"):
        sys.modules[name] = None  # any import of the package now fails
    try:
        import modeling_grok
        raise SystemExit("the package is importable")
    except ImportError:
        pass
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    folder, inputs_file = sys.argv[1], sys.argv[2]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    spec = json.load(open(inputs_file))
    images = [[Image.open(p) for p in spec["images"]]]
    inputs = processor(text=[spec["text"]], images=images, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    print(json.dumps({"module": type(model).__module__, "processor": type(processor).__module__,
                      "ids": out[0].tolist()}))
    """
)


def test_remote_code_loading_without_the_package(tmp_path):
    model, processor = tiny_model_and_processor()
    folder = tmp_path / "grok"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_grok.GrokForConditionalGeneration"
    paths = [tmp_path / "cfp.png", tmp_path / "oct.png"]
    fundus_image().save(paths[0])
    oct_image().save(paths[1])
    text = processor.apply_chat_template(messages(True, True), add_generation_prompt=True, tokenize=False)
    (tmp_path / "inputs.json").write_text(json.dumps({"text": text, "images": [str(p) for p in paths]}))
    (tmp_path / "child.py").write_text(CHILD)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(folder), str(tmp_path / "inputs.json")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child["module"].startswith("transformers_modules") and child["processor"].startswith("transformers_modules")
    from PIL import Image

    inputs = processor(text=[text], images=[[Image.open(p) for p in paths]], return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0].tolist()
    assert child["ids"] == expected
