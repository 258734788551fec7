"""The benchmark (brgemm.bench): its arithmetic (the work a padded convolution really does, a
row's ratios and percentages), its options, and a headline run end to end on tiny shapes with a
made-up peak. Nothing here times anything or asserts on speed: benchmarks measure speed, these
tests check that what they print and write is well formed and says only what was measured."""

import io
import json
import re

import numpy as np
import pytest

from brgemm import bench, peak as peak_module
from brgemm.bench import cli, conv, headline, models, networks, rnn
from brgemm.nn import Conv2d
from test_conv import _taps

FAKE_PEAK = {"cpu": "test CPU", "isa": "avx512", "threads": [1, 2],
             "fma_f32": {"1": 200.0, "2": 400.0}, "dot_bf16": {"1": 400.0, "2": 800.0},
             "dot_u8s8": {"1": 800.0, "2": 1600.0}, "dot_s16s16": {"1": 400.0, "2": 800.0},
             "bandwidth": {"1": 10.0, "2": 20.0}}

# What the CLI must never print: the project's own targets, only measurements.
TARGET_WORDS = re.compile(r"\bbars?\b|above the ceiling|needs? \S+ ?% of (the )?peak", re.IGNORECASE)


@pytest.fixture
def fake_peak(tmp_path, monkeypatch):
    """A cached peak in a temporary folder, so that nothing measures the machine."""
    monkeypatch.setenv("BRGEMM_CACHE_DIR", str(tmp_path / "cache"))
    path = peak_module._cache_file()
    (tmp_path / "cache").mkdir()
    with open(path, "w") as f:
        json.dump(FAKE_PEAK, f)
    return FAKE_PEAK


@pytest.mark.parametrize("h, r, stride, pad", [(7, 3, 1, 1), (14, 3, 1, 1), (56, 1, 1, 0), (224, 7, 2, 3),
                                               (5, 3, 2, 1), (1, 3, 1, 1), (9, 5, 3, 2)])
def test_conv_work_counts_the_taps_that_read_the_image(h, r, stride, pad):
    layer = Conv2d(1, 1, r, stride, pad)
    oh, ow = layer.output_size(h, h)
    ones = np.ones((1, 1, h, h))
    inside = sum(int(patch.sum()) for _, _, patch in _taps(ones, layer, oh, ow))  # padding reads zeros
    n, c, k = 3, 5, 7
    assert bench.conv_work(n, c, k, h, r, stride, pad) == 2 * n * c * k * inside
    assert bench.conv_work(n, c, k, h, r, stride, pad) <= 2 * n * c * k * r * r * oh * ow


def test_a_row_has_the_peak_the_roofline_and_the_fastest_peer(fake_peak):
    # 1 GFLOP counted, 0.8 GFLOP needed, brgemm 8 ms, PyTorch 10 ms (channels_last 9 ms), numpy
    # 20 ms; a 200 GFLOP/s peak and 20 GB/s on 2 threads.
    medians = {"brgemm": 8e-3, "torch": 10e-3, "torch[channels_last]": 9e-3, "numpy": 20e-3, "brgemm_float32": 1e-3}
    ratios = {"torch": 10 / 8, "torch[channels_last]": 9 / 8, "numpy": 20 / 8, "brgemm_float32": 1 / 8}
    row = bench._row("case", 2, 1e9, 1e6, medians, ratios, 200.0, work=0.8e9)
    assert row["brgemm_gflops"] == pytest.approx(125.0)
    assert row["percent_of_peak"] == pytest.approx(62.5)
    assert row["percent_of_roofline"] == pytest.approx(100 * 5e-3 / 8e-3)  # bound: 1 GFLOP at 200 GFLOP/s
    assert row["torch_best"] == "torch[channels_last]"
    assert row["ratio_vs_torch"] == pytest.approx(9 / 8)
    assert row["ceiling_vs_torch"] == pytest.approx(9e-3 * 200e9 / 0.8e9)  # the ratio at 100 % of the peak
    # Our own variants are not peers: the fastest peer is channels_last, not brgemm_float32.
    assert (row["best_peer"], row["ratio_vs_best_peer"]) == ("torch[channels_last]", pytest.approx(9 / 8))
    assert row["best_peer_seconds"] == pytest.approx(9e-3)


