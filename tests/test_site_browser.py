"""The site in a real browser: headless Chromium, network off, opens each kind of page from
``file://``; plotly draws every figure with the expected number of points and nothing is logged
to the console (no error, no failed script).

Chromium's ``--dump-dom`` prints the DOM after the page's scripts ran (``--virtual-time-budget``
lets them finish); ``--enable-logging=stderr`` writes every console message as an
``INFO:CONSOLE`` line. The proxy to a closed port with no bypass keeps any request off the
network, so a page that needed one would show it as a missing plot or a console error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("ruptures", reason="the site extra is not installed: pip install -e '.[site]'")
pytest.importorskip("plotly", reason="the site extra is not installed: pip install -e '.[site]'")

from harness.results.site import build_site  # noqa: E402
from tests.data import synth  # noqa: E402
from tests.sitedata import stepped, write_history  # noqa: E402

BROWSER = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH: apt-get install -y chromium (Debian) to run the browser tests")
RUNS = 10
# The synthetic inference records carry 8 of the kind's metrics (no weights_bytes, energy, duration).
INFERENCE_PLOTS = 8


def _render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM of ``page`` after its scripts ran, and every console line Chromium logged."""
    assert BROWSER is not None
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    write_history(root / "runs", stepped(RUNS), train=True)
    return build_site(root / "runs", root / "site").out


def test_trend_page_draws_every_metric_with_a_point_per_run(site: Path, tmp_path: Path) -> None:
    dom, console = _render(site / synth.CPU_KEY / "cases" / "inference_resnet18-cpu-bs1-32px-fp32.html", tmp_path)
    assert console == []
    assert dom.count('class="plot-container plotly"') == INFERENCE_PLOTS
    assert len(re.findall(r'<path class="point[ "]', dom)) == INFERENCE_PLOTS * RUNS  # one marker per run and metric
    assert dom.count(">step +") >= 1  # the injected slowdown's annotation on the latency plots


@pytest.mark.parametrize(("page", "plots"), [("index.html", 0), (f"{synth.CPU_KEY}/compare.html", 0), (f"{synth.CPU_KEY}/train/0010_run10.html", 4)])
def test_other_pages_render_without_console_messages(site: Path, tmp_path: Path, page: str, plots: int) -> None:
    dom, console = _render(site / page, tmp_path)
    assert console == []
    assert dom.count('class="plot-container plotly"') == plots
    assert "backbone-bench" in dom
