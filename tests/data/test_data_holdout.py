"""Validation splits (``holdout``): carved from the training images by the data seed, evaluated
with the test transform, never touching the test split; fed small files in the real formats."""
import numpy as np
import pytest
import torch

import helpers
from helpers import write_tree
from poolbench.config import TrainConfig
from poolbench.data import dataset_fingerprint, holdout_indices, load_dataset, photos
from poolbench.data.photos import CLASS_NAMES, crop_boxes
from poolbench.errors import UsageError
from poolbench.store import config_hash
from poolbench.training.evaluate import predict_dataset


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text.strip() == text and text
    return text


def test_holdout_indices_are_seeded_nested_and_bounded():
    a = holdout_indices(100, 10, seed=3)
    assert a.tolist() == holdout_indices(100, 10, seed=3).tolist()          # deterministic
    assert len(set(a.tolist())) == 10 and a.min() >= 0 and a.max() < 100   # distinct, in range
    assert a.tolist() == sorted(a.tolist())
    assert a.tolist() != holdout_indices(100, 10, seed=4).tolist()          # the data seed draws it
    assert set(a.tolist()) < set(holdout_indices(100, 30, seed=3).tolist())  # a larger holdout contains it
    assert a.tolist() != list(range(10)) and a.tolist() != list(range(90, 100))  # not a block
    assert holdout_indices(100, 0, seed=3).tolist() == []
    with pytest.raises(UsageError) as err:
        holdout_indices(100, 100, seed=3)
    assert "100 of 100" in one_line(err)
    with pytest.raises(UsageError):
        holdout_indices(100, -1, seed=3)


def _same_images(validation, source, idx) -> None:
    """The validation images are the training images at ``idx``, through the test transform."""
    assert np.array_equal(validation.images, source.images[idx])
    assert np.array_equal(validation.labels, source.labels[idx])
    for i in range(len(idx)):  # no augmentation: the plain [0, 1] scaling, the same every time
        x, y = validation[i]
        assert torch.equal(x, torch.from_numpy(source.images[idx[i]].copy()).permute(2, 0, 1).float() / 255)
        assert torch.equal(x, validation[i][0]) and y == source.labels[idx[i]]


def test_shapes_holdout_moves_training_images_into_validation():
    whole = load_dataset("shapes", seed=1, train_size=60, test_size=20)
    held = load_dataset("shapes", seed=1, train_size=60, test_size=20, holdout=12)
    idx = holdout_indices(60, 12, seed=1)
    rest = np.setdiff1d(np.arange(60), idx)
    assert (len(held.train), len(held.test)) == (48, 12)
    _same_images(held.test, whole.train, idx)
    assert np.array_equal(held.train.images, whole.train.images[rest])   # the model trains on the rest
    assert repr(held.train.transform) == repr(whole.train.transform)     # augmented as before
    torch.manual_seed(0)
    crops = {bytes(held.train[0][0].numpy()) for _ in range(8)}
    assert len(crops) > 1                                                 # random crops and flips
    assert held.evaluated == "validation" and held.split_name == "shapes validation split"
    assert whole.split_name == "shapes test split"
    assert held.config["holdout"] == 12 and "holdout" not in whole.config
    assert held.eval_arrays().images.shape == (12, 32, 32, 3)            # robustness suites read it
    # the test split is nowhere in the held-out bundle
    test_rows = {bytes(im) for im in whole.test.images}
    assert not test_rows & {bytes(im) for im in held.test.images}
    assert not test_rows & {bytes(im) for im in held.train.images}


@pytest.mark.slow  # loading the photographs takes about a second
def test_photos_holdout_cuts_validation_crops_from_cells_the_model_never_fits():
    """Regression: the photos validation split was crops of the training cells, each nearly a
    training crop, so validation errors read 0.1-2.5 % against 6-9 % on the test cells and
    could not rank learning rates. Now it is crops of validation cells only."""
    whole = load_dataset("photos", seed=2, train_size=400, test_size=8)
    held = load_dataset("photos", seed=2, train_size=400, test_size=8, holdout=60)
    assert (len(held.train), len(held.test)) == (340, 60)
    assert held.split_name == "photos validation split" and held.config["holdout"] == 60
    assert held.config["holdout_split"] == photos.HOLDOUT_SPLIT
    assert repr(held.train.transform) == repr(whole.train.transform)
    assert held.test.transform is whole.test.transform  # the test transform: no augmentation
    shape_of = lambda p: photos.photographs()[p].shape[:2]  # noqa: E731
    region = {split: [np.zeros(shape_of(p), bool) for p in range(10)] for split in ("fit", "validation", "test")}
    for split, masks in region.items():
        for p in range(10):
            for top, left in photos.cells(p, split):
                masks[p][top:top + photos.CELL, left:left + photos.CELL] = True
    fit = crop_boxes(340, seed=2, split="fit")
    val = crop_boxes(60, seed=2, split="validation")
    assert np.array_equal(held.train.labels, fit[0]) and np.array_equal(held.test.labels, val[0])
    for (labels, boxes, _), inside in ((fit, "fit"), (val, "validation")):
        for (top, left, side), p in zip(boxes, labels):
            box = np.zeros(shape_of(p), bool)
            box[top:top + side, left:left + side] = True
            assert (box <= region[inside][p]).all()  # every crop lies in its own cells only
    for p in range(10):  # the three regions are disjoint and each photograph has all three
        assert not (region["fit"][p] & region["validation"][p]).any()
        assert not ((region["fit"][p] | region["validation"][p]) & region["test"][p]).any()
        assert all(region[split][p].any() for split in region), CLASS_NAMES[p]
        train = np.zeros(shape_of(p), bool)
        for top, left in photos.cells(p, "train"):
            train[top:top + photos.CELL, left:left + photos.CELL] = True
        assert np.array_equal(train, region["fit"][p] | region["validation"][p])
    assert not {bytes(im) for im in held.test.images} & {bytes(im) for im in whole.test.images}
    assert load_dataset("photos", seed=3, train_size=400, holdout=60).test.images.tolist() != held.test.images.tolist()
    with pytest.raises(UsageError) as err:
        load_dataset("photos", train_size=40, holdout=40)
    assert "40 of 40" in one_line(err)


