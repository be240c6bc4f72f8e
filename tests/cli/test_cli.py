"""The ``varprobe`` command line, run in-process through ``main(argv)`` (one subprocess test of the
installed entry point)."""
from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import varprobe.experiment
from varprobe.cli import main
from varprobe.cli.main import GRID_AXES, PLOT_KINDS, RUN_OPTIONS, build_parser, config_from_args
from varprobe.experiment import RunConfig
from varprobe.layers import SCHEMES
from varprobe.record import load_run

TINY = ["--steps", "5", "--batch-size", "32", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- run ---------------------------------------------------------------------------------------------
def test_run_trains_writes_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", *TINY, "--eval-steps", "0,3", "--out", str(out)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert len(lines) == 1
    summary = lines[0]
    assert summary.startswith("finished") and "final loss" in summary and "test accuracy" in summary
    assert summary.endswith(f"run dir {out}")
    run = load_run(out)
    assert run.status == "finished"
    assert RunConfig.from_dict(run.config) == RunConfig(steps=5, batch_size=32, threads=1, eval_steps=(0, 3))
    assert f"{run.meta['result']['test_accuracy']:.4f}" in summary

    # the same --out again: refused (exit 2, pointing at --overwrite), then replaced with --overwrite
    capsys.readouterr()
    assert _exit_code(["run", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    start = run.meta["start_time"]
    assert main(["run", *TINY, "--seed", "1", "--overwrite", "--out", str(out)]) == 0
    rerun = load_run(out)
    assert rerun.config["seed"] == 1 and rerun.meta["start_time"] != start


def test_run_collapse_is_reported_not_an_error(tmp_path, capsys):
    out = tmp_path / "c"
    code = main(["run", "--scheme", "plain", "--lr", "50", "--steps", "30", "--batch-size", "32",
                 "--threads", "1", "--out", str(out)])
    assert code == 0
    (summary,) = _lines(capsys.readouterr().out)
    at = load_run(out).meta["result"]["collapsed_at"]
    assert summary.startswith(f"collapsed at step {at} ")


def test_every_runconfig_field_maps_to_an_option():
    argv = ["run", "--out", "x", "--model", "resnet8", "--scheme", "pws", "--data", "synthetic", "--size", "12",
            "--width", "4", "--lr", "0.2", "--batch-size", "16", "--steps", "7", "--seed", "3", "--momentum",
            "0.5", "--weight-decay", "0", "--lr-milestones", "3,5", "--gamma", "0", "--gamma-mode", "equiv",
            "--freeze-alpha", "--init-alpha", "--every", "2", "--quantities", "forward", "--eval-steps", "0,6",
            "--eval-batch", "32", "--collapse-var", "10", "--threads", "1", "--data-limit", "100",
            "--synthetic-n", "200"]
    args = build_parser().parse_args(argv)
    expected = RunConfig(model="resnet8", scheme="pws", data="synthetic", size=12, width=4, lr=0.2, batch_size=16,
                         steps=7, seed=3, momentum=0.5, weight_decay=0.0, lr_milestones=(3, 5), gamma=0.0,
                         gamma_mode="equiv", freeze_alpha=True, init_alpha=True, every=2, quantities="forward",
                         eval_steps=(0, 6), eval_batch=32, collapse_var=10.0, threads=1, data_limit=100,
                         synthetic_n=200)
    assert config_from_args(args) == expected
    # options left out keep RunConfig's defaults
    assert config_from_args(build_parser().parse_args(["run", "--out", "x"])) == RunConfig()
    assert {o.field for o in RUN_OPTIONS} == set(RunConfig().to_dict())


# -- grid --------------------------------------------------------------------------------------------
def test_grid_runs_the_attribution_controls(tmp_path, capsys):
    """plain+gn on a ResNet, with the average-gradient projection on: the controls are CLI options."""
    argv = ["grid", "--model", "resnet8", "--size", "8", "--width", "4", "--schemes", "plain,plain+gn",
            "--project-shift", "--steps", "2", "--threads", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    capsys.readouterr()
    runs = [load_run(d) for d in sorted(tmp_path.iterdir())]
    assert sorted(r.config["scheme"] for r in runs) == ["plain", "plain+gn"]
    assert all(r.config["project_shift"] is True and r.status == "finished" for r in runs)
    gn = {r.config["scheme"]: set(r.frame.loc[r.frame.module_type == "GroupNorm", "layer"]) for r in runs}
    assert gn == {"plain": set(), "plain+gn": {"stem.0.norm", "neck.0"}}


def test_grid_runs_prints_table_and_resumes(tmp_path, capsys):
    argv = ["grid", "--schemes", "plain,pws", "--lrs", "0.05", "--batch-sizes", "32", "--seeds", "0",
            "--steps", "3", "--threads", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "2/2" not in captured.err  # no tqdm bar: stderr is not a terminal (tests/cli/test_talk.py)
    header, *rows = _lines(captured.out)
    assert header.split() == ["name", "status", "test", "acc"]
    assert len(rows) == 2
    dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(dirs) == 2
    for row, scheme in zip(rows, ("plain", "pws")):
        name, status, acc = row.split()
        assert status == "finished" and 0.0 <= float(acc) <= 1.0
        run = load_run(tmp_path / name)
        assert run.config["scheme"] == scheme and run.config["steps"] == 3
        assert acc == f"{run.meta['result']['test_accuracy']:.4f}"
    starts = {d.name: load_run(d).meta["start_time"] for d in dirs}

    assert main([*argv, "--no-progress"]) == 0  # everything finished: skipped, same table
    captured = capsys.readouterr()
    assert _lines(captured.out) == [header, *rows] and "2/2" not in captured.err
    assert {d.name: load_run(d).meta["start_time"] for d in dirs} == starts


# -- bad arguments -----------------------------------------------------------------------------------
BAD = [
    (["run", "--scheme", "foo"], ["'foo'", ", ".join(SCHEMES)]),
    (["run", "--steps", "0"], ["steps", "got 0", "positive integer"]),
    (["run", "--steps", "-5"], ["steps", "got -5", "positive integer"]),
    (["run", "--model", "resnet21"], ["'resnet21'", "simple_cnn", "resnet20"]),
    (["run", "--data", "mnist"], ["'mnist'", "digits, synthetic, cifar10"]),
    (["run", "--data", "digits", "--size", "12"], ["12", "8, 16 or 32"]),
    (["run", "--channels", "2"], ["channels", "got 2", "1, 3"]),
    (["run", "--data", "cifar10", "--channels", "1"], ["cifar10 channels must be 3", "got 1"]),
    (["run", "--scheme", "bn", "--gamma", "0.1"], ["'bn'", "'pws' only"]),
    (["run", "--lr", "abc"], ["--lr", "'abc'", "not a number"]),
    (["run", "--lr", "0"], ["lr must be > 0", "0.0"]),
    (["run", "--lr", "inf"], ["'inf'", "finite"]),
    (["run", "--threads", "0"], ["--threads", "'0'", "positive integer"]),
    (["run", "--momentum", "-0.9"], ["--momentum", "'-0.9'", ">= 0"]),
    (["run", "--weight-decay", "-1"], ["--weight-decay", "'-1'", ">= 0"]),
    (["run", "--collapse-var", "0"], ["--collapse-var", "'0'", "> 0"]),
    (["run", "--eval-steps", "1,x"], ["--eval-steps", "'x'", "comma-separated"]),
    (["run", "--quantities", "some"], ["'some'", "all, forward"]),
    (["run", "--gamma-mode", "scaled"], ["'scaled'", "raw, equiv"]),
    (["grid", "--lrs", "0.1,abc"], ["--lrs", "'abc'", "comma-separated", "0.05,0.2"]),
    (["grid", "--lrs", "0.1,-1"], ["lr must be > 0", "-1.0"]),
    (["grid", "--schemes", "plain,foo"], ["'foo'", ", ".join(SCHEMES)]),
    (["grid", "--schemes", "plain,pws", "--gamma", "0"], ["'plain'", "'pws' only"]),
    (["grid", "--batch-sizes", "64,0"], ["batch_size", "got 0"]),
    (["grid", "--seeds", "0,-1"], ["--seeds", "'-1'", "non-negative"]),
    (["reproduce", "--quick", "--full"], ["--full", "--quick"]),
    (["reproduce", "--seeds", "zero"], ["--seeds", "'zero'"]),
    (["plot", "RUN", "--kind", "spp", "--out", "fig.jpg"], ["'.jpg'", ".png, .svg, .pdf"]),
    (["plot", "RUN", "--kind", "spp", "--out", "fig"], ["(none)", ".png, .svg, .pdf"]),
    (["plot", "RUN", "--kind", "bars", "--out", "fig.png"], ["'bars'", "'spp'", "'collapse'"]),
    (["plot", "RUN", "--kind", "spp", "--out", "fig.png"], ["'RUN'", "not found"]),
    (["bogus"], ["'bogus'", "run", "grid", "reproduce", "plot"]),
    # values that only a model, the data or the file system can refuse: all checked before anything starts
    (["run", "--lr", "1e300"], ["lr", "1e+300", "float32"]),
    (["run", "--weight-decay", "1e300"], ["weight_decay", "1e+300", "float32"]),
    (["run", "--data-limit", "5", "--batch-size", "64"], ["batch_size 64", "5 images", "batch_size <= 5"]),
    (["run", "--scheme", "gn", "--width", "3"], ["'gn'", "width 3", "divisible", "widths that build: 8, 16"]),
    (["run", "--model", "resnet8", "--scheme", "gn", "--width", "12"], ["'resnet8'", "width 12", "8, 16"]),
    (["run", "--model", "vgg", "--size", "8", "--width", "4"], ["'vgg'", "width 4", "8x8", "sizes that work", "16, 32"]),
    (["run", "--data", "synthetic", "--size", "1"], ["'simple_cnn'", "1x1", "sizes that work for data 'synthetic'"]),
    (["run", "--out", "/proc/varprobe-nope"], ["--out /proc/varprobe-nope", "cannot be created"]),
    (["run", "--out", "afile"], ["--out afile", "not a directory"]),
    (["run", "--out", "afile/run"], ["--out afile/run", "afile is a file"]),
    (["grid", "--schemes", "pws,gn", "--width", "3"], ["'gn'", "width 3", "widths that build"]),
    (["grid", "--batch-sizes", "32,64", "--data-limit", "40"], ["batch_size 64", "40 images"]),
    (["grid", "--out", "afile/grid"], ["--out afile/grid", "afile is a file"]),
    (["reproduce", "--out", "afile/rep"], ["--out afile/rep", "afile is a file"]),
    (["plot", "RUN", "--kind", "spp", "--out", "adir.png"], ["adir.png is a directory", "file name"]),
    (["plot", "RUN", "--kind", "spp", "--out", "afile/fig.png"], ["afile/fig.png", "afile", "not a directory"]),
    (["plot", "runs/fw*", "--kind", "spp", "--out", "fig.png"], ["'runs/fw*'", "matches no run directory"]),
    (["plot", "afile", "--kind", "spp", "--out", "fig.png"], ["'afile'", "is not a directory"]),
]


@pytest.mark.parametrize("argv, fragments", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_exit_2_with_one_line(argv, fragments, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a user's file")
    (tmp_path / "adir.png").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    command = argv[0] if argv[0] in ("run", "grid", "reproduce", "plot") else None
    if command in ("run", "grid") and "--out" not in argv:
        argv = [*argv, "--out", "out"]
    assert _exit_code(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    usage, error = _lines(captured.err)  # the usage line and ONE error line
    prog = f"varprobe {command}" if command else "varprobe"
    assert usage.startswith(f"usage: {prog}")
    assert error.startswith(f"{prog}: error: ")
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing started, nothing created


def test_missing_cifar_folder_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./data/cifar-10-batches-py here
    for argv in (["run", "--data", "cifar10", "--out", "r"], ["grid", "--data", "cifar10", "--out", "g"]):
        assert _exit_code(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        usage, error = _lines(err)
        assert "cifar10" in error and "not found" in error and "cifar-10-batches-py" in error


def test_missing_out_is_a_usage_error(capsys):
    assert _exit_code(["run", *TINY]) == 2
    assert "--out" in _lines(capsys.readouterr().err)[-1]


def test_keyboard_interrupt_exits_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(varprobe.experiment, "run", interrupted)
    assert main(["run", *TINY, "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _lines(err)[-1] == "varprobe run: interrupted"


# -- help --------------------------------------------------------------------------------------------
def _help(argv, capsys) -> str:
    assert _exit_code([*argv, "--help"]) == 0
    return capsys.readouterr().out


def _option_blocks(text: str) -> dict[str, str]:
    """The help text of each option, keyed by its flag."""
    blocks, current = {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  -") and not line.startswith("   "):
            current = stripped.split()[1] if stripped.startswith("-h,") else stripped.split()[0]
            blocks[current] = stripped
        elif current and line.startswith("   "):
            blocks[current] += " " + stripped
        else:
            current = None
    return blocks


def test_top_level_help_lists_commands(capsys):
    text = _help([], capsys)
    for command in ("run", "grid", "reproduce", "plot"):
        assert f"    {command}" in text


@pytest.mark.parametrize("command", ["run", "grid", "reproduce", "plot"])
def test_help_explains_every_option(command, capsys):
    text = _help([command], capsys)
    assert text.startswith(f"usage: varprobe {command}")
    blocks = _option_blocks(text)
    blocks.pop("--help")
    assert blocks, text
    for flag, block in blocks.items():
        help_text = block[len(flag):].strip()
        assert len(help_text.split()) >= 3, (flag, block)  # a real explanation
        assert "(default:" in block or "(required" in block or "default)" in block, (flag, block)


def test_run_and_grid_help_cover_every_runconfig_field(capsys):
    run_blocks = _option_blocks(_help(["run"], capsys))
    grid_blocks = _option_blocks(_help(["grid"], capsys))
    for option in RUN_OPTIONS:
        assert option.flag in run_blocks
        assert (option.flag in grid_blocks) == (option.field not in GRID_AXES)
    for plural in ("--schemes", "--lrs", "--batch-sizes", "--seeds"):
        assert plural in grid_blocks
    # defaults come from RunConfig, units are said
    assert "(default: 0.05)" in run_blocks["--lr"]
    assert "(default: 300)" in run_blocks["--steps"] and "steps" in run_blocks["--steps"]
    assert "images" in run_blocks["--batch-size"]
    assert ", ".join(SCHEMES) in run_blocks["--scheme"]


def test_plot_help_lists_kinds_and_formats(capsys):
    blocks = _option_blocks(_help(["plot"], capsys))
    assert ", ".join(PLOT_KINDS) in blocks["--kind"]
    assert ".png, .svg, .pdf" in blocks["--out"]


def test_installed_entry_point_help():
    script = Path(sys.executable).parent / "varprobe"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "varprobe.cli"]
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: varprobe")
    for command in ("run", "grid", "reproduce", "plot"):
        assert command in proc.stdout


# -- plot and reproduce: wiring to the modules that do the work ---------------------------------------
def _fake_module(monkeypatch, name: str, **functions) -> None:
    module = types.ModuleType(name)
    for key, fn in functions.items():
        setattr(module, key, fn)
    monkeypatch.setitem(sys.modules, name, module)


def test_plot_passes_its_arguments_to_cli_plot(tmp_path, monkeypatch, capsys):
    seen = []

    def cli_plot(args):
        seen.append(args)
        Path(args.out).write_text("figure")
        print(args.out)
        return Path(args.out)

    _fake_module(monkeypatch, "varprobe.cli.figure", cli_plot=cli_plot)
    runs = [tmp_path / "r1", tmp_path / "r2"]
    for r in runs:
        r.mkdir()
    out = tmp_path / "fig.SVG"  # the extension check ignores case
    assert main(["plot", *map(str, runs), "--kind", "heatmap", "--quantity", "out.var", "--out", str(out)]) == 0
    (args,) = seen
    assert args.run_dirs == [str(r) for r in runs]
    assert (args.kind, args.quantity, Path(args.out)) == ("heatmap", "out.var", out)
    assert capsys.readouterr().out.strip() == str(out)


def test_plot_value_error_is_a_usage_error(tmp_path, monkeypatch, capsys):
    def cli_plot(args):
        raise ValueError("plot kind 'curves' needs a quantity (--quantity Q, e.g. out.var)")

    _fake_module(monkeypatch, "varprobe.cli.figure", cli_plot=cli_plot)
    assert _exit_code(["plot", str(tmp_path), "--kind", "curves", "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and _lines(err)[-1].endswith("needs a quantity (--quantity Q, e.g. out.var)")


def test_plot_end_to_end_if_available(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run_dir = tmp_path / "r"
    assert main(["run", *TINY, "--out", str(run_dir)]) == 0
    out = tmp_path / "curves.png"
    assert main(["plot", str(run_dir), "--kind", "curves", "--quantity", "out.var", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_reproduce_calls_claims_reproduce(tmp_path, monkeypatch, capsys):
    calls = []

    def reproduce(profile, out, seeds, jobs=1, progress=True):
        calls.append((profile, out, seeds, jobs))
        out.mkdir(parents=True, exist_ok=True)
        (out / "claims.md").write_text("| claim |")
        (out / "claims.json").write_text("[]")

    _fake_module(monkeypatch, "varprobe.claims", reproduce=reproduce)
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce"]) == 0
    assert main(["reproduce", "--full", "--out", "elsewhere", "--seeds", "5"]) == 0
    assert main(["reproduce", "--quick", "--seeds", "1", "--jobs", "2"]) == 0
    assert calls == [("quick", Path("runs/reproduce"), None, 1), ("full", Path("elsewhere"), 5, 1),
                     ("quick", Path("runs/reproduce"), 1, 2)]
    assert _lines(capsys.readouterr().out)[1] == "wrote elsewhere/claims.md and elsewhere/claims.json"


def test_reproduce_without_claims_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "varprobe.claims", None)  # import fails: not there
    assert main(["reproduce"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and _lines(err) == [
        "varprobe reproduce: error: varprobe.claims.reproduce is not available in this installation"]


def test_real_claims_reproduce_accepts_the_cli_call():
    claims = pytest.importorskip("varprobe.claims")
    signature = inspect.signature(claims.reproduce)
    signature.bind("quick", Path("out"), None)  # how cmd_reproduce calls it
    profiles = getattr(claims, "PROFILES", None)
    if profiles is not None:
        assert {"quick", "full"} <= set(profiles)


# -- plot on real runs: what a kind cannot draw is refused in one line, globs, --skip-corrupt ---------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/all (every quantity), runs/fw (--quantities forward), runs/eval (eval-mode forwards
    only), runs/empty (no recorded step) and runs/corrupt (three chunks, the middle one truncated)."""
    from varprobe.experiment import run
    from varprobe.probe import Probe
    from varprobe.record import RunWriter

    root = tmp_path_factory.mktemp("plot") / "runs"
    threads = torch.get_num_threads()
    try:
        tiny = RunConfig(steps=3, batch_size=16, threads=1)
        run(tiny, root / "all")
        run(tiny.replace(quantities="forward"), root / "fw")
        run(tiny.replace(flush_every=1), root / "corrupt")
    finally:
        torch.set_num_threads(threads)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3)).eval()
    with Probe(model, out=root / "eval"), torch.no_grad():
        model(torch.randn(8, 1, 8, 8))
    RunWriter(root / "empty", {"scheme": "pws", "lr": 0.1}).close()
    chunk = root / "corrupt" / "stats" / "chunk-000001.parquet"
    chunk.write_bytes(chunk.read_bytes()[:100])
    return root


def _one_usage_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    usage, error = _lines(captured.err)
    assert usage.startswith("usage: varprobe plot") and error.startswith("varprobe plot: error: ")
    return error


REFUSED = [("fw", "theory", ["'theory'", "in.var", "--quantities forward", "fw"]),
           ("eval", "theory", ["'theory'", "in.var", "eval", "eval"]),
           *[("empty", kind, ["nothing to plot", "empty", "no recorded steps"]) for kind in PLOT_KINDS]]


@pytest.mark.parametrize("name, kind, fragments", REFUSED, ids=[f"{n}-{k}" for n, k, _ in REFUSED])
def test_plot_refuses_what_a_run_cannot_show_in_one_line(runs, name, kind, fragments, tmp_path, capsys):
    out = tmp_path / "fig.png"
    quantity = ["--quantity", "out.var"] if kind in ("heatmap", "curves") else []
    assert _exit_code(["plot", str(runs / name), "--kind", kind, *quantity, "--out", str(out)]) == 2
    error = _one_usage_error(capsys)
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert not out.exists()


def test_plot_expands_a_quoted_glob(runs, tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["plot", str(runs / "al*"), "--kind", "spp", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.read_bytes().startswith(b"\x89PNG")
    # a glob that matches directories but no run says so, naming itself
    assert _exit_code(["plot", str(runs / "all" / "st*"), "--kind", "spp", "--out", str(out)]) == 2
    error = _one_usage_error(capsys)
    assert repr(str(runs / "all" / "st*")) in error and "none a run directory" in error


def test_plot_skip_corrupt(runs, tmp_path, capsys):
    out = tmp_path / "fig.png"
    argv = ["plot", str(runs / "corrupt"), "--kind", "curves", "--quantity", "out.var", "--out", str(out)]
    assert _exit_code(argv) == 2
    error = _one_usage_error(capsys)
    assert "chunk-000001.parquet" in error and "--skip-corrupt" in error and "skip_corrupt=True" not in error
    assert not out.exists()
    with pytest.warns(Warning, match="chunk-000001.parquet"):
        assert main([*argv, "--skip-corrupt"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


# -- errors that are not the input's fault: one line, exit 1 -----------------------------------------
def test_internal_error_is_one_line_with_a_debug_hint(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line of a long message")

    monkeypatch.setattr(varprobe.experiment, "run", broken)
    argv = ["run", *TINY, "--out", str(tmp_path / "r")]
    monkeypatch.delenv("VARPROBE_DEBUG", raising=False)
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert _lines(captured.err)[1:] == ["varprobe run: internal error: RuntimeError: boom; rerun with --debug "
                                        "(or VARPROBE_DEBUG=1) to see the traceback"]
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):  # before or after the command
        with pytest.raises(RuntimeError, match="boom"):
            main(debug_argv)
    monkeypatch.setenv("VARPROBE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(argv)


@pytest.mark.parametrize("error, named", [
    (OSError(28, "No space left on device"), "writing {out} failed: [Errno 28] No space left on device"),
    (OSError(28, "No space left on device", "/data/run/stats/chunk-000003.parquet"),
     "[Errno 28] No space left on device: '/data/run/stats/chunk-000003.parquet'"),
], ids=["no-filename", "filename"])
def test_a_failed_write_is_one_line_naming_the_path(error, named, tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(varprobe.experiment, "run", full)
    out = tmp_path / "r"
    assert main(["run", *TINY, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert _lines(captured.err)[1:] == [f"varprobe run: error: {named.format(out=out)}"]


# -- plot selections: --layers, --schemes, --steps, --mode --------------------------------------------
def test_plot_selections_reach_the_plot_functions(runs, tmp_path, monkeypatch, capsys):
    import functools

    import varprobe.plot.kinds as plot_cli

    seen = {}
    for kind in ("curves", "spp"):
        fn, needs = plot_cli.KINDS[kind]

        @functools.wraps(fn)
        def spy(frame, *args, _fn=fn, _kind=kind, **kwargs):
            seen[_kind] = (sorted(set(frame["scheme"])), kwargs)
            return _fn(frame, *args, **kwargs)
        monkeypatch.setitem(plot_cli.KINDS, kind, (spy, needs))
    frame = load_run(runs / "all").frame
    conv = sorted(set(frame.loc[frame["module_type"].str.contains("Conv"), "layer"]))[0]
    out = tmp_path / "fig.png"
    assert main(["plot", str(runs / "all"), "--kind", "curves", "--quantity", "out.var", "--layers", f"{conv},1",
                 "--schemes", "pws", "--mode", "train", "--out", str(out)]) == 0
    assert seen["curves"] == (["pws"], {"layers": [conv, 1], "mode": "train"})
    assert out.read_bytes().startswith(b"\x89PNG")
    assert main(["plot", str(runs / "all"), "--kind", "spp", "--steps", "0,2", "--out", str(out)]) == 0
    assert seen["spp"] == (["pws"], {"steps": [0, 2]})
    capsys.readouterr()


SELECTION_ERRORS = [
    (["--kind", "collapse", "--layers", "conv"], ["'collapse'", "--layers", "conv", "curves"]),
    (["--kind", "theory", "--mode", "eval"], ["'theory'", "--mode", "eval", "curves", "spp"]),
    (["--kind", "shift", "--steps", "1"], ["'shift'", "--steps", "spp", "transmission"]),
    (["--kind", "spp", "--schemes", "bn"], ["'bn'", "matches no run", "schemes of the runs: pws"]),
    (["--kind", "curves", "--quantity", "out.var", "--layers", "nosuch*"], ["'nosuch*'", "matches no layer", "layers:"]),
    (["--kind", "spp", "--steps", "0,99"], ["--steps 99", "recorded steps: 0 to 2"]),
    (["--kind", "spp", "--mode", "eval"], ["mode 'eval'", "modes in the frame: train"]),
    (["--kind", "spp", "--steps", "0,x"], ["--steps", "'x'", "comma-separated"]),
]


@pytest.mark.parametrize("argv, fragments", SELECTION_ERRORS, ids=[" ".join(a) for a, _ in SELECTION_ERRORS])
def test_plot_refuses_a_selection_the_kind_cannot_take_or_that_matches_nothing(runs, argv, fragments, tmp_path,
                                                                                 capsys):
    out = tmp_path / "fig.png"
    assert _exit_code(["plot", str(runs / "all"), *argv, "--out", str(out)]) == 2
    error = _one_usage_error(capsys)
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert not out.exists()


@pytest.mark.parametrize("option, text, field, value", [
    ("--threads", "0", "threads", 0), ("--momentum", "1.5", "momentum", 1.5), ("--seed", "-1", "seed", -1),
    ("--synthetic-n", "0", "synthetic_n", 0), ("--collapse-var", "-2", "collapse_var", -2.0),
    ("--lr", "1e39", "lr", 1e39), ("--channels", "2", "channels", 2), ("--scheme", "xx", "scheme", "xx"),
    ("--eval-batch", "0", "eval_batch", 0),
])
def test_a_bad_value_is_refused_with_runconfigs_own_message(option, text, field, value, capsys):
    """One range check: the CLI refuses a value, naming the option, with the message RunConfig
    itself gives for it (the check both run is the field's metadata)."""
    with pytest.raises(ValueError) as info:
        RunConfig(**{field: value})
    assert _exit_code(["run", option, text, "--out", "out"]) == 2
    error = _lines(capsys.readouterr().err)[-1]
    assert error.startswith(f"varprobe run: error: argument {option}: ") and str(info.value) in error
