"""Metrics against numbers computed by hand (the arithmetic is in the comments)."""
import math

import numpy as np
import pytest
import torch

from poolbench import metrics as M
from poolbench.errors import UsageError

# ----------------------------------------------------------------------------- constants

def test_constant_tables_match_the_spec():
    assert len(M.BENCHMARK_CORRUPTIONS) == 15 and len(M.EXTRA_CORRUPTIONS) == 4
    assert M.BENCHMARK_CORRUPTIONS[0] == "gaussian_noise"
    assert M.BENCHMARK_CORRUPTIONS[-1] == "jpeg_compression"
    assert M.EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert set(M.ALEXNET_ERR) == set(M.ALL_CORRUPTIONS)
    assert all(len(v) == 5 for v in M.ALEXNET_ERR.values())
    # the spec's "mean" column is what CE divides by
    assert np.mean(M.ALEXNET_ERR["gaussian_noise"]) == pytest.approx(0.886428)
    assert np.mean(M.ALEXNET_ERR["saturate"]) == pytest.approx(0.658248)
    assert np.mean(M.ALEXNET_ERR["elastic_transform"]) == pytest.approx(0.646056)
    assert M.ALEXNET_CLEAN_ERR == 0.43478
    assert set(M.ALEXNET_FP) == set(M.P_TEST_PERTURBATIONS) | set(M.P_VALIDATION_PERTURBATIONS)
    assert M.CIFAR_P_TEST_PERTURBATIONS[4] == "spatter" and "snow" not in M.CIFAR_P_TEST_PERTURBATIONS
    assert M.NOISE_PERTURBATIONS == ("gaussian_noise", "shot_noise", "speckle_noise")


# ----------------------------------------------------------------------------- accuracy

def test_top1_and_topk_error():
    logits = np.array([[0.1, 0.9, 0.0, 0.0],    # top1 = 1, top2 = {1, 0}
                       [0.5, 0.1, 0.3, 0.2],    # top1 = 0, top2 = {0, 2}
                       [0.0, 0.1, 0.2, 0.7]])   # top1 = 3, top2 = {3, 2}
    labels = np.array([1, 2, 1])
    # top-1: right, wrong, wrong -> 2/3
    assert M.top1_error(logits, labels) == pytest.approx(2 / 3)
    assert M.top1_error(np.array([1, 0, 3]), labels) == pytest.approx(2 / 3)
    assert M.top1_error(torch.tensor(logits), torch.tensor(labels)) == pytest.approx(2 / 3)
    # top-2: 1 in {1,0} yes, 2 in {0,2} yes, 1 in {3,2} no -> 1/3
    assert M.topk_error(logits, labels, k=2) == pytest.approx(1 / 3)
    assert M.topk_error(logits, labels, k=4) == 0.0
    with pytest.raises(UsageError, match="k=5"):
        M.topk_error(logits, labels, k=5)
    with pytest.raises(UsageError, match="differ in length"):
        M.top1_error(logits, labels[:2])


# ----------------------------------------------------------------------------- corruption errors

def _made_up_errors():
    # 13 corruptions at exactly half of AlexNet's errors (CE = 0.5 each), two written out.
    errors = {c: tuple(0.5 * e for e in M.ALEXNET_ERR[c]) for c in M.ALL_CORRUPTIONS}
    errors["gaussian_noise"] = (0.5, 0.6, 0.7, 0.8, 0.9)
    errors["brightness"] = (0.2, 0.2, 0.3, 0.3, 0.5)
    # the 4 extra corruptions must not count in mCE: make them absurd
    for c in M.EXTRA_CORRUPTIONS:
        errors[c] = (1.0, 1.0, 1.0, 1.0, 1.0)
    return errors


def test_corruption_error_and_mce_against_alexnet_by_hand():
    errors = _made_up_errors()
    # gaussian_noise: 0.5+0.6+0.7+0.8+0.9 = 3.5;
    #   AlexNet 0.69528+0.82542+0.93554+0.98138+0.99452 = 4.43214; 3.5 / 4.43214 = 0.78968624
    assert M.corruption_error(errors["gaussian_noise"], M.ALEXNET_ERR["gaussian_noise"]) == \
        pytest.approx(0.78968624, abs=1e-8)
    # brightness: 0.2+0.2+0.3+0.3+0.5 = 1.5;
    #   AlexNet 0.45140+0.48502+0.54048+0.62166+0.72440 = 2.82296; 1.5 / 2.82296 = 0.53135716
    assert M.corruption_error(errors["brightness"], M.ALEXNET_ERR["brightness"]) == \
        pytest.approx(0.53135716, abs=1e-8)
    # mCE = 100 * (13 * 0.5 + 0.78968624 + 0.53135716) / 15 = 100 * 7.82104340 / 15 = 52.140289
    assert M.mce(errors, M.ALEXNET_ERR) == pytest.approx(52.140289, abs=1e-5)
    ces = M.corruption_errors(errors, M.ALEXNET_ERR)
    assert list(ces) == list(M.BENCHMARK_CORRUPTIONS) and ces["fog"] == pytest.approx(0.5)


