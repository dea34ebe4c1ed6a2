"""JSA listen minus EZ-VSL, paired by scene (95 % intervals), per split: the three comparisons of
this folder's compare/ in one picture. Run from this folder: python plot_jsa_vs_ezvsl.py"""
import json
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
PANELS = [("s2-M2_vs_s2-EZ2", "equal budget, both at 224 x 224"),
          ("res384_vs_EZ2_384", "the same two, both run at 384 x 384"),
          ("ship15_vs_EZ2_384", "shipped default (+1 epoch at 384) vs EZ-VSL at 384"),
          ("S16_vs_EZ2_s16", "the same two at output stride 16 (24 x 24)")]
SPLITS = ["test", "test-unheard", "digits", "real", "pairs", "pairs-unheard", "real-pairs", "val", "val-pairs"]

fig, axes = plt.subplots(1, len(PANELS), figsize=(19, 5.5), sharey=True)
for ax, (folder, title) in zip(axes, PANELS):
    rows = []
    for split in SPLITS:
        path = HERE / "compare" / folder / f"{split}.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())["metrics"]
        for key, label in (("pointing", "pointing"), ("follows", "follows")):
            if key in metrics:
                rows.append((f"{split} {label}", metrics[key]))
    labels = [r[0] for r in rows]
    for y, (_, m) in enumerate(rows):
        colour = "tab:green" if m["lo"] > 0 else "tab:red" if m["hi"] < 0 else "tab:grey"
        ax.errorbar(100 * m["diff"], y, xerr=[[100 * (m["diff"] - m["lo"])], [100 * (m["hi"] - m["diff"])]],
                    fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("JSA listen - EZ-VSL (points, 95 % paired interval)")
axes[0].invert_yaxis()
fig.suptitle("JSA listen against EZ-VSL on the default's 20,188 training scenes "
             "(green: JSA better, red: EZ-VSL better, grey: tie)")
fig.tight_layout()
fig.savefig(HERE / "jsa_vs_ezvsl.png", dpi=90)
print("wrote", HERE / "jsa_vs_ezvsl.png")
