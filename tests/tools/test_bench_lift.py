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