def test_mce_averages_the_ratio_to_the_reference_over_the_chosen_corruptions():
    # the i-th benchmark corruption (i = 1..15) at i/20 of AlexNet's errors: CE = i/20;
    # the 4 extra ones at 0.9 of AlexNet's: CE = 0.9
    errors = {c: tuple((i + 1) / 20 * e for e in M.ALEXNET_ERR[c])
              for i, c in enumerate(M.BENCHMARK_CORRUPTIONS)}
    errors.update({c: tuple(0.9 * e for e in M.ALEXNET_ERR[c]) for c in M.EXTRA_CORRUPTIONS})
    # the 15: 100 * (1 + 2 + ... + 15) / 20 / 15 = 100 * 6 / 15 = 40
    assert M.mce(errors, M.ALEXNET_ERR) == pytest.approx(40.0)
    # all 19: 100 * (6 + 4 * 0.9) / 19 = 100 * 9.6 / 19 = 50.526316
    assert M.mce(errors, M.ALEXNET_ERR, corruptions=M.ALL_CORRUPTIONS) == \
        pytest.approx(50.526316, abs=1e-6)
    # a subset: (CE 1/20 + CE 15/20) / 2 = 0.4 -> 40; (CE 2/20 + CE 0.9) / 2 = 0.5 -> 50
    first, second, last = (M.BENCHMARK_CORRUPTIONS[k] for k in (0, 1, -1))
    assert M.mce(errors, M.ALEXNET_ERR, corruptions=(first, last)) == pytest.approx(40.0)
    assert M.mce(errors, M.ALEXNET_ERR, corruptions=(second, "saturate")) == pytest.approx(50.0)


def test_relative_mce_by_hand():
    errors = {"fog": (0.3, 0.4, 0.5, 0.6, 0.7)}
    # model: sum(E) - 5 * clean = 2.5 - 5 * 0.2 = 1.5
    # AlexNet fog: 0.67474+0.76050+0.84378+0.87260+0.94500 = 4.09662; - 5 * 0.43478 = 1.92272
    # relative CE = 1.5 / 1.92272 = 0.78014479 -> x100 = 78.014479
    got = M.relative_mce(errors, 0.2, M.ALEXNET_ERR, M.ALEXNET_CLEAN_ERR, corruptions=("fog",))
    assert got == pytest.approx(78.014479, abs=1e-5)
    # another reference, two corruptions, clean errors 0.2 (model) and 0.3 (reference):
    #   fog:  (2.5 - 1.0) / (2.5 - 1.5) = 1.5;  snow: (1.5 - 1.0) / (2.0 - 1.5) = 1.0
    #   relative mCE = 100 * (1.5 + 1.0) / 2 = 125
    errors = {"fog": (0.3, 0.4, 0.5, 0.6, 0.7), "snow": (0.3,) * 5}
    ref = {"fog": (0.5,) * 5, "snow": (0.4,) * 5}
    both = ("fog", "snow")
    assert M.relative_mce(errors, 0.2, ref, 0.3, corruptions=both) == pytest.approx(125.0)
    # plain mCE of the same errors ignores the clean errors: 100 * (2.5/2.5 + 1.5/2.0) / 2 = 87.5
    assert M.mce(errors, ref, corruptions=both) == pytest.approx(87.5)


def test_unnormalized_mce_averages_the_15_not_the_19():
    errors = {c: (0.2, 0.3, 0.4, 0.5, 0.6) for c in M.BENCHMARK_CORRUPTIONS}  # mean 0.4 each
    errors.update({c: (0.8,) * 5 for c in M.EXTRA_CORRUPTIONS})               # mean 0.8 each
    # over the 15: 0.4. The trap (all 19): (15 * 0.4 + 4 * 0.8) / 19 = 9.2 / 19 = 0.484211
    assert M.unnormalized_mce(errors) == pytest.approx(0.4)
    assert M.unnormalized_mce(errors, corruptions=M.ALL_CORRUPTIONS) == pytest.approx(0.484211, abs=1e-6)


