"""tools/results_table.py on the committed eval outputs: the tables it prints agree with the JSON
summaries that `jsa-rt eval` wrote (the README's tables come from here)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "benchmarks" / "eval"


def run_tool(*args) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "results_table.py"), str(EVAL), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_class_hits_add_up_to_the_class_level_recall():
    out = run_tool("--classes", "test-unheard")
    header = next(line for line in out.splitlines() if line.startswith("| test-unheard: class"))
    models = [cell.split(" a2i")[0] for cell in header.strip("|").split("|")[2:]]
    total = next(line for line in out.splitlines() if line.startswith("| all |"))
    cells = [c.strip() for c in total.strip("|").split("|")[2:]]
    assert len(models) == len(cells) >= 2
    for model, cell in zip(models, cells):
        summary = json.loads((EVAL / model.strip() / "test-unheard.json").read_text())
        recall, n = summary["retrieval_class"], summary["retrieval_class"]["a2i"]["n"]
        a2i, i2a = (int(x) for x in cell.split(" / "))
        assert (a2i, i2a) == (round(recall["a2i"]["r1"] * n), round(recall["i2a"]["r1"] * n))


def test_main_table_rows_match_the_summaries():
    out = run_tool()
    row = next(line for line in out.splitlines() if line.startswith("| test | edge-jsa |"))
    summary = json.loads((EVAL / "edge-jsa" / "test.json").read_text())
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == str(summary["n"]) and cells[3] == f"{100 * summary['ciou50']:.1f}"
