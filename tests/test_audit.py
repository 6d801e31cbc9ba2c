import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ferlab.audit as audit_mod
from ferlab.audit import audit, ranking_metrics, suspect_scores, tune_suspect_threshold, tune_suspect_weights
from ferlab.checkpoints import load_model, save_checkpoint
from ferlab.data import cache_dir
from ferlab.labels import EMOTIONS
from ferlab.ui.browser_tab import AuditStore, browse, detail_for, export_view, select_rows
from ferlab.ui.common import ModelRegistry
from tests.synthetic import make_arrays, write_parquet_source


@pytest.fixture(scope="module")
def flipped_source(tmp_path_factory):
    """Valid and test splits with 20% deliberately flipped labels (FER+ votes keep the truth)."""
    return write_parquet_source(tmp_path_factory.mktemp("flipped"), (40, 30, 30), seed=3,
                                flip={"valid": 0.2, "test": 0.2})


def test_suspect_ranking_puts_flipped_labels_first(trained_marks, flipped_source):
    valid = audit([trained_marks], "valid", str(flipped_source), progress=False)
    weights = tune_suspect_weights(valid)
    test = audit([trained_marks], "test", str(flipped_source), progress=False, weights=weights)
    flipped = np.load(flipped_source / "flipped_test.npy")
    wrong, evaluable = test.ferplus_wrong()
    assert np.array_equal(wrong, flipped) and evaluable.all()
    m = ranking_metrics(test.suspect_score, wrong, evaluable, ks=(20, 40))
    assert m["base_rate"] < 0.3
    assert m["precision@20"] >= 0.8 and m["auroc"] > 0.85
    with pytest.raises(ValueError, match="never on the test split"):
        tune_suspect_weights(test)


def test_ranking_metrics_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    wrong = np.array([True, False, True, False])
    m = ranking_metrics(scores, wrong, np.ones(4, bool), ks=(1, 2))
    assert m["precision@1"] == 1.0 and m["precision@2"] == 0.5 and m["recall@2"] == 0.5
    assert m["auroc"] == pytest.approx(0.75)  # pairs (pos, neg): 0.9>0.8, 0.9>0.1, 0.7<0.8, 0.7>0.1
    probs = {"a": np.array([[0.9, 0.1] + [0] * 5, [0.1, 0.9] + [0] * 5])}
    s = suspect_scores(np.array([0, 0]), probs, (1, 0, 0))
    assert s[1] > s[0] and s[0] == pytest.approx(0.1 * 1.001)  # 1 - 0.9, plus the tie-breaking sliver