def test_a_memory_bound_row_is_measured_against_the_bandwidth(fake_peak):
    # 1 MFLOP on 100 MB at 10 GB/s (1 thread): the bound is 10 ms, brgemm took 20 ms.
    row = bench._row("copy-like", 1, 1e6, 1e8, {"brgemm": 20e-3}, {}, 200.0)
    assert row["percent_of_roofline"] == pytest.approx(50.0)
    assert "best_peer" not in row and "ratio_vs_torch" not in row
    no_peak = bench._row("rate", 1, 1e6, 1e8, {"brgemm": 1e-3, "numpy": 2e-3}, {"numpy": 2.0}, None)
    assert no_peak["percent_of_peak"] is None and "ceiling_vs_torch" not in no_peak
    assert no_peak["ratio_vs_best_peer"] == 2.0


def test_summaries_are_geomeans_of_measured_ratios():
    rows = [{"case": "a", "ratio_vs_torch": 0.5}, {"case": "b", "ratio_vs_torch": 2.0},
            {"case": "c", "ratio_vs_torch": 1.0}]
    line = bench.ratio_summary("title", rows)
    assert "geomean 1.00x PyTorch over 3 rows, lowest 0.50x (a)" in line
    assert bench.ratio_summary("one", rows[1:2]).endswith("one: 2.00x PyTorch")
    assert "no PyTorch rows" in bench.ratio_summary("none", [{"case": "x"}])
    assert bench.geomean([2.0, 8.0, None]) == pytest.approx(4.0)


def test_json_round_trips_the_rows_and_the_peak(tmp_path):
    rows = [_grid_row("gemm f32 8x8x8", 1), _grid_row("ktanh f32 1e+06", 1, percent_of_peak=None)]
    path = tmp_path / "rows.json"
    bench.write_json(path, FAKE_PEAK, rows, groups=["kernels"], rounds=2, threads=[1])
    assert json.loads(path.read_text()) == {"peak": FAKE_PEAK, "groups": ["kernels"], "rounds": 2, "threads": [1],
                                            "rows": rows}


def _grid_row(case, threads=2, **extra):
    return {"case": case, "threads": threads, "flops": 1e9, "bytes": 1e6, "brgemm_seconds": 0.01,
            "brgemm_gflops": 100.0, "percent_of_peak": 50.0, "percent_of_roofline": 50.0,
            "torch_gflops": 80.0, "ratio_vs_torch": 1.25, "torch_seconds": 0.0125,
            "best_peer": "torch", "ratio_vs_best_peer": 1.25, **extra}


def test_group_tables_and_summaries_show_measurements_only():
    rows = [_grid_row(f"Conv {conv._conv_label(*layer)} N={n} {kind}", ratio_vs_brgemm_float32=1.5)
            for layer in conv.CONV_LAYERS for n in conv.CONV_BATCHES
            for kind in ("float32 fwd", "bfloat16 fwd", "float32 bwd", "int8 fwd")]
    rows += [_grid_row(f"{cell} H=512 N=16 {dtype} fwd") for cell in ("LSTM", "GRU") for dtype in ("float32", "bfloat16")]
    rows += [_grid_row(f"MLP 3x1024 N=256 float32 {p}") for p in ("fwd", "train step")]
    rows += [_grid_row(f"Linear f32 fwd 64x4096x4096 {s:.0%} block-sparse", ratio_vs_brgemm_dense=3.0,
                       ratio_vs_torch_bsr=30.0) for s in bench.SPARSITIES]
    model_rows = [_grid_row(f"model float32 {p}") for p in models.TORCH_PASSES]
    network_rows = [_grid_row(networks.network_label(name, p, n, "float32"), network=name, batch=n, dtype="float32",
                              brgemm_via="convert", best_peer_seconds=0.0125, peer_ratios={"torch": 1.25},
                              **{"pass": p})
                    for name, p, n in networks.network_cases(networks.NETWORKS)]
    ceiling_rows = [{"case": "LSTM f32 fwd H=256 N=16", "threads": 1, "flops": 1e9, "torch_seconds": 0.01,
                     "torch_percent_of_peak": 60.0}]
    text = "\n".join([bench.format_table(rows), models.format_models(model_rows),
                      bench.ceilings.format_ceilings(ceiling_rows), bench.format_headline(rows)]
                     + bench.conv.conv_summary(rows) + rnn.rnn_summary(rows) + bench.mlp.mlp_summary(rows)
                     + bench.sparse.sparse_summary([r for r in rows if "block-sparse" in r["case"]])
                     + models.torch_summary(model_rows)
                     + [networks.format_networks(network_rows)] + networks.networks_summary(network_rows))
    assert "geomean 1.25x PyTorch" in text and "our float32 1.50x" in text
    assert "our dense 3.00x" in text and "30.00x PyTorch BSR" in text
    assert not TARGET_WORDS.search(text), TARGET_WORDS.search(text)
    assert len(bench.format_table(rows).splitlines()) == len(rows) + 1