def test_cifar_holdout_comes_from_the_training_batches(tmp_path):
    folder, written = helpers.write_cifar10(tmp_path, n=6, seed=0)
    whole = load_dataset("cifar10", root=tmp_path, download=False)
    held = load_dataset("cifar10", root=tmp_path, download=False, holdout=5, seed=7)
    idx = holdout_indices(30, 5, seed=7)
    assert (len(held.train), len(held.test)) == (25, 5)
    _same_images(held.test, whole.train, idx)
    batches = np.concatenate([np.asarray(written[f"data_batch_{i}"][b"data"]) for i in range(1, 6)])
    rows = batches.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)           # the files' own rows
    assert np.array_equal(held.test.images, rows[idx])
    assert held.split_name == "cifar10 validation split"


def test_imagefolder_holdout_uses_train_files_and_the_eval_geometry(tmp_path):
    write_tree(tmp_path / "train", per_class=4)
    write_tree(tmp_path / "val", classes=("cat", "emu"), per_class=2, seed=1)
    whole = load_dataset(f"imagefolder:{tmp_path}", image_size=32)
    held = load_dataset(f"imagefolder:{tmp_path}", image_size=32, holdout=3, seed=5)
    idx = holdout_indices(12, 3, seed=5)
    assert held.test.samples == [whole.train.samples[i] for i in idx]
    assert held.train.samples == [s for i, s in enumerate(whole.train.samples) if i not in set(idx)]
    assert all("/train/" in path for path, _ in held.test.samples)       # never a val/ file
    assert repr(held.test.geometry) == repr(whole.test.geometry) and held.test.transform is None
    assert repr(held.train.transform) == repr(whole.train.transform)
    arrays = held.eval_arrays()
    for i in range(3):  # deterministic geometry: the same tensor twice, equal to its uint8 array
        x, _ = held.test[i]
        assert torch.equal(x, held.test[i][0])
        assert torch.equal(x, torch.from_numpy(arrays.images[i]).permute(2, 0, 1).float() / 255)


def test_fingerprint_records_the_holdout(tmp_path):
    assert dataset_fingerprint("shapes") == "shapes-v1"   # no holdout: as before, so stored cells stay
    prints = {dataset_fingerprint("shapes", holdout=k) for k in (0, 10, 20)}
    assert len(prints) == 3
    assert dataset_fingerprint("shapes", holdout=10) == dataset_fingerprint("shapes", holdout=10)
    helpers.write_cifar10(tmp_path, n=2)
    cifar = dataset_fingerprint("cifar10", tmp_path, download=False)
    assert dataset_fingerprint("cifar10", tmp_path, download=False, holdout=3) not in (cifar, *prints)
    # photos holds out by cell, not by image: a split cut another way is other data
    by_cell = dataset_fingerprint("photos", holdout=10)
    assert by_cell != dataset_fingerprint("photos") and by_cell != dataset_fingerprint("photos", holdout=20)


def test_train_config_holdout_keeps_old_hashes_and_checks_sizes():
    plain = TrainConfig()
    assert "holdout" not in plain.to_dict()
    assert config_hash(plain.to_dict()) == config_hash({k: v for k, v in plain.to_dict().items()})
    held = TrainConfig(holdout=10, train_size=100)
    assert held.to_dict()["holdout"] == 10
    assert config_hash(held.to_dict()) != config_hash(TrainConfig(train_size=100).to_dict())
    with pytest.raises(UsageError) as err:
        TrainConfig(holdout=80, train_size=100, batch_size=32)
    assert "holding out 80 of 100" in one_line(err)
    with pytest.raises(UsageError):
        TrainConfig(holdout=-1)


def test_evaluation_refuses_non_finite_images_in_one_line():
    images = torch.rand(5, 3, 4, 4)
    images[3, 1, 2, 2] = float("nan")
    data = torch.utils.data.TensorDataset(images, torch.zeros(5, dtype=torch.int64))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    with pytest.raises(UsageError) as err:
        predict_dataset(model, data, batch_size=2, what="shapes test split")
    text = one_line(err)
    assert text.startswith("shapes test split holds images with non-finite pixels") and "image 3" in text
    finite = torch.utils.data.TensorDataset(images[:3], torch.zeros(3))
    logits, _ = predict_dataset(model, finite, batch_size=2)
    assert logits.shape == (3, 2)
