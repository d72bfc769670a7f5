"""The trained-model check of the torch corruption engine (``poolbench check corrupt``):
the comparison against hand-computed cases, and end to end on a small trained model."""
import numpy as np
import pytest

from poolbench.tools import check_corrupt


def _preds(labels, **sets):
    """Arrays as the robustness suite stores them: top-k classes per image, and the labels."""
    out = {"labels": np.asarray(labels)}
    for key, top1 in sets.items():
        out[key.replace("__", "/")] = np.stack([top1, (np.asarray(top1) + 1) % 10], 1)
    return out


def test_compare_on_hand_computed_cases():
    labels = [0, 1, 2, 3]
    ref = _preds(labels, clean=[0, 1, 2, 3], fog__1=[0, 1, 9, 9], fog__2=[0, 1, 2, 3])
    same = _preds(labels, clean=[0, 1, 2, 3], fog__1=[9, 9, 2, 3], fog__2=[9, 9, 9, 9])
    table = check_corrupt.compare(ref, same, n_resamples=2000).set_index("severity")
    # severity 1: both 50% wrong, on different images. The paired difference per image is
    # (+1, +1, -1, -1): its bootstrap mean lies in [-100, 100] and is 0 at the full sample
    one = table.loc[1]
    assert one["reference error"] == one["torch error"] == 50.0 and one["Δ"] == 0.0
    assert one["inside"] and one["reference lo"] < 50 < one["reference hi"]
    # severity 2: the reference has no error on 4 images, so its interval is the point 0 and
    # the torch set's 100% lies outside; the difference is +100 on every image: a point
    two = table.loc[2]
    assert (two["reference lo"], two["reference hi"]) == (0.0, 0.0)
    assert two["torch error"] == 100.0 and not two["inside"]
    assert two["Δ"] == two["Δ lo"] == two["Δ hi"] == 100.0
    assert list(table.index) == [1, 2] and "clean" not in set(table["corruption"])


def test_compare_refuses_different_images():
    with pytest.raises(ValueError, match="same test images"):
        check_corrupt.compare(_preds([0, 1], fog__1=[0, 1]), _preds([1, 0], fog__1=[0, 1]))


def test_bad_input_is_one_line(tmp_path, capsys):
    assert check_corrupt.main(["--pool", "nosuch", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("check_corrupt: unknown pool 'nosuch'") and "\n" not in err


@pytest.mark.slow  # trains a small model and generates 18 x 5 corrupted sets with each engine
def test_torch_sets_leave_a_trained_models_error_inside_the_reference_interval(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POOLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(check_corrupt.api, "run", _small(check_corrupt.api.run))
    status = check_corrupt.main(["--results", str(tmp_path / "res"), "--subset", "200",
                                 "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert "200 test images" in out and "of 90 (corruption, severity)" in out
    assert status == 0, out


def _small(run):
    def small_run(*args, **kwargs):
        return run(*args, **kwargs, train_size=1024, test_size=200, epochs=2, batch_size=64, threads=1)
    return small_run