def test_options_parse_and_bad_values_name_the_option():
    args = cli.parse_args([])
    assert (args.groups, args.rounds, args.threads, args.dtypes) == ([], headline.HEADLINE_ROUNDS, None,
                                                                     ("f32", "bf16", "u8s8", "s16s16"))
    args = cli.parse_args(["--full", "--threads", "1,2", "--dtypes", "bf16"])
    assert args.groups == list(cli.FULL) and args.rounds == cli.GROUP_ROUNDS
    assert (args.threads, args.dtypes) == ([1, 2], ("bf16",))
    assert cli.parse_args(["--rnn", "--conv", "--rounds", "2"]).groups == ["conv", "rnn"]
    assert cli.parse_args(["--ceilings"]).groups == ["ceilings"]
    assert cli.parse_args(["--torch", "--compile"]).compile
    assert cli.parse_args(["--models", "--compile"]).networks == networks.DEFAULT_NETWORKS
    assert cli.parse_args(["--full"]).networks == networks.NETWORKS
    args = cli.parse_args(["--model", "mobilenet_v2,resnet18"])  # --model implies --models
    assert (args.groups, args.networks) == (["models"], ("mobilenet_v2", "resnet18"))
    for argv, option in ((["--threads", "two"], "--threads"), (["--threads", "0"], "--threads"),
                         (["--compile"], "--compile"), (["--conv", "--compile"], "--compile"),
                         (["--dtypes", "f64"], "--dtypes"), (["--rounds", "0"], "--rounds"),
                         (["--model", "vgg16"], "--model")):
        with pytest.raises(ValueError, match=option):
            cli.parse_args(argv)


def test_the_command_line_rejects_a_bad_option_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--threads", "1,x"])
    assert exit_.value.code == 2
    assert "--threads must be comma-separated integers" in capsys.readouterr().err


def test_help_lists_every_group(capsys):
    """--help prints (a group's description may hold a "%", which argparse would take for a format)."""
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{name}" in out for name in cli.GROUPS) and "90 % block" in " ".join(out.split())
    assert "%%" not in out  # a description written with %% shows doubled


@pytest.fixture
def tiny_headline(monkeypatch):
    """The headline's cases on tiny shapes (the code paths, not the sizes, are under test)."""
    monkeypatch.setattr(headline, "HEADLINE_GEMM", (32, 48, 64))
    monkeypatch.setattr(headline, "HEADLINE_CONVS", ((16, 16, 8, 3, 1), (16, 32, 8, 1, 1)))
    monkeypatch.setattr(headline, "HEADLINE_RNN", (16, 2))
    monkeypatch.setattr(headline, "RNN_STEPS", 3)
    monkeypatch.setattr(models, "TORCH_CONV_INPUT", (2, 64, 6))


