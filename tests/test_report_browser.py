"""`specray report` output opened in a real browser: headless Chromium renders report.html to a
screenshot, and every figure must have decoded (non-zero natural size), not just be present as bytes.

Chromium comes from Debian's `chromium` package (.ci/run installs it); without it the test skips and
says so. The figures' natural sizes are read by a copy of the page with one script appended that
writes them into the DOM, which `--dump-dom` prints once the page has loaded; a copy with a broken
image shows that the probe does report a failed decode as zero.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_report import runs  # noqa: F401  (the fixture: three small runs with traces)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium); .ci/run installs it"),
]

PROBE = """<script>
window.addEventListener('load', () => {
  const sizes = [...document.images].map(i => [i.getAttribute('data-file'), i.naturalWidth, i.naturalHeight]);
  const out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(sizes);
  document.body.appendChild(out);
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def natural_sizes(tmp_path: Path, page: Path) -> list[list]:
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, (done.returncode, done.stderr[-2000:])
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_report_renders_in_chromium_with_every_figure_decoded(runs, tmp_path):  # noqa: F811
    out = tmp_path / "report"
    assert report_main_args(runs, out) == 0
    page = out / "report.html"
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures
    sizes = natural_sizes(tmp_path, page)
    assert sorted(name for name, _, _ in sizes) == figures
    assert all(width > 0 and height > 0 for _, width, height in sizes), sizes

    shot = tmp_path / "report.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 0, done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 16  # not a blank page: text and plots drew something


def test_the_probe_reports_a_broken_image_as_zero(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><img data-file="bad.png" src="data:image/png;base64,AAAA"></body></html>')
    assert natural_sizes(tmp_path, page) == [["bad.png", 0, 0]]


def report_main_args(run_dirs: list[str], out: Path) -> int:
    """`specray report RUN... --out DIR`, through the command's own handler."""
    import argparse

    from specray.analysis.report import add_report_parser

    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", *run_dirs, "--out", str(out)])
    return args.handler(args)
