"""`snakemake --report`: every stage's figures and the kernel table, rendered by a real browser."""

from __future__ import annotations

import pytest
from headless_browser import chromium, evaluate_in_page
from workflow_helpers import MAIN_CONFIG, REPO, TINY_CONFIG, run_ok

CONFIGS = (
    MAIN_CONFIG,
    TINY_CONFIG,
    REPO / "tests" / "configs" / "tiny_select.yaml",
    REPO / "tests" / "configs" / "tiny_kernel.yaml",
)
EXPECTED = {
    "results/graph/brute_force/heatmap.png",
    "results/eval/comparison.png",
    "results/eval/weights.png",
    *(
        f"results/eval/{run}/{fig}.png"
        for run in ("random", "stratified", "skillit")
        for fig in ("curves", "mixture")
    ),
    "results/select/selected/scores.png",
    "results/select/selected/composition.png",
    "results/select/eval/comparison.png",
    "results/select/eval/costs.html",
    "results/kernel/solutions.png",
    "results/kernel/comparison.html",
}
# decode every embedded figure in the page; read the kernel table; see that the app rendered
CHECK = """
(async () => {
  const figures = [];
  for (const [path, r] of Object.entries(results)) {
    if (r.mime_type === "image/png") {
      const img = new Image();
      img.src = r.data_uri;
      await img.decode();
      figures.push([path, img.naturalWidth, img.naturalHeight, r.caption.length]);
    }
  }
  const table = Object.entries(results).find(([p, r]) => p.endsWith("comparison.html"))[1];
  const html = await (await fetch(table.data_uri)).text();
  const doc = new DOMParser().parseFromString(html, "text/html");
  return JSON.stringify({
    paths: Object.keys(results),
    figures,
    table_rows: doc.querySelectorAll("tr").length,
    table_header: Array.from(doc.querySelectorAll("th")).map((th) => th.textContent),
    text: document.body.innerText.length,
  });
})()
"""


@pytest.mark.slow
def test_report_holds_every_stage_and_renders(tmp_path):
    if chromium() is None:
        pytest.skip("no Chromium to render the report (apt-get install chromium)")
    run_ok(tmp_path, configs=CONFIGS)
    run_ok(tmp_path, "--report", str(tmp_path / "report.html"), configs=CONFIGS)
    page = evaluate_in_page((tmp_path / "report.html").as_uri(), CHECK)
    assert set(page["paths"]) == EXPECTED
    figures = {path: (w, h, caption) for path, w, h, caption in page["figures"]}
    assert set(figures) == EXPECTED - {"results/kernel/comparison.html", "results/select/eval/costs.html"}
    for path, (w, h, caption) in figures.items():
        assert w > 200 and h > 100 and caption > 40, (path, w, h, caption)
    assert page["table_rows"] == 1 + 3 * 2  # header + formulas × (val, test)
    assert "finetune_accuracy" in page["table_header"]
    assert page["text"] > 100  # the report app rendered its page
