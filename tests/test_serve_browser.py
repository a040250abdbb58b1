"""The web chat page in headless Chromium (Debian's ``chromium``, driven by Playwright): type a
message, watch the answer stream in with live tokens/s, press stop mid-answer; screenshots are saved
(under ``tmp_path`` and, when ``LMLAB_ARTIFACTS`` is set, there too). Skips without the browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

sync_api = pytest.importorskip("playwright.sync_api")

from test_serve import make_tiny  # noqa: E402

from lmlab.serve import Limits, create_app  # noqa: E402
from lmlab.serve.background import background  # noqa: E402

CHROMIUM = os.environ.get("LMLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # installed but not starting is a failure
        yield b
        b.close()


def _save(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("LMLAB_ARTIFACTS"):
        out = Path(os.environ["LMLAB_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / name)
    return shot


def test_chat_page_streams_an_answer_and_stops(browser, tmp_path):
    lm, tok = make_tiny(slow=0.03)  # about 30 tokens a second: slow enough to press stop mid-answer
    app = create_app(lm, tok, model_id="tiny", limits=Limits(max_tokens=100))
    with background(app) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('tiny')")
        page.fill("#max_tokens", "12")
        page.fill("#temperature", "0")
        page.fill("#system", "Be brief.")
        page.fill("#input", "hello")
        page.press("#input", "Enter")
        page.wait_for_selector(".assistant[data-done='true']", timeout=30_000)
        answer = page.inner_text(".assistant")
        assert len(answer) > 0 and "error" not in answer
        assert "tokens/s" in page.inner_text("#status") and "finish: length" in page.inner_text("#status")
        _save(page, tmp_path, "serve-chat-answer.png")

        page.click("#clear")  # a new chat: the tiny model's context is 128 characters
        page.fill("#max_tokens", "60")
        page.fill("#input", "the quick brown fox")
        page.click("#send")
        page.wait_for_function("document.querySelector('.assistant').textContent.length >= 3", timeout=30_000)
        assert page.is_enabled("#stop") and not page.query_selector(".error")
        page.click("#stop")
        page.wait_for_selector(".assistant[data-stopped='true']", timeout=10_000)
        stopped = page.inner_text("#status")
        assert stopped.startswith("stopped after") and "tokens/s" in stopped
        assert 3 <= len(page.inner_text(".assistant")) < 60
        assert len(page.query_selector_all(".user")) == 1
        shot = _save(page, tmp_path, "serve-chat-stopped.png")
        assert shot.stat().st_size > 5000
