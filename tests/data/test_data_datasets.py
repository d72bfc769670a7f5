"""Real dataset loaders, fed small files written here in the real formats."""
import numpy as np
import pytest
import torch
from PIL import Image

import helpers
import poolbench.data.datasets as ds
from helpers import dump_pickle, write_cifar100, write_tree
from helpers import write_image as _image
from poolbench.data import describe_datasets, list_datasets, load_dataset, load_segmentation_dataset
from poolbench.errors import UsageError


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text.strip() == text and text
    return text


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if a loader tries the network."""
    calls = []

    def fake(url, root, filename, md5):
        calls.append(url)
        raise OSError("no network in tests")

    monkeypatch.setattr(ds, "_download", fake)
    return calls


# ------------------------------------------------------------------------------------------
# CIFAR: the python-version pickles (bytes keys, uint8 (N, 3072) rows R..G..B planes)
# ------------------------------------------------------------------------------------------
PY3_PICKLES = False  # switched by the py3 variant of the read test


def _dump(path, obj):
    dump_pickle(path, obj, py3=PY3_PICKLES)


def write_cifar10(root, n=6, seed=0):
    return helpers.write_cifar10(root, n, seed, py3=PY3_PICKLES)


@pytest.mark.parametrize("py3", [False, True], ids=["py2-pickles", "py3-pickles"])
def test_cifar10_reads_the_python_pickles(tmp_path, no_download, monkeypatch, py3):
    monkeypatch.setitem(globals(), "PY3_PICKLES", py3)
    folder, written = write_cifar10(tmp_path)
    py2_marker = b"cnumpy.core.multiarray\n_reconstruct"  # as in the official files
    assert (py2_marker in (folder / "test_batch").read_bytes()) != py3
    bundle = load_dataset("cifar10", root=tmp_path)
    assert not no_download
    assert (len(bundle.train), len(bundle.test)) == (30, 6)
    assert bundle.num_classes == 10 and bundle.image_size == 32
    assert bundle.class_names[:3] == ("airplane", "automobile", "bird")
    assert bundle.mean == ds.CIFAR10_MEAN and bundle.std == ds.CIFAR10_STD
    # row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    expected = written["test_batch"][b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    arrays = bundle.eval_arrays()
    assert np.array_equal(arrays.images, expected)
    assert arrays.labels.tolist() == written["test_batch"][b"labels"]
    x, y = bundle.test[2]
    assert torch.equal(x, torch.from_numpy(expected[2]).permute(2, 0, 1).float() / 255)
    assert y == written["test_batch"][b"labels"][2]
    # training items: augmented, unnormalised, in [0, 1]; order: batches 1..5
    assert bundle.train.labels.tolist()[6:12] == written["data_batch_2"][b"labels"]
    xt, _ = bundle.train[0]
    assert xt.shape == (3, 32, 32) and xt.dtype == torch.float32 and 0 <= xt.min() and xt.max() <= 1
    # a root that is the folder itself works too
    assert len(load_dataset("cifar10", root=folder).test) == 6


def test_cifar100_uses_fine_labels(tmp_path, no_download):
    _, written = write_cifar100(tmp_path)
    bundle = load_dataset("cifar100", root=str(tmp_path), train_size=5)
    assert bundle.num_classes == 100 and bundle.class_names[99] == "fine99"
    assert bundle.mean == ds.CIFAR100_MEAN
    assert len(bundle.train) == 5 and len(bundle.test) == 8
    assert bundle.eval_arrays().labels.tolist() == written["test"][b"fine_labels"]
    assert not no_download


def test_cifar_missing_files_try_download_then_explain(tmp_path, no_download):
    with pytest.raises(UsageError) as err:
        load_dataset("cifar10", root=tmp_path)
    msg = one_line(err)
    assert "--data-root" in msg and "cifar-10-batches-py" in msg and "data_batch_1" in msg
    assert "download failed" in msg and len(no_download) == 1
    with pytest.raises(UsageError) as err:
        load_dataset("cifar100", root=tmp_path, download=False)
    assert "--data-root" in one_line(err) and "cifar-100-python" in str(err.value)
    assert len(no_download) == 1  # download=False never tries


def test_cifar_download_only_when_missing_and_then_loads(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root, filename, md5):  # stands in for torchvision's fetch + extract
        calls.append((url, filename, md5))
        write_cifar10(root)

    monkeypatch.setattr(ds, "_download", fake_download)
    bundle = load_dataset("cifar10", root=tmp_path)
    assert len(bundle.test) == 6 and calls[0][1] == "cifar-10-python.tar.gz"
    load_dataset("cifar10", root=tmp_path)
    assert len(calls) == 1  # present: no second download


def test_cifar_partial_folder_is_reported(tmp_path, no_download):
    folder, _ = write_cifar10(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(UsageError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert "data_batch_4" in one_line(err)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing_key", "wrong_shape", "bad_label", "meta"])
def test_cifar_corrupt_files_are_one_line_usage_errors(tmp_path, no_download, damage):
    folder, written = write_cifar10(tmp_path)
    target = folder / "data_batch_3"
    entry = dict(written["data_batch_3"])
    if damage == "garbage":
        target.write_bytes(b"this is not a pickle")
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:500])
    elif damage == "missing_key":
        del entry[b"labels"]
        _dump(target, entry)
    elif damage == "wrong_shape":
        entry[b"data"] = entry[b"data"][:, :1000]
        _dump(target, entry)
    elif damage == "bad_label":
        entry[b"labels"] = [10] * len(entry[b"labels"])
        _dump(target, entry)
    else:
        target = folder / "batches.meta"
        _dump(target, {b"label_names": [b"a", b"b"]})
    with pytest.raises(UsageError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(target) in one_line(err)
    assert not no_download


class _Planted:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar_pickles_cannot_run_code(tmp_path, no_download):
    folder, written = write_cifar10(tmp_path)
    flag = tmp_path / "planted"
    entry = dict(written["test_batch"])
    entry[b"batch_label"] = _Planted(str(flag))
    _dump(folder / "test_batch", entry)
    with pytest.raises(UsageError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert "corrupt" in one_line(err)
    assert not flag.exists()


# ------------------------------------------------------------------------------------------
# class-per-folder trees
# ------------------------------------------------------------------------------------------
def test_imagefolder_train_val_layout(tmp_path):
    write_tree(tmp_path / "train", per_class=4)
    write_tree(tmp_path / "val", classes=("cat", "emu"), per_class=2, seed=1)
    bundle = load_dataset(f"imagefolder:{tmp_path}")
    assert bundle.class_names == ("cat", "dog", "emu") and bundle.num_classes == 3
    assert (len(bundle.train), len(bundle.test)) == (12, 4)
    assert bundle.image_size == 224 and bundle.mean == ds.IMAGENET_MEAN
    assert sorted(set(bundle.test.targets)) == [0, 2]  # val classes keep train's ids
    torch.manual_seed(0)
    x, y = bundle.train[5]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    arrays = bundle.eval_arrays()
    assert arrays.images.shape == (4, 224, 224, 3) and arrays.images.dtype == np.uint8
    for i in range(4):
        xt, yt = bundle.test[i]
        assert torch.equal(xt, torch.from_numpy(arrays.images[i]).permute(2, 0, 1).float() / 255)
        assert yt == arrays.labels[i]
    assert bundle.config["layout"] == "train/val" and "imagefolder" == bundle.config["name"]


def test_imagefolder_eval_geometry_is_resize_256_center_crop_224(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        _image(tmp_path / split / "a" / "x.png", rng, size=(300, 400))
    arrays = load_dataset(f"imagefolder:{tmp_path}").eval_arrays()
    from torchvision import transforms as T

    img = Image.open(tmp_path / "val" / "a" / "x.png").convert("RGB")
    expected = np.asarray(T.CenterCrop(224)(T.Resize(256)(img)))
    assert np.array_equal(arrays.images[0], expected)


def test_imagefolder_single_tree_is_split_per_class(tmp_path):
    write_tree(tmp_path, per_class=10)
    bundle = load_dataset(f"imagefolder:{tmp_path}", image_size=32)
    assert (len(bundle.train), len(bundle.test)) == (24, 6)
    train_paths = {p for p, _ in bundle.train.samples}
    test_paths = {p for p, _ in bundle.test.samples}
    assert not train_paths & test_paths
    assert sorted(bundle.test.targets) == [0, 0, 1, 1, 2, 2]
    again = load_dataset(f"imagefolder:{tmp_path}", image_size=32)
    assert again.test.samples == bundle.test.samples
    assert bundle.eval_arrays(limit=3).images.shape == (3, 32, 32, 3)
    assert bundle.train[0][0].shape == (3, 32, 32)
    assert bundle.config["layout"] == "single-tree"


def test_tiny_imagenet_layout(tmp_path):
    rng = np.random.default_rng(0)
    wnids = ["n01443537", "n01629819"]
    for w in wnids:
        for i in range(3):
            _image(tmp_path / "train" / w / "images" / f"{w}_{i}.JPEG", rng, size=(64, 64))
        (tmp_path / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i in range(4):
        _image(tmp_path / "val" / "images" / f"val_{i}.JPEG", rng, size=(64, 64))
        lines.append(f"val_{i}.JPEG\t{wnids[i % 2]}\t0\t0\t63\t63")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    bundle = load_dataset(f"imagefolder:{tmp_path}", image_size=64)
    assert bundle.class_names == tuple(wnids)
    assert (len(bundle.train), len(bundle.test)) == (6, 4)
    assert bundle.test.targets == [0, 1, 0, 1]
    arrays = bundle.eval_arrays()
    raw = np.asarray(Image.open(tmp_path / "val" / "images" / "val_1.JPEG").convert("RGB"))
    assert np.array_equal(arrays.images[1], raw)  # 64x64 files: the small eval geometry is the identity
    assert bundle.config["layout"] == "tiny-imagenet"
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(UsageError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert "val_annotations.txt line 1" in one_line(err)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(UsageError) as err:
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    assert "not a directory" in one_line(err)
    with pytest.raises(UsageError) as err:
        load_dataset(f"imagefolder:{tmp_path}")  # empty directory
    one_line(err)
    write_tree(tmp_path / "train", per_class=2)
    with pytest.raises(UsageError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert "no val/" in one_line(err)
    write_tree(tmp_path / "val", classes=("cat", "zebra"), per_class=1)
    with pytest.raises(UsageError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert "zebra" in one_line(err)
    with pytest.raises(UsageError) as err:
        load_dataset("imagefolder")
    assert "imagefolder:PATH" in one_line(err)


def test_imagefolder_empty_class_folder_is_explained(tmp_path):
    write_tree(tmp_path, per_class=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError) as err:
        load_dataset(f"imagefolder:{tmp_path}")
    assert "empty" in one_line(err)


def test_unreadable_image_names_the_file(tmp_path):
    write_tree(tmp_path / "train", per_class=2)
    write_tree(tmp_path / "val", per_class=1)
    bad = tmp_path / "val" / "dog" / "dog_0.png"
    bad.write_bytes(b"not a png")
    bundle = load_dataset(f"imagefolder:{tmp_path}")
    index = [p for p, _ in bundle.test.samples].index(str(bad))
    with pytest.raises(UsageError) as err:
        bundle.test[index]
    assert str(bad) in one_line(err)
    with pytest.raises(UsageError):
        bundle.eval_arrays()


# ------------------------------------------------------------------------------------------
# names, options, subsets
# ------------------------------------------------------------------------------------------
def test_listing_and_unknown_names():
    assert list_datasets() == ["shapes", "photos", "cifar10", "cifar100", "imagefolder"]
    assert list_datasets("segmentation") == ["shapes-seg"]
    assert set(describe_datasets()) == set(list_datasets())
    with pytest.raises(UsageError) as err:
        load_dataset("cifar")
    assert "did you mean cifar10, cifar100?" in one_line(err)
    with pytest.raises(UsageError) as err:
        load_dataset("shapez")
    assert "shapes" in one_line(err)
    with pytest.raises(UsageError) as err:
        load_dataset("shapes-seg")
    assert "load_segmentation_dataset" in one_line(err)
    with pytest.raises(UsageError) as err:
        load_segmentation_dataset("shapes")
    assert "load_dataset" in one_line(err)
    with pytest.raises(UsageError) as err:
        load_dataset("shapes", image_size=64)
    assert "image_size" in one_line(err)
    with pytest.raises(UsageError):
        list_datasets("detection")


def test_aliases_and_case(tmp_path, no_download):
    write_cifar10(tmp_path)
    assert load_dataset("CIFAR-10", root=tmp_path).name == "cifar10"


def test_eval_subsets_are_spread_and_checked():
    assert ds.spread_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert ds.spread_indices(4, 10).tolist() == [0, 1, 2, 3]
    bundle = load_dataset("shapes", train_size=10, test_size=20)
    with pytest.raises(UsageError) as err:
        bundle.eval_arrays(indices=[25])
    assert "0..19" in one_line(err)
    with pytest.raises(UsageError):
        bundle.eval_arrays(limit=0)
    with pytest.raises(UsageError):
        bundle.eval_arrays(limit=3, indices=[1])


def test_array_dataset_wraps_uint8_arrays():
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    data = ds.ArrayDataset(images, [0, 1, 2, 3])
    x, y = data[3]
    assert y == 3 and torch.equal(x, torch.from_numpy(images[3]).permute(2, 0, 1).float() / 255)
    with pytest.raises(UsageError):
        ds.ArrayDataset(images.astype(np.float32), [0, 1, 2, 3])
    with pytest.raises(UsageError):
        ds.ArrayDataset(images, [0, 1])


@pytest.mark.parametrize("size", [32, 64, 13])
def test_small_train_transform_equals_torchvision_draw_for_draw(size):
    """The hand-written training transform against torchvision's v2 RandomCrop(padding=S/8) +
    RandomHorizontalFlip + ToDtype(scale=True): the same images from the same global generator
    state, and the generator left in the same state (every later draw of the run unchanged)."""
    from torchvision.transforms import v2

    oracle = v2.Compose([v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip(),
                         v2.ToDtype(torch.float32, scale=True)])
    fast = ds.small_train_transform(size)
    images = torch.randint(0, 256, (300, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    outs = {}
    for name, fn in (("oracle", oracle), ("fast", fast)):
        torch.manual_seed(size)
        outs[name] = [fn(im) for im in images]
        outs[name + " next draw"] = torch.rand(4)
    assert torch.equal(outs["oracle next draw"], outs["fast next draw"])
    for a, b in zip(outs["oracle"], outs["fast"]):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    unchanged = sum(torch.equal(b, images[i].float().mul(1 / 255)) for i, b in enumerate(outs["fast"]))
    assert unchanged < 75  # chance 1 / (2 (2 pad + 1)^2) each (centred, not mirrored): 1/162 at 32 px


def test_default_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ds.DATA_ROOT_ENV, str(tmp_path))
    assert ds.default_data_root() == tmp_path
    monkeypatch.delenv(ds.DATA_ROOT_ENV)
    assert ds.default_data_root().name == "data"
