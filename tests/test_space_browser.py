"""The Space in a real browser: the app on 127.0.0.1 with a tiny random GROK, driven by Debian's headless chromium."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from processing.phantom import RetinaPhantom
from tests.tiny_components import tiny_model_and_processor

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
WAIT_S = 120
MAX_NEW_TOKENS = 40

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason="needs Debian's chromium and chromedriver (/usr/bin); .ci/run installs them "
        "(apt-get install chromium chromium-driver)",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the app exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer on {url} within {WAIT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """A tiny GROK folder, a phantom CFP + OCT pair, and the app serving that model;
    yields (url, model folder, image paths, biomarkers)."""
    tmp = tmp_path_factory.mktemp("space")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(tmp / "model")
    processor.save_pretrained(tmp / "model")
    sample = RetinaPhantom(seed=0)[0]  # a phantom pair and its 37 ground-truth biomarkers
    images = {"cfp": tmp / "cfp.png", "oct": tmp / "oct.png"}
    sample["cfp"].save(images["cfp"])
    sample["oct"][0].save(images["oct"])
    biomarkers = {k: round(v, 3) for k, v in sample["biomarkers"].items() if v is not None}
    port = _free_port()
    env = {
        **os.environ, "GROK_MODEL": str(tmp / "model"), "GROK_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
        "GROK_EXAMPLES_DIR": str(tmp / "examples"), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = tmp / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(ROOT / "spaces" / "app.py"), "--host", "127.0.0.1",
                                   "--port", str(port)], cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/", server, log)
        yield f"http://127.0.0.1:{port}/", tmp / "model", images, biomarkers
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,3400", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _upload(driver, wait, slot: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    field = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#grok-{slot} input[type=file]"))
    field.send_keys(str(path))
    # the uploaded file's name appears (split over lines) once the upload has finished
    wait.until(lambda d: path.name in "".join(d.find_element(By.ID, f"grok-{slot}").text.split()))


def _value(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, f"#{element_id} textarea, #{element_id} input")
    return field.get_property("value")


def _open(driver, url: str):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.5)


def test_upload_pair_and_read_the_report(space, browser):
    from selenium.webdriver.common.by import By

    sys.path.insert(0, str(ROOT / "spaces"))
    from panels import label_line
    from validation import load_image

    from grok_retina.pipeline import GrokPipeline

    url, folder, images, biomarkers = space
    wait = _open(browser, url)
    _upload(browser, wait, "cfp", images["cfp"])
    _upload(browser, wait, "oct", images["oct"])
    browser.find_element(By.CSS_SELECTOR, "#grok-biomarker-inputs button").click()  # open the accordion
    # gradio renders a closed accordion's children only once it opens: wait for the box to exist and show
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#grok-biomarker-json textarea"))
    wait.until(lambda d: box.is_displayed())
    box.send_keys(json.dumps(biomarkers))
    browser.find_element(By.ID, "grok-submit").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grok-status .grok-done, #grok-status .grok-error"))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "space.png"))
    status = browser.find_element(By.ID, "grok-status").text
    assert "Done." in status, status

    # The same model on the same images in this process gives the report the page shows.
    pipe = GrokPipeline.from_pretrained(folder, device="cpu", max_new_tokens=MAX_NEW_TOKENS)
    expected = pipe(cfp=load_image(images["cfp"], "cfp"), oct=load_image(images["oct"], "oct"), biomarkers=biomarkers)
    assert expected.text and _value(browser, "grok-report") == expected.text
    assert _value(browser, "grok-label") == label_line(expected.label)
    table = browser.find_element(By.ID, "grok-biomarker-table")
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 37
    out_of_range = [b for b, a in expected.assessments.items() if a.status in ("low", "high")]
    highlighted = table.find_elements(By.CSS_SELECTOR, "tr.grok-out")
    assert len(highlighted) == len(out_of_range) and all(("low" in r.text) != ("high" in r.text) for r in highlighted)
    assert table.text.count("given") == len(biomarkers)
    unsupported = sum(c.value_ok is False for c in expected.verification.claims)
    assert f"{unsupported} unsupported number(s)" in browser.find_element(By.ID, "grok-grounding").text


def test_corrupt_file_shows_the_error(space, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _, images, _ = space
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(1).bytes(2048))
    wait = _open(browser, url)
    _upload(browser, wait, "cfp", corrupt)
    _upload(browser, wait, "oct", images["oct"])
    browser.find_element(By.ID, "grok-submit").click()
    error = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grok-status .grok-error"))[0]
    assert "CFP (colour fundus photograph): 'corrupt.png' is not a readable image file" in error.text
    assert _value(browser, "grok-report") == ""
