"""The attention page in a real browser: Debian's headless Chromium driven by Playwright, against a server on a
free loopback port. Set ``NMT_SERVE_SCREENSHOT=/path/shot.png`` to keep a copy of the screenshot (README)."""

import os
import shutil
from pathlib import Path

import httpx
import pytest

from nmt.config import ServeConfig
from nmt.serve.app import create_app
from nmt.serve.server import serve_in_thread
from nmt.translate import Translator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,  # a browser process
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def base_url(digit_model_dir):
    translator = Translator.from_dir(digit_model_dir, device="cpu")
    with serve_in_thread(create_app(translator, ServeConfig(model_dir=str(digit_model_dir)))) as url:
        yield url


def test_page_translates_and_shows_the_attention(base_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    sentences = ["three one four one", "nine two six"]
    expected = httpx.post(f"{base_url}/translate", json={"lines": sentences, "attention": True}).json()
    first = expected["translations"][0]
    attention = first["attention"]
    row, col = len(attention["tgt_tokens"]) - 1, 0
    page_errors: list[str] = []
    outside: list[str] = []

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 860})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on("request", lambda r: None if r.url.startswith(base_url) else outside.append(r.url))
            page.goto(f"{base_url}/")
            # a selector, not wait_for_function: the page's CSP (no 'unsafe-eval') blocks the polling that uses eval
            page.wait_for_selector("#model-info:has-text('en → fr')")
            page.fill("#source", "\n".join(sentences))
            page.click("#translate")
            page.wait_for_selector("#results li.selected")
            assert page.locator("#results li .target").all_inner_texts() == [
                t["text"] for t in expected["translations"]
            ]
            cells = page.locator("#heatmap rect.cell")
            assert cells.count() == len(attention["tgt_tokens"]) * len(attention["src_tokens"])

            page.hover(f'#heatmap rect.cell[data-row="{row}"][data-col="{col}"]')
            tooltip = page.locator("#tooltip")
            tooltip.wait_for(state="visible")
            assert tooltip.locator(".tt-src").inner_text() == attention["src_tokens"][col]
            assert tooltip.locator(".tt-tgt").inner_text() == attention["tgt_tokens"][row]
            assert float(tooltip.locator(".tt-weight").inner_text()) == pytest.approx(
                attention["weights"][row][col], abs=1e-4
            )

            page.click("#results li:nth-child(2)")
            second = expected["translations"][1]["attention"]
            assert cells.count() == len(second["tgt_tokens"]) * len(second["src_tokens"])
            page.click("#results li:nth-child(1)")
            page.hover('#heatmap rect.cell[data-row="1"][data-col="0"]')
            tooltip.wait_for(state="visible")

            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert page_errors == [] and outside == []
    if os.environ.get("NMT_SERVE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["NMT_SERVE_SCREENSHOT"])
