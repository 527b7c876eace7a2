"""The pages at laptop width, checked in a real browser (Debian's chromium, headless): no column
narrower than its header's longest word, no row taller than a few lines (issue 21). A copy of each
page gets a small measuring script (the pages themselves carry none); chromium's --dump-dom returns
what it wrote."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("UNIFYBENCH_REQUIRE_BROWSER"):
    pytest.skip("no chromium here (make test and .ci/run install it; UNIFYBENCH_REQUIRE_BROWSER=1 makes this an error)",
                allow_module_level=True)

MEASURE = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });  // the per-concept tables too
  const wordWidth = (el, text) => { const s = document.createElement('span'); s.style.whiteSpace = 'nowrap';
    s.style.font = getComputedStyle(el).font; s.textContent = text; document.body.appendChild(s);
    const w = s.getBoundingClientRect().width; s.remove(); return w; };
  const out = {narrow: [], tall: [], lineHeight: 0};
  const lh = parseFloat(getComputedStyle(document.body).lineHeight) || 20; out.lineHeight = lh;
  for (const th of document.querySelectorAll('thead th')) {
    const words = th.textContent.trim().split(/\\s+/).filter(Boolean);
    const longest = Math.max(0, ...words.map(w => wordWidth(th, w)));
    const inner = th.getBoundingClientRect().width - parseFloat(getComputedStyle(th).paddingLeft)
                  - parseFloat(getComputedStyle(th).paddingRight);
    if (inner + 1 < longest) out.narrow.push([th.textContent.trim(), Math.round(inner), Math.round(longest)]);
  }
  for (const tr of document.querySelectorAll('.scroll > table > tbody > tr')) {
    const h = tr.getBoundingClientRect().height;
    if (h > 4 * lh + 12) out.tall.push([tr.textContent.trim().slice(0, 60), Math.round(h)]);
  }
  out.sideways = [...document.querySelectorAll('.scroll')].filter(s => s.scrollWidth > s.clientWidth + 1)
    .map(s => [Math.round(s.scrollWidth), Math.round(s.clientWidth)]);
  const pre = document.createElement('pre'); pre.id = 'measured'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def measure(page, width: int, tmp_path) -> dict:
    probe = tmp_path / f"probe-{width}-{page.name}"
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900",
                           "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r"<pre id=\"measured\">(.*?)</pre>", done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """runs/demo as `make demo` lays it out, plus a wide understanding table and a group of seeds."""
    root = tmp_path_factory.mktemp("browser")
    out = root / "runs" / "demo"
    for args in (["--method", "real-images", "--backbones", "tiny", "--images-per-prompt", "1"],
                 ["--method", "always-yes"], ["--method", "random-answer", "--seeds", "0,1"]):
        assert cli("run", *args, "--limit", "2", "--out", str(out)).returncode == 0
    board = out / "leaderboard.html"
    assert cli("leaderboard", str(out), "--format", "html", "--out", str(board)).returncode == 0
    run_dir = next(p for p in out.iterdir() if p.name.startswith("random-answer"))
    assert cli("gallery", str(run_dir)).returncode == 0
    return board, run_dir / "gallery.html"


@pytest.mark.parametrize("width", [1280, 1400])
def test_the_leaderboard_reads_at_laptop_width(pages, tmp_path, width):
    found = measure(pages[0], width, tmp_path)
    assert found["narrow"] == [], found["narrow"]  # e.g. ['source', 9, 46]: a header narrower than its word
    assert found["tall"] == [], found["tall"]


@pytest.mark.parametrize("width", [1280, 1400])
def test_the_gallery_reads_at_laptop_width(pages, tmp_path, width):
    found = measure(pages[1], width, tmp_path)
    assert found["narrow"] == [], found["narrow"]


ONE_ROW_PLUGIN = '''
from pathlib import Path
from PIL import Image
from unifybench.kit.args import Arg
from unifybench.methods import Method

class Unified(Method):
    name = "unified-with-long-arguments"
    tasks = frozenset({"rec", "vqa", "text_only", "choice", "gen", "attr_gen"})
    arguments = {
        "checkpoint": Arg(str, "/home/someone/experiments/personalization/checkpoints/unified_model_stage3_epoch15",
                          "a long path, as real runs name them"),
        "model": Arg(str, "some-organisation/a-unified-model-with-a-long-name-512x512", "a hub name"),
        "epochs": Arg(int, 15, "epochs"),
    }

    def answer(self, concept, state, requests):
        return ["Yes, it is the concept in a nice place." for r in requests]

    def generate(self, concept, state, requests):
        return [[Image.new("RGB", (32, 32), (r.index * 9 % 255, 60, 90)) for _ in range(r.n_images)]
                for r in requests]
'''


@pytest.mark.parametrize("width", [1280, 1400])
def test_a_one_row_table_of_every_task_does_not_scroll_sideways(tmp_path, width):
    from conftest import make_plugin

    plugin = make_plugin(tmp_path / "plugin", "one-row-plugin", "one_row", ONE_ROW_PLUGIN,
                         {"unified-with-long-arguments": "one_row:Unified"})
    out = tmp_path / "runs"
    ran = cli("run", "--method", "unified-with-long-arguments", "--backbones", "tiny", "--limit", "1",
              "--images-per-prompt", "1", "--concepts", "dog", "--out", str(out), pythonpath=[plugin])
    assert ran.returncode == 0, ran.stderr
    board = tmp_path / "board.html"
    assert cli("leaderboard", str(out), "--no-published", "--format", "html", "--out", str(board)).returncode == 0
    found = measure(board, width, tmp_path)
    assert found["sideways"] == [], found["sideways"]  # [scroll width, visible width] of each table that scrolls
    assert found["narrow"] == [] and found["tall"] == [], found
