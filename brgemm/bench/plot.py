"""`python -m brgemm bench --plot FILE.png`: the rows on a roofline chart (needs matplotlib)."""

import numpy as np

from ..peak import fp32_peak, get_peak


def plot(rows, path):
    """A roofline chart: the fp32 roofs for each thread count and every measured point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = get_peak()
    rows = [r for r in rows if r.get("bytes") and r.get("brgemm_gflops")]  # --ceilings rows have no point
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ai = np.logspace(-1, 3, 200)
    for t in sorted({r["threads"] for r in rows}):
        p, bw = fp32_peak(t), peak["bandwidth"].get(str(t)) or peak["bandwidth"]["1"]
        ax.plot(ai, np.minimum(p, ai * bw), "--", color="gray" if t == 1 else "black",
                label=f"roofline, {t} thread{'s' * (t > 1)}")
    markers = {"brgemm": "o", "numpy": "s", "torch": "^", "onnxruntime": "v", "openvino": "D"}
    for lib, marker in markers.items():
        pts = [(r["flops"] / r["bytes"], r[f"{lib}_gflops"], r["threads"]) for r in rows if f"{lib}_gflops" in r]
        for t, color in ((1, "tab:blue"), (2, "tab:orange")):
            xs = [x for x, _, th in pts if (th == 1) == (t == 1)]
            ys = [y for _, y, th in pts if (th == 1) == (t == 1)]
            if xs:
                ax.scatter(xs, ys, marker=marker, color=color if lib == "brgemm" else "none",
                           edgecolors=color, label=f"{lib}, {'1 thread' if t == 1 else 'all threads'}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"brgemm fp32 on {peak['cpu']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


