"""The page of `deepfake serve` in a real headless browser: the real command on a free port, a generated clip
chosen in the page, the verdict read off it (and checked against the API's result for that job).

Needs Chromium and its driver from the system's packages (Debian: `apt-get install chromium chromium-driver`;
`.ci/run` installs them where apt-get exists) and Selenium (the dev extra); skipped, saying which is missing,
elsewhere. `SERVE_SCREENSHOT=docs/serve_page.png pytest tests/test_serve_browser.py` also saves the result page;
`SERVE_SCREENSHOT_WEIGHTS=detector.pt SERVE_SCREENSHOT_CLIP=clip.mp4` take a trained detector and a clip of one's
own for it (the README's picture: the demo's detector on a held-out fake).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_predict import make_weights

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "chromium-driver")


def _find(names) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    from selenium.webdriver.chrome.service import Service

    binary, driver = _find(BROWSERS), _find(DRIVERS)
    if binary is None or driver is None:
        pytest.skip("no headless browser: install Chromium and its driver (Debian: apt-get install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,1900"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()


@pytest.fixture
def live_server(tmp_path):
    """`deepfake serve` in a subprocess on a free port with the tiny detector; yields its URL once the model is
    loaded; stopped with SIGTERM (a clean exit is checked)."""
    pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")
    weights = os.environ.get("SERVE_SCREENSHOT_WEIGHTS") or make_weights(tmp_path / "detector.pt")
    port = _free_port()
    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from deepfake.cli import main; sys.exit(main())",
                             "serve", "--weights", str(weights), "--device", "cpu", "--port", str(port),
                             "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "DEEPFAKE_TOKEN": ""})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the server exited: {(tmp_path / 'server.log').read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(url + "health", timeout=2) as r:
                    if json.load(r)["model_loaded"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not load the model in 120 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        log.seek(0)
        text = log.read()
        log.close()
    assert code == 0, f"the server did not stop cleanly ({code}): {text[-2000:]}"
    assert "Traceback" not in text, text[-2000:]


def test_the_page_uploads_a_clip_and_shows_the_verdict(browser, live_server, synth_dataset, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    clip = shutil.copy(os.environ.get("SERVE_SCREENSHOT_CLIP") or synth_dataset / "fake" / "clip_0003.mp4",
                       tmp_path / "suspect clip.mp4")
    browser.get(live_server)
    wait = WebDriverWait(browser, 90)
    wait.until(lambda b: "model loaded" in b.find_element(By.ID, "health").text)
    assert not browser.find_element(By.ID, "token-panel").is_displayed()  # no token on this server
    browser.find_element(By.ID, "file").send_keys(str(clip))
    browser.find_element(By.ID, "explain").click()
    button = browser.find_element(By.ID, "check")
    assert button.is_enabled()
    button.click()
    wait.until(ec.visibility_of_element_located((By.ID, "result")))
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#strips img") and all(
        b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        for img in b.find_elements(By.CSS_SELECTOR, "#strips img")))

    verdict = browser.find_element(By.ID, "verdict").text
    assert browser.find_element(By.ID, "message").text == ""
    history = browser.execute_script("return JSON.parse(localStorage.getItem('deepfake-history'))")
    assert len(history) == 1 and history[0]["name"] == "suspect clip.mp4"
    with urllib.request.urlopen(f"{live_server}api/v1/videos/{history[0]['id']}") as r:
        result = json.load(r)["result"]
    assert verdict == result["verdict"] and verdict in ("fake", "real")  # what the page shows is the API's
    assert history[0]["verdict"] == verdict
    assert f"{result['p_fake']:.3f}" in browser.find_element(By.ID, "p-fake").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#faces tbody tr")
    assert len(rows) == len(result["faces"]) >= 1
    assert browser.find_elements(By.CSS_SELECTOR, "#chart svg polyline")  # the per-frame timeline
    assert "suspect clip.mp4" in browser.find_element(By.ID, "history").text
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # no script error, no CSP block

    shot = os.environ.get("SERVE_SCREENSHOT")
    if shot:
        browser.execute_script("document.getElementById('plot-box').open = true")
        time.sleep(0.3)
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1000, height + 160)
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(shot)