def test_missing_corruption_names_it():
    errors = _made_up_errors()
    del errors["frost"]
    with pytest.raises(UsageError, match="'frost'"):
        M.mce(errors, M.ALEXNET_ERR)
    with pytest.raises(UsageError, match="'frost'"):
        M.unnormalized_mce(errors)
    with pytest.raises(UsageError, match="'frost'"):
        M.relative_mce(errors, 0.1, M.ALEXNET_ERR, M.ALEXNET_CLEAN_ERR)
    with pytest.raises(UsageError, match="same severities"):
        M.corruption_error((0.1, 0.2), M.ALEXNET_ERR["fog"])


# ----------------------------------------------------------------------------- perturbations

def test_flip_probability_temporal_vs_noise():
    preds = np.array([[1, 2, 2, 2, 2],
                      [0, 1, 0, 1, 0]])
    # temporal: seq1 flips 1->2 once of 4 pairs = 0.25; seq2 flips 4/4 = 1.0; mean 0.625
    assert M.flip_probability(preds) == pytest.approx(0.625)
    # vs first frame: seq1 [2,2,2,2] != 1 -> 4/4 = 1.0; seq2 [1,0,1,0] != 0 -> 2/4 = 0.5; mean 0.75
    assert M.flip_probability(preds, noise=True) == pytest.approx(0.75)
    # logits (sequences, frames, classes) give the same predictions
    logits = np.eye(3)[preds]
    assert M.flip_probability(logits) == pytest.approx(0.625)
    with pytest.raises(UsageError, match="2 frames"):
        M.flip_probability(np.array([[1], [2]]))


def test_top5_distance_on_crafted_rankings():
    ident = np.arange(1, 11)                       # class k has rank k+1
    assert M.top5_distance(ident, ident) == 0
    # top-5 of the first frame all fall to ranks 6..10: 5+4+3+2+1 = 15
    disjoint = np.array([6, 7, 8, 9, 10, 1, 2, 3, 4, 5])
    assert M.top5_distance(ident, disjoint) == 15
    # swap ranks 1 and 2: sigma = (2, 1, 3, 4, 5): |1-2| + |2-1| = 2
    swap = np.array([2, 1, 3, 4, 5, 6, 7, 8, 9, 10])
    assert M.top5_distance(ident, swap) == 2
    # class ranked 5th falls to rank 9: |5 - min(9, 6)| = 1
    drop5 = np.array([1, 2, 3, 4, 9, 5, 6, 7, 8, 10])
    assert M.top5_distance(ident, drop5) == 1
    # top class falls to rank 3: sigma = (3, 1, 2, 4, 5): 2 + 1 + 1 = 4
    drop1 = np.array([3, 1, 2, 4, 5, 6, 7, 8, 9, 10])
    assert M.top5_distance(ident, drop1) == 4
    # batched
    np.testing.assert_array_equal(M.top5_distance(np.stack([ident, ident]), np.stack([swap, disjoint])),
                                  [2, 15])
    # ranks from logits: 1 = highest
    np.testing.assert_array_equal(M.ranks_from_logits([0.1, 0.9, 0.5]), [3, 1, 2])
    with pytest.raises(UsageError, match="permutation"):
        M.top5_distance(ident - 1, ident)


def test_mean_top5_distance_sequences():
    f0 = [6, 5, 4, 3, 2, 1]          # ranking 0,1,2,3,4,5
    f1 = [5, 6, 4, 3, 2, 1]          # classes 0 and 1 swapped
    seq1 = [f0, f1, f0]
    seq2 = [f0, f0, f0]
    z = np.array([seq1, seq2], dtype=float)
    # temporal: seq1 pairs (f0,f1)=2, (f1,f0)=2 -> 2; seq2 -> 0; mean 1.0
    assert M.mean_top5_distance(z) == pytest.approx(1.0)
    # noise: seq1 (f0,f1)=2, (f0,f0)=0 -> 1; seq2 -> 0; mean 0.5
    assert M.mean_top5_distance(z, noise=True) == pytest.approx(0.5)


