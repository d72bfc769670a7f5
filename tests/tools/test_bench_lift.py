"""LiftPool's benchmark (``poolbench bench lift``, ``poolbench.tools.bench_lift``): the rows, the
ratio table and the command, for the pooling op and for a training step. Timings are never
asserted (shared, noisy machine)."""
from poolbench.tools.bench_lift import format_table, ratio_table, run_benchmark
from poolbench.tools.bench_lift import main as bench_main


def test_benchmark_rows_and_table(capsys):
    rows = run_benchmark(shapes=["2x4x8x8"], layouts=("nchw", "cl"), threads=1, repeats=2,
                         warmup=1)
    assert {(r["layout"], r["pass"], r["pool"]) for r in rows} == {
        (lay, p, pool) for lay in ("nchw", "cl") for p in ("fwd", "fwd+bwd")
        for pool in ("lift", "lift:impl=reference", "max")}
    lines = ratio_table(rows)
    assert len(lines) == 4 and all("ref/fast" in ln and "lift/max" in ln for ln in lines)
    text = format_table(lines)
    assert "ref/fast" in text and "2x4x8x8" in text
    assert bench_main(["--shapes", "1x4x6x6", "--repeats", "1", "--warmup", "0",
                       "--layouts", "cl"]) == 0
    out = capsys.readouterr().out
    assert "threads=1" in out and "1x4x6x6" in out


def test_training_step_benchmark_prints_lift_over_max(capsys):
    from poolbench.tools.bench_lift import run_train_benchmark

    stats = run_train_benchmark(("lift", "max"), repeats=2, warmup=0, batch_size=16)
    assert set(stats) == {"lift", "max"} and all(s.n == 2 and s.median > 0 for s in stats.values())
    assert bench_main(["--train", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "lift/max" in out and "backbone convnet, batch 32" in out


def test_kernel_option_times_another_build_of_the_kernel_beside_this_one(tmp_path):
    import pytest
    import torch

    from poolbench.errors import UsageError
    from poolbench.pools import lift_native
    from poolbench.registry import get_pool
    from poolbench.tools.bench_lift import run_train_benchmark

    if lift_native.library() is None:
        pytest.skip(f"no native kernel here: {lift_native.why()}")
    same = tmp_path / "same.c"
    same.write_text(lift_native.SOURCE.read_text())
    stats = run_train_benchmark(("lift", "max"), repeats=1, warmup=0, batch_size=4, kernels=(str(same),))
    assert list(stats) == ["lift", "lift [same.c]", "max"]
    # a build whose forward always fails shows that `using` runs it, and only inside the block
    failing = tmp_path / "failing.c"
    failing.write_text(lift_native.SOURCE.read_text().replace("int rc = 0;", "int rc = -1;"))
    pool = get_pool("lift", 16)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    with lift_native.using(lift_native.load(failing)), pytest.raises(MemoryError):
        pool(x)
    assert pool(x).shape == (2, 16, 4, 4)
    with pytest.raises(UsageError, match="no such file"):
        bench_main_raising(["--train", "--kernel", str(tmp_path / "missing.c")])
    broken = tmp_path / "broken.c"
    broken.write_text("int lift_forward(")
    with pytest.raises(UsageError, match=r"--kernel: .*broken\.c.*error.*that compiles"):
        run_train_benchmark(("lift", "max"), repeats=1, warmup=0, batch_size=4, kernels=(str(broken),))


def bench_main_raising(argv):
    from poolbench.tools.bench_lift import command
    return command.main(argv, standalone_mode=False)
