"""README.md's two commands and .ci/run stay in step: CI installs as the README says and runs its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_command(section: str) -> str:
    readme = (ROOT / "README.md").read_text()
    body = readme.split(f"## {section}", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", body, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    assert _first_command("Run the tests") in (ROOT / ".ci" / "run").read_text()


def test_ci_installs_as_the_readme_says():
    install = _first_command("Install and run the main job")
    ci = (ROOT / ".ci" / "run").read_text()
    assert install.endswith("grok-retina quickstart")
    for step in re.findall(r"pip install [^&]+", install):
        assert step.replace("pip install", "pip install -q", 1).strip() in ci, step