def test_flip_rate_mfr_mt5d():
    fps = {"translate": 0.05, "rotate": 0.2}
    refs = {"translate": 0.1, "rotate": 0.1}
    assert M.flip_rate(0.05, 0.1) == pytest.approx(0.5)
    # FR 0.5 and 2.0 -> 100 * 1.25 = 125
    assert M.mfr(fps, refs, perturbations=("translate", "rotate")) == pytest.approx(125.0)
    assert M.mt5d(fps, refs, perturbations=("translate", "rotate")) == pytest.approx(125.0)
    half = {p: v / 2 for p, v in M.ALEXNET_FP.items()}
    assert M.mfr(half, M.ALEXNET_FP) == pytest.approx(50.0)
    with pytest.raises(UsageError, match="'snow'"):
        M.mfr({p: 0.1 for p in M.CIFAR_P_TEST_PERTURBATIONS}, M.ALEXNET_FP)


# ----------------------------------------------------------------------------- shift, segmentation, PSNR

def test_consistency():
    # 3 of 4 agree -> 75
    assert M.consistency([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(75.0)
    logits_a = np.eye(5)[[1, 2, 3, 4]]
    assert M.consistency(logits_a, torch.tensor([1, 2, 0, 4])) == pytest.approx(75.0)


def test_confusion_matrix_and_miou():
    target = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(M.confusion_matrix(pred, target, 3),
                                  [[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    conf = np.array([[5, 1, 0],
                     [2, 3, 1],
                     [0, 0, 4]])
    # class 0: TP 5, FP 7-5=2, FN 6-5=1 -> 5/8 = 0.625
    # class 1: TP 3, FP 4-3=1, FN 6-3=3 -> 3/7 = 0.4285714
    # class 2: TP 4, FP 5-4=1, FN 4-4=0 -> 4/5 = 0.8
    # mean = 1.8535714 / 3 = 0.6178571 -> 61.78571 %
    assert M.miou(conf) == pytest.approx(61.78571, abs=1e-4)
    # an absent class (row and column of zeros) is left out of the mean
    conf4 = np.zeros((4, 4), int)
    conf4[:3, :3] = conf
    assert M.miou(conf4) == pytest.approx(61.78571, abs=1e-4)
    with pytest.raises(UsageError, match="class 7"):
        M.confusion_matrix(np.array([7]), np.array([0]), 3)


def test_psnr_of_a_known_error():
    x = np.zeros((2, 2))
    y = np.array([[0.2, 0.0], [0.0, 0.0]])
    # MSE = 0.2^2 / 4 = 0.01; 10 * log10(1 / 0.01) = 20 dB
    assert M.psnr(x, y, data_range=1.0) == pytest.approx(20.0)
    # uint8 range: every pixel off by 1 -> MSE 1 -> 10 * log10(255^2) = 48.130804 dB
    a = np.full((3, 3), 10, np.uint8)
    assert M.psnr(a, a + 1, data_range=255) == pytest.approx(48.130804, abs=1e-6)
    assert M.psnr(x, x, 1.0) == math.inf


# --- per-sequence stability from stored top-5 lists (the predictions the store keeps) ----------

def test_top5_lists_give_the_same_t5d_and_fp_as_full_logits():
    from poolbench.metrics import (
        flip_probability,
        flips_per_sequence,
        mean_top5_distance,
        top5_distances_per_sequence,
    )

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(7, 6, 12))
    logits[:, 3] = logits[:, 2] + 1e-3 * rng.normal(size=(7, 12))  # near-identical frames too
    top5 = np.argsort(-logits, axis=-1, kind="stable")[..., :5]
    for noise in (False, True):
        assert top5_distances_per_sequence(top5, noise).mean() == pytest.approx(
            mean_top5_distance(logits, noise))
        assert flips_per_sequence(top5[..., 0], noise).mean() == pytest.approx(
            flip_probability(logits.argmax(-1), noise))


def test_difficulty_steps_pair_frames_as_imagenet_p_test_py():
    from poolbench.metrics import flips_per_sequence, frame_pairs

    # step 2 over 5 frames: subsequences 0,2,4 and 1,3 -> pairs (0,2) (2,4) (1,3)
    a, b = frame_pairs(5, step=2)
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 2), (1, 3), (2, 4)]
    assert list(zip(*frame_pairs(4, noise=True, step=3))) == [(0, 1), (0, 2), (0, 3)]  # noise: vs frame 0
    seq = np.array([[0, 1, 0, 1, 0]])   # flips every frame, never two frames apart
    assert flips_per_sequence(seq, step=1)[0] == 1.0 and flips_per_sequence(seq, step=2)[0] == 0.0
