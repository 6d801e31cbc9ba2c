import io
import tarfile

import datasets
import numpy as np
import pytest
from PIL import Image

from ferlab.data import (COUNT_SIGNATURES, DataSourceError, ferplus_majority, infer_label_permutation,
                         load_fer2013, source_kind, to_arrays)
from ferlab.labels import EMOTIONS, emotion_index

ALPHABETICAL = sorted(EMOTIONS)  # the Kaggle folder order: angry disgust fear happy neutral sad surprise


def _gray(value):
    return Image.fromarray(np.full((48, 48), value, np.uint8))


def test_parquet_splits_columns_and_order(tiny_source):
    assert source_kind(str(tiny_source)) == "parquet"
    train = load_fer2013("train", tiny_source)
    assert {"image", "label", "ferplus_votes"} <= set(train.column_names)
    assert train.features["label"].names == list(EMOTIONS)
    assert len(train) == 210 and np.bincount(train["label"]).tolist() == [30] * 7
    valid, test, full = (load_fer2013(s, tiny_source) for s in ("valid", "test", "test_full"))
    assert len(full) == len(valid) + len(test)
    full_x, _ = to_arrays(full)
    assert np.array_equal(full_x[:len(valid)], to_arrays(valid)[0])
    assert np.array_equal(full_x[len(valid):], to_arrays(test)[0])


def test_ferlab_data_env_selects_default(tiny_source, monkeypatch):
    monkeypatch.setenv("FERLAB_DATA", str(tiny_source))
    assert len(load_fer2013("valid")) == 56


def test_imagefolder_maps_alphabetical_folders_by_name(tmp_path):
    for split in ("train", "test"):
        for name in ALPHABETICAL:
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for k in range(3 if split == "train" else 2):
                _gray(20 * emotion_index(name) + 10).save(folder / f"{k}.png")
    assert source_kind(str(tmp_path)) == "imagefolder"
    for split in ("test", "train", "valid"):
        ds = load_fer2013(split, tmp_path)
        images, labels = to_arrays(ds)
        # the pixel value encodes the true FER2013 label
        assert np.array_equal(images[:, 0, 0], labels * 20 + 10), split
    assert len(load_fer2013("train", tmp_path)) + len(load_fer2013("valid", tmp_path)) == 21


def _write_shard(path, labels, values):
    with tarfile.open(path, "w") as tar:
        for i, (label, value) in enumerate(zip(labels, values)):
            buf = io.BytesIO()
            Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="JPEG", quality=95)
            for ext, data in (("jpg", buf.getvalue()), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"s{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def webdataset_mirror(tmp_path_factory):
    """A local mirror of a webdataset Hub repo whose cls ids use the alphabetical order."""
    root = tmp_path_factory.mktemp("wds")
    to_raw = {EMOTIONS.index(n): i for i, n in enumerate(ALPHABETICAL)}
    fer = np.repeat(np.arange(7), COUNT_SIGNATURES["test_full"])
    (root / "test").mkdir()
    _write_shard(root / "test" / "000000.tar", [to_raw[y] for y in fer], [30 * y + 15 for y in fer])
    (root / "train").mkdir()
    small = np.repeat(np.arange(7), 10)
    _write_shard(root / "train" / "000000.tar", [to_raw[y] for y in small], [30 * y + 15 for y in small])
    return root


def test_hub_code_path_infers_label_order_from_counts(webdataset_mirror):
    assert source_kind(str(webdataset_mirror)) == "hub"
    test = load_fer2013("test", webdataset_mirror)
    images, labels = to_arrays(test, size=8)
    assert np.bincount(labels).tolist() == list(COUNT_SIGNATURES["test_full"])
    # decoded JPEG grey level tells the true class: the inferred permutation put every row right
    assert np.all(np.abs(images[:, 4, 4].astype(int) - (labels * 30 + 15)) <= 3)


def test_hub_refuses_when_no_permutation_fits(webdataset_mirror):
    with pytest.raises(DataSourceError, match="cannot infer the label order"):
        load_fer2013("train", webdataset_mirror)  # 10 per class matches no FER2013 signature


def test_infer_label_permutation_and_refusal():
    sig = COUNT_SIGNATURES["train"]
    raw_order = [sig[EMOTIONS.index(n)] for n in ALPHABETICAL]
    perm = infer_label_permutation(raw_order, "train")
    assert [EMOTIONS[i] for i in perm] == ALPHABETICAL
    with pytest.raises(DataSourceError):
        infer_label_permutation([100] * 7, "train")
    with pytest.raises(DataSourceError):
        infer_label_permutation(raw_order[:6], "train")


def test_unreachable_hub_and_unknown_sources(tmp_path):
    with pytest.raises(DataSourceError, match="FERLAB_DATA"):
        load_fer2013("test", "nobody-here/no-such-fer-dataset")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataSourceError, match="is a file"):
        load_fer2013("test", tmp_path / "notes.txt")
    with pytest.raises(DataSourceError, match="not a FER2013 source"):
        load_fer2013("test", tmp_path)
    with pytest.raises(DataSourceError, match="unknown data source"):
        load_fer2013("test", "./missing folder")
    with pytest.raises(ValueError, match="unknown split"):
        load_fer2013("PrivateTest")


def test_malformed_parquet_names_expected_columns(tmp_path):
    datasets.Dataset.from_dict({"pixels": [[1, 2]], "y": [0]}).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_dict({"pixels": [[1, 2]], "y": [0]}).to_parquet(str(tmp_path / "test.parquet"))
    with pytest.raises(DataSourceError, match="expected an image column"):
        load_fer2013("train", tmp_path)


def test_ferplus_majority_hand_computed():
    votes = [
        [0, 10, 0, 0, 0, 0, 0, 0, 0, 0],   # all happiness -> happy (3)
        [6, 0, 4, 0, 0, 0, 0, 0, 0, 0],    # neutral majority -> 6
        [0, 0, 0, 0, 5, 5, 0, 0, 0, 0],    # anger/disgust tie -> -1
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],   # not a face -> -1
        [0, 0, 0, 1, 0, 0, 2, 7, 0, 0],    # contempt ignored, fear 2 > sad 1 -> fear (2)
    ]
    assert ferplus_majority(votes).tolist() == [3, 6, -1, -1, 2]


def test_to_arrays_caches_and_matches(tiny_source):
    ds = load_fer2013("valid", tiny_source)
    a1, y1 = to_arrays(ds)
    a2, y2 = to_arrays(ds)
    assert a1.dtype == np.uint8 and a1.shape == (56, 48, 48)
    assert np.array_equal(a1, a2) and np.array_equal(y1, y2)


@pytest.mark.realdata
def test_real_fer2013_counts():
    for split in ("train", "valid", "test", "test_full"):
        labels = np.asarray(load_fer2013(split).with_format("numpy")["label"])
        assert np.bincount(labels, minlength=7).tolist() == list(COUNT_SIGNATURES[split]), split