def test_cache_is_reused_and_invalidated(trained_marks, flipped_source, tmp_path, monkeypatch):
    calls = []
    real = audit_mod.predict_arrays
    monkeypatch.setattr(audit_mod, "predict_arrays", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = audit([trained_marks], "test", str(flipped_source), progress=False)
    n = len(calls)
    second = audit([trained_marks], "test", str(flipped_source), progress=False)
    assert len(calls) == n, "second audit must come from the cache"
    name = trained_marks.name
    assert np.array_equal(first.probabilities[name], second.probabilities[name])
    # a changed checkpoint (new weights) is a new cache key
    changed = tmp_path / "marks"
    module = trained_marks.module
    with torch.no_grad():
        module.classifier[-1].bias.add_(0.5)
    try:
        save_checkpoint(module, trained_marks.card, changed)
        from ferlab import load_model
        audit([load_model(changed)], "test", str(flipped_source), progress=False)
    finally:
        with torch.no_grad():
            module.classifier[-1].bias.sub_(0.5)
    assert len(calls) == n + 1


def test_interrupted_cache_write_leaves_no_corrupt_file(trained_marks, flipped_source, monkeypatch):
    audit([trained_marks], "valid", str(flipped_source), use_cache=False, progress=False)  # decoded arrays cached
    folder = cache_dir() / "audit"
    for stale in folder.glob("*"):
        stale.unlink()  # force the next audit to write

    def explode(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(audit_mod.np, "savez", explode)
    with pytest.raises(KeyboardInterrupt):
        audit([trained_marks], "valid", str(flipped_source), use_cache=True, progress=False)
    monkeypatch.undo()
    after = [p.name for p in folder.glob("*")]
    assert not [n for n in after if n.endswith(".npz")], after  # no final file from the broken write


def test_cache_survives_kill_9(tmp_path):
    """A process killed with SIGKILL while writing cache files leaves only complete ones."""
    script = textwrap.dedent(f"""
        import numpy as np, sys
        sys.path.insert(0, {os.getcwd()!r})
        from pathlib import Path
        from ferlab.audit import _atomic_save
        big = np.random.rand(2_000_000, 7).astype(np.float32)
        i = 0
        while True:
            _atomic_save(Path({str(tmp_path)!r}) / f"c{{i % 3}}.npz", probabilities=big)
            i += 1
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(4):  # let it complete a few writes, then kill it mid-way through another
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finals = list(tmp_path.glob("c*.npz"))
    assert finals
    for path in finals:
        with np.load(path) as f:
            assert f["probabilities"].shape == (2_000_000, 7)


def test_to_frame_csv_round_trip(trained_marks, flipped_source, tmp_path):
    result = audit([trained_marks], "test", str(flipped_source), progress=False)
    frame = result.to_frame()
    assert len(frame) == len(result.labels) and {"true_label", "prediction", "suspect_score"} <= set(frame.columns)
    path = tmp_path / "a.csv"
    frame.to_csv(path, index=False)
    back = pd.read_csv(path, keep_default_na=False)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_cli_scores_split_and_folder(trained_marks, flipped_source, tmp_path):
    out = tmp_path / "audit.csv"
    audit_mod.main(["--checkpoint", str(trained_marks.path), "--split", "test", "--source", str(flipped_source),
                    "--out", str(out)])
    assert len(pd.read_csv(out)) == 210
    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2
    images, _ = make_arrays(1)
    for i, img in enumerate(images[:3]):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    (folder / "notes.txt").write_text("not an image")
    audit_mod.main(["--checkpoint", str(trained_marks.path), "--images", str(folder), "--out", str(out), "--crops"])
    frame = pd.read_csv(out)
    frame["error"] = frame["error"].fillna("")
    assert len(frame) == 4 and (frame["error"] != "").sum() == 1
    assert np.allclose(frame.loc[frame.error == "", [c for c in frame if c.startswith("p_")]].sum(1), 1, atol=1e-4)
    crops = frame[frame.error == ""].sort_values("file")
    direct = trained_marks.predict(images[:3], detect=False)
    assert np.allclose(crops[[f"p_{e}" for e in EMOTIONS]].to_numpy(), direct, atol=1e-5)
    # photos: one row per face, through the same pipeline as the app and predict
    assets = Path(__file__).resolve().parent.parent / "ferlab" / "assets"
    photos = tmp_path / "photos"
    photos.mkdir()
    astronaut = cv2.imread(str(assets / "astronaut.jpg"))
    cv2.imwrite(str(photos / "pair.png"), np.concatenate([astronaut[20:260, 110:340]] * 2, axis=1))
    cv2.imwrite(str(photos / "cat.jpg"), cv2.imread(str(assets / "chelsea.jpg")))
    audit_mod.main(["--checkpoint", str(trained_marks.path), "--images", str(photos), "--out", str(out)])
    frame = pd.read_csv(out)
    frame["error"] = frame["error"].fillna("")
    assert frame[frame.file == "pair.png"].face.tolist() == [0, 1]
    assert frame[frame.file == "cat.jpg"].error.str.startswith("no face found").all()
    pair = frame[frame.file == "pair.png"].iloc[0]
    expected = trained_marks.predict([str(photos / "pair.png")])[0]
    assert np.allclose(pair[[f"p_{e}" for e in EMOTIONS]].to_numpy(float), expected, atol=1e-5)


@pytest.fixture(scope="module")
def browser_store(trained_marks, flipped_source, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ck")
    save_checkpoint(trained_marks.module, trained_marks.card, folder / "marks")
    # the same net labelled as trained on FER+ majority labels: the browser must leave it out
    plus_card = {**trained_marks.card, "data": {**trained_marks.card.get("data", {}), "labels": "ferplus"}}
    save_checkpoint(trained_marks.module, plus_card, folder / "marks_plus")
    return AuditStore(ModelRegistry(folder), source=str(flipped_source))


def test_browser_leaves_out_ferplus_trained_models(browser_store):
    assert browser_store.registry.names() == ["marks", "marks_plus"]
    assert list(browser_store.get("test").result.probabilities) == ["marks"]


def test_first_scan_reports_progress_per_model_and_batch(browser_store, tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path))  # a cold scan: nothing cached yet
    store = AuditStore(browser_store.registry, source=browser_store.source)
    seen = []
    store.get("test", progress=lambda fraction, desc="": seen.append((fraction, desc)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("marks:" in d and "of" in d and "valid images" in d for _, d in seen)
    assert any("marks:" in d and "test images" in d for _, d in seen)
    seen.clear()
    store.get("test", progress=lambda fraction, desc="": seen.append((fraction, desc)))
    assert seen == []  # a filter change never re-scans


def test_shipped_probabilities_spare_the_first_scan_and_only_for_the_same_weights(trained_marks, flipped_source,
                                                                                  tmp_path, monkeypatch):
    """``ferlab-audit --ship`` stores a checkpoint's probabilities beside its weights; a cold scan of
    the same data reads them without running the model, and other weights never match them."""
    import ferlab.audit as audit_mod
    folder = save_checkpoint(trained_marks.module, trained_marks.card, tmp_path / "ck" / "marks")
    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path / "cache1"))
    audit_mod.main(["--checkpoint", str(folder), "--split", "test", "--source", str(flipped_source),
                    "--out", str(tmp_path / "a.csv"), "--ship"])
    shipped = list((folder / "audit").glob("*.npz"))
    assert len(shipped) == 1
    expected = audit(str(folder), "test", str(flipped_source), progress=False).probabilities["marks"]

    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path / "cache2"))  # cold: nothing in the user's cache
    monkeypatch.setattr(audit_mod, "predict_arrays", lambda *a, **k: pytest.fail("the model ran"))
    again = audit(str(folder), "test", str(flipped_source), progress=False).probabilities["marks"]
    assert np.array_equal(again, expected)

    other = tmp_path / "ck" / "other"
    shutil.copytree(folder, other)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in trained_marks.module.state_dict().items()}
    moved = load_model(other)
    moved.module.load_state_dict(state)
    save_checkpoint(moved.module, moved.card, other)
    with pytest.raises(pytest.fail.Exception, match="the model ran"):
        audit(str(other), "test", str(flipped_source), progress=False)


def test_no_data_is_said_once_in_full_with_the_command(browser_store, tmp_path):
    """Without data: the whole message, ``<emotion>`` shown as written, the command to run; the
    second click does not wait for the data source again."""
    from ferlab.data import DataSourceError
    calls = []
    store = AuditStore(browser_store.registry, source=str(tmp_path / "missing"))
    original = store._scan

    def counting(split, progress=None):
        calls.append(split)
        return original(split, progress)
    store._scan = counting
    for _ in range(2):
        items, status, confusion, shown, page = browse(store, "test", "marks", "all", "all", "all", 0.0, 1.0,
                                                       "index", 1, progress=lambda *a, **k: None)
        assert items == [] and shown == [] and confusion is None
        assert "FERLAB_DATA=/path/to/fer2013 make app" in status
        assert "`train/<emotion>/*.jpg`" in status  # in code: shown as written
        assert "<" not in status.split("*Details:*")[1]  # in text: escaped, never taken for a tag
    assert calls == ["test"]
    with pytest.raises(DataSourceError):
        store.get("valid")


def test_browser_filters(browser_store):
    items, status, confusion, shown, page = browse(browser_store, "test", "marks", "happy", "all", "misclassified",
                                                   0.0, 1.0, "confidence", 1, progress=lambda *a, **k: None)
    scan = browser_store.get("test")
    probs = scan.result.probabilities["marks"]
    for i in shown:
        assert scan.result.labels[i] == 3 and probs[i].argmax() != 3
    assert [probs[i].max() for i in shown] == sorted((probs[i].max() for i in shown), reverse=True)
    assert status.startswith(f"**{len(shown)}**") and confusion.shape == (7, 8)
    flagged = select_rows(scan, "marks", "all", "all", "suspected mislabeled", 0, 1, "suspect score")
    assert len(flagged) and (scan.suspect[flagged] >= scan.threshold).all()
    flipped = np.load(browser_store.source + "/flipped_test.npy")
    assert flipped[flagged].mean() > 0.7
    low = select_rows(scan, "marks", "all", "all", "all", 0.0, 0.3, "index")
    assert (probs[low].max(1) <= 0.3).all() and list(low) == sorted(low)


def test_browser_detail_and_export(browser_store):
    scan = browser_store.get("test")
    i = int(np.argmax(scan.suspect))
    big, table, pred_item, label_item, plot, text = detail_for(browser_store, browser_store.registry, "test",
                                                               "marks", i)
    assert big.shape == (192, 192, 3) and len(table) == 2 and plot is not None
    assert "FER+ annotators" in text and "Labelled" in text
    path = export_view(browser_store, "test", "marks", "all", "all", "suspected mislabeled", 0, 1, "suspect score")
    frame = pd.read_csv(path)
    assert len(frame) == len(select_rows(scan, "marks", "all", "all", "suspected mislabeled", 0, 1, "suspect score"))
    assert frame["flagged"].all()


def test_threshold_is_tuned_on_valid(trained_marks, flipped_source):
    valid = audit([trained_marks], "valid", str(flipped_source), progress=False)
    threshold = tune_suspect_threshold(valid)
    wrong, evaluable = valid.ferplus_wrong()
    above = valid.suspect_score >= threshold
    assert wrong[above].mean() >= 0.8 and above.sum() >= 20


@pytest.mark.realdata
@pytest.mark.slow
def test_mislabel_results_reproduce():
    """results/mislabel.md/.json comes out again from the shipped checkpoints (benchmarks/mislabel.py)."""
    import json
    from pathlib import Path
    from benchmarks.mislabel import table
    from ferlab import list_models
    from ferlab.zoo import audit_ensemble
    saved_path = Path(__file__).resolve().parent.parent / "results" / "mislabel.json"
    if not saved_path.exists():
        pytest.skip("no results/mislabel.json yet (run benchmarks/mislabel.py --out results/mislabel.md)")
    saved = json.loads(saved_path.read_text())
    audited = audit_ensemble(list_models(labels="fer2013"))  # what benchmarks/mislabel.py audits by default
    if sorted(saved["models"]) != sorted(audited):
        pytest.fail(f"results/mislabel.json was measured on {saved['models']}, checkpoints/ has {audited} "
                    "trained on FER2013 labels: re-run benchmarks/mislabel.py")
    valid = audit(saved["models"], "valid", progress=False)
    weights = tune_suspect_weights(valid)
    assert list(weights) == saved["weights"]
    _, rows = table(audit(saved["models"], "test", progress=False, weights=weights))
    for name in ("ferlab suspect score", "cleanlab get_label_quality_scores (default)"):
        for key, value in saved["rows"][name].items():
            assert rows[name][key] == pytest.approx(value, abs=0.0015), (name, key)