def test_the_headline_prints_its_table_and_writes_the_same_rows_as_json(fake_peak, tiny_headline, tmp_path,
                                                                        capsys, monkeypatch):
    pytest.importorskip("torch")
    # OpenVINO hidden, as if not installed: its peer is skipped with a note, not an error.
    monkeypatch.setattr(models, "installed", lambda module: module != "openvino" and bench.harness.installed(module))
    path = tmp_path / "headline.json"
    assert bench.main(["--rounds", "1", "--threads", "1", "--dtypes", "f32,u8s8", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert not TARGET_WORDS.search(out + err), TARGET_WORDS.search(out + err)

    saved = json.loads(path.read_text())
    assert saved["peak"] == FAKE_PEAK and saved["groups"] == ["headline"]
    assert (saved["rounds"], saved["threads"]) == (1, [1])
    rows = saved["rows"]
    cases = [r["case"] for r in rows]
    assert len(rows) == headline.headline_cases(("f32", "u8s8"), [1]) == 9
    assert cases[0].startswith("ukernel_f32_") and cases[1].startswith("ukernel_u8s8_")
    assert cases[2:] == ["gemm f32 32x48x64", "gemm u8s8 32x48x64", "Conv 16->16 8x8 3x3/1 N=1 float32 fwd auto",
                         "Conv 16->32 8x8 1x1/1 N=1 float32 fwd", "LSTM H=16 N=2 float32 fwd",
                         "GRU H=16 N=2 float32 fwd", "ResNet-style 6 convs 2x64x6x6 optimized float32 inference"]
    for r in rows:
        assert r["threads"] == 1 and r["group"] == "headline" and r["brgemm_gflops"] > 0
        assert r["percent_of_peak"] == pytest.approx(100 * r["brgemm_gflops"] / r["peak_gflops"])
        assert r["best_peer"] != "openvino" and r["ratio_vs_best_peer"] > 0
    assert rows[0]["best_peer"] in ("numpy", "torch") and rows[-1]["peak_gflops"] == 200.0
    if bench.harness.installed("onnxruntime"):
        assert "ratio_vs_onnxruntime" in rows[-1]

    # stdout: the table, one line per JSON row, with the same numbers.
    table = out.splitlines()
    header = next(line for line in table if line.startswith("case"))
    assert header.split() == ["case", "thr", "GFLOP/s", "%peak", "%roof", "fastest", "peer", "x", "peer"]
    lines = {line[:len(r["case"])]: line for line in table for r in rows if line.startswith(r["case"] + " ")}
    assert sorted(lines) == sorted(cases)
    for r in rows:
        cells = lines[r["case"]][len(r["case"]):].split()
        mark = "*" if r["ratio_vs_best_peer"] < 1.0 else ""   # a row where a peer was faster stands out
        assert cells[0] == "1" and cells[-2:] == [r["best_peer"], f"{r['ratio_vs_best_peer']:.2f}{mark}"]
        assert cells[2] == f"{r['percent_of_peak']:.1f}"
    assert "note: OpenVINO is not installed" in out
    # stderr: one progress line per case, counted.
    assert [line for line in err.splitlines() if "[9/9]" in line]
    assert sum(bool(re.search(r"\[\d/9\]", line)) for line in err.splitlines()) == 9


def test_without_pytorch_the_headline_notes_it_and_skips_the_model(fake_peak, tiny_headline, capsys, monkeypatch):
    class NoTorch(bench.Peers):
        def __init__(self):
            super().__init__()
            self.torch = None
    monkeypatch.setattr(cli, "Peers", NoTorch)
    assert bench.main(["--rounds", "1", "--threads", "1", "--dtypes", "bf16"]) == 0
    out, err = capsys.readouterr()
    assert "note: PyTorch is not installed" in out
    rows = [line for line in out.splitlines() if re.match(r"(ukernel|gemm|Conv|LSTM|GRU|ResNet)", line)]
    assert len(rows) == headline.headline_cases(("bf16",), [1], with_torch=False) == 6
    assert not any(line.startswith("ResNet") for line in rows)
    # No peer computes bf16 or runs these layers without PyTorch: the peer columns say so.
    assert all(line.split()[-2:] == ["-", "-"] for line in rows)
    assert "Traceback" not in err


def test_the_network_group_runs_bfloat16_and_int8_rows_when_the_dtypes_name_them():
    assert cli._network_dtypes(("f32", "bf16", "u8s8")) == ("float32", "bfloat16", "int8")
    assert cli._network_dtypes(("f32", "bf16")) == ("float32", "bfloat16")
    assert cli._network_dtypes(("u8s8",)) == ("float32", "int8")
    assert cli._network_dtypes(("f32",)) == ("float32",)


def test_the_network_group_runs_its_cases_and_writes_them_as_json(fake_peak, tmp_path, capsys, monkeypatch):
    """--models on 32 x 32 images at N = 1 and 2 (the code paths, not the sizes, are under test)."""
    pytest.importorskip("torch")
    from brgemm.bench import vision
    assert networks.NETWORKS == vision.VISION_MODELS
    monkeypatch.setattr(networks, "NETWORK_IMAGE", 32)
    monkeypatch.setattr(networks, "INFERENCE_BATCHES", (1, 2))
    monkeypatch.setattr(networks, "TRAIN_BATCHES", dict.fromkeys(networks.NETWORKS, 2))
    monkeypatch.setattr(models, "installed", lambda module: module != "openvino" and bench.harness.installed(module))
    path = tmp_path / "networks.json"
    assert bench.main(["--model", "resnet18", "--rounds", "1", "--threads", "1", "--dtypes", "f32", "--json",
                       str(path)]) == 0
    out, err = capsys.readouterr()
    assert not TARGET_WORDS.search(out + err), TARGET_WORDS.search(out + err)
    rows = json.loads(path.read_text())["rows"]
    assert [(r["network"], r["pass"], r["batch"]) for r in rows] == [
        ("resnet18", "inference", 1), ("resnet18", "inference", 2), ("resnet18", "train step", 2)]
    forward = vision.vision_flops("resnet18", 32)
    assert [r["flops"] for r in rows] == [forward, 2 * forward,
                                          2 * (3 * forward - vision.layer_flops(vision.vision_layers("resnet18", 32)[0]))]
    for r in rows:
        assert r["group"] == "models" and r["dtype"] == "float32" and r["threads"] == 1
        assert r["brgemm_via"] in ("optimize", "convert") and r["brgemm_gflops"] > 0
        assert {"torch_seconds", "torch[channels_last]_seconds"} <= set(r) and r["ratio_vs_best_peer"] > 0
        assert r["percent_of_peak"] == pytest.approx(100 * r["brgemm_gflops"] / FAKE_PEAK["fma_f32"]["1"])
        assert "ratio_vs_openvino" not in r and "openvino" not in r["peer_ratios"]
        assert r["peer_ratios"]["torch"] == pytest.approx(r["torch_seconds"] / r["brgemm_seconds"])  # one round
        line = next(line for line in out.splitlines() if line.startswith("ResNet-18 ") and
                    line.split()[1:3] == [str(r["batch"]), r["pass"].split()[0]])
        mark = "*" if r["ratio_vs_best_peer"] < 1.0 else ""   # a row where a peer was faster stands out
        assert f"{1e3 * r['brgemm_seconds']:.1f}" in line.split()
        assert f"{r['ratio_vs_best_peer']:.2f}{mark}" in line.split()
        assert f"eager NCHW {r['peer_ratios']['torch']:.2f};" in line
    if bench.harness.installed("onnxruntime"):
        assert "ratio_vs_onnxruntime" in rows[0] and "ratio_vs_onnxruntime" not in rows[2]
    assert "note: OpenVINO is not installed" in out
    assert sum(bool(re.search(r"\] ResNet-18 N=\d 32x32 float32", line)) for line in err.splitlines()) == 3


def test_a_bfloat16_network_case_builds_and_runs(fake_peak, monkeypatch):
    """bf16 is not in the table yet, but its cases build: brgemm in bf16, PyTorch under autocast."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(networks, "NETWORK_IMAGE", 32)
    log = bench.Log(stream=io.StringIO())
    for pass_ in networks.NETWORK_PASSES:
        fns, flops, _, case, via = networks.network_case(torch, "resnet18", pass_, 2, 1, log, "bfloat16")
        assert list(fns) == ["brgemm", "torch", "torch[channels_last]"]  # no ONNX runtime in bf16 yet
        assert case == f"ResNet-18 N=2 32x32 bfloat16 {pass_}" and via in ("optimize", "convert")
        for fn in fns.values():
            fn()
    with pytest.raises(ValueError, match="dtype"):
        networks.network_case(torch, "resnet18", "inference", 1, 1, log, "int4")


def test_an_int8_network_case_builds_and_runs(fake_peak, monkeypatch):
    """int8 rows: brgemm.torch.quantize against brgemm's own float32 network and PyTorch eager;
    inference only (run_networks skips the training step)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(networks, "NETWORK_IMAGE", 32)
    log = bench.Log(stream=io.StringIO())
    fns, flops, _, case, via = networks.network_case(torch, "resnet18", "inference", 2, 1, log, "int8")
    assert list(fns) == ["brgemm", "brgemm[float32]", "torch", "torch[channels_last]"]
    assert case == "ResNet-18 N=2 32x32 int8 inference" and via == "quantize"
    assert flops == networks.network_flops("resnet18", "inference", 2, 32)
    for fn in fns.values():
        fn()


def test_compare_can_skip_the_warm_up_block():
    calls = {"brgemm": 0, "peer": 0}

    def counter(name):
        def call():
            calls[name] += 1
        return call
    bench.compare({name: counter(name) for name in calls}, rounds=2, threads=1, min_seconds=0.0, warm=0.0)
    assert calls == {"brgemm": 3, "peer": 3}  # the first touch, then one timed call per round


def test_brgemm_falls_back_to_convert_when_optimize_fails_or_is_missing(monkeypatch):
    torch = pytest.importorskip("torch")
    import brgemm.torch as bt
    from brgemm.bench import vision
    model = vision.vision_model("mobilenet_v2", num_classes=10)
    log = bench.Log(stream=io.StringIO())

    def broken(model, dtype=None, algorithm="direct"):
        raise RuntimeError("unsupported")
    monkeypatch.setattr(bt, "optimize", broken, raising=False)
    ours, via = networks.brgemm_network(torch, model, "inference", "float32", log, "MobileNetV2 N=1")
    assert via == "convert" and any(isinstance(m, bt.Conv2d) for m in ours.modules())
    assert "optimize failed on MobileNetV2 N=1 (RuntimeError: unsupported)" in log.notes[-1]
    assert not any(isinstance(m, bt.Conv2d) for m in model.modules())  # a copy was converted
    monkeypatch.delattr(bt, "optimize", raising=False)
    assert networks.brgemm_network(torch, model, "train step", "float32", log)[1] == "convert"
    assert "has no optimize" in log.notes[-1]


def test_the_torch_group_runs_the_language_model_and_counts_its_decoder(fake_peak, tmp_path, capsys, monkeypatch):
    """--torch on tiny shapes (the code paths, not the sizes, are under test): the LSTM language
    model's rows count its LSTM and its decoder, a training step 3× the forward."""
    pytest.importorskip("torch")
    monkeypatch.setattr(models, "TORCH_CONV_INPUT", (2, 64, 6))
    monkeypatch.setattr(models, "TORCH_LSTM", (3, 2, 16, 16))
    monkeypatch.setattr(models, "TORCH_LM", (4, 3, 70, 24, 2, 0.5))
    monkeypatch.setattr(models, "installed", lambda module: False)  # no ONNX export: quick
    path = tmp_path / "torch.json"
    assert bench.main(["--torch", "--rounds", "1", "--threads", "1", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert not TARGET_WORDS.search(out + err), TARGET_WORDS.search(out + err)
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) == len(models.TORCH_MODELS) * len(models.TORCH_PASSES)
    lm = [r for r in rows if r["case"].startswith("LSTM LM")]
    assert [r["case"] for r in lm] == [f"LSTM LM T=4 N=3 2x24 vocab 70 float32 {p}" for p in models.TORCH_PASSES]
    forward = 2 * 8 * 24 * (24 + 24) * 3 * 4 + 2 * 24 * 70 * 3 * 4
    assert [r["flops"] for r in lm] == [3 * forward, forward]
    for r in lm:
        assert r["threads"] == 1 and r["brgemm_gflops"] > 0 and r["ratio_vs_torch"] > 0
        assert r["percent_of_peak"] == pytest.approx(100 * r["brgemm_gflops"] / FAKE_PEAK["fma_f32"]["1"])
        assert any(line.startswith(r["case"]) for line in out.splitlines())


def test_the_language_model_converts_its_lstm_decoder_and_dropout_and_keeps_the_embedding():
    torch = pytest.importorskip("torch")
    import brgemm.torch as bt
    model, x, target, *_ = models.torch_model(torch, "lstm_lm")
    assert x.dtype == target.dtype == torch.int64 and tuple(x.shape) == models.TORCH_LM[:2]
    report = bt.convert(model)
    assert {n for n, *_ in report.swapped} == {"lstm", "decoder", "drop"}
    assert isinstance(model.lstm, bt.LSTM) and model.lstm.dropout == models.TORCH_LM[5]
    assert isinstance(model.encoder, torch.nn.Embedding)


def test_the_softmax_rows_compare_with_a_copy_and_name_their_case(fake_peak, monkeypatch):
    from brgemm.bench import kernels
    monkeypatch.setattr(kernels, "compare", lambda fns, rounds, threads: (
        {lib: 1e-3 for lib in fns}, {lib: 1.0 for lib in fns}))
    log = bench.Log(stream=io.StringIO())
    rows = kernels._run_softmax(bench.Peers(), np.random.default_rng(0), 1, [1], log, ["f32", "bf16"], shape=(3, 17))
    assert [r["case"].split(" (")[0] for r in rows] == [
        f"softmax {k} {d} {t} 3x17" for t in ("f32", "bf16") for k, d in
        (("exact", "forward"), ("taylor2", "forward"), ("exact", "backward"), ("taylor2", "backward"))]
    assert all(r["ratio_vs_copy"] == 1.0 and r["threads"] == 1 for r in rows)
    assert rows[0]["bytes"] == 2 * 4 * 51 and rows[-1]["bytes"] == 3 * 2 * 51
