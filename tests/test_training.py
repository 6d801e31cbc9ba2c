import csv
import json

import numpy as np
import pytest
import torch

from ferlab import load_model
from ferlab.audit import weights_hash
from ferlab.training import (ClassWeightedCrossEntropy, TrainConfig, balanced_class_weights, make_scheduler,
                             plateau_warmup, train)
from ferlab.cli.evaluate import evaluate

TINY = {"widths": [8, 16, 16, 16], "hidden": 32}


def _config(**kw):
    base = dict(name="tiny", architecture="cnn", model=TINY, augmentation="none", batch_size=16, epochs=6,
                lr=3e-3, schedule="none", loader_workers=0)
    base.update(kw)
    return TrainConfig(**base)


def _log(folder):
    with open(folder / "log.csv") as f:
        return list(csv.DictReader(f))


def test_short_run_learns_and_exports(tiny_source, tmp_path):
    out = train(_config(), source=str(tiny_source), out_dir=tmp_path / "run", command="pytest", progress=False)
    rows = _log(out)
    assert len(rows) == 6
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    model = load_model(out)
    card = model.card
    assert card["command"] == "pytest" and card["training"]["epochs_run"] == 6
    assert card["metrics"]["valid"]["accuracy"] > 0.5  # chance is 1/7
    assert card["mflops"] > 0 and card["data"]["train_size"] == 210
    assert (out / "curves.png").stat().st_size > 1000


def test_resume_continues_where_it_stopped(tiny_source, tmp_path):
    out = tmp_path / "run"
    train(_config(epochs=2, schedule="plateau", plateau_patience=1), source=str(tiny_source), out_dir=out,
          progress=False)
    first = _log(out)
    train(_config(epochs=4, schedule="plateau", plateau_patience=1), source=str(tiny_source), out_dir=out,
          resume=True, progress=False)
    rows = _log(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == first


def test_resume_state_keeps_the_optimizer_in_its_own_file(tiny_source, tmp_path):
    """state.pt and the optimizer's moments are separate files; resuming from them retraces an
    uninterrupted run, and a kill between the two writes leaves the older pair usable."""
    from ferlab.training import load_optimizer_state
    cfg = dict(optimizer="adamw", lr=3e-3, schedule="none", ema=0.9)
    whole = tmp_path / "whole"
    train(_config(epochs=3, **cfg), source=str(tiny_source), out_dir=whole, progress=False)
    out = tmp_path / "resumed"
    train(_config(epochs=2, **cfg), source=str(tiny_source), out_dir=out, progress=False)
    assert sorted(p.name for p in out.glob("optimizer-*.pt")) == ["optimizer-0002.pt"]
    state = torch.load(out / "state.pt", weights_only=True)
    assert "optimizer" not in state and state["optimizer_file"] == "optimizer-0002.pt"
    train(_config(epochs=3, **cfg), source=str(tiny_source), out_dir=out, resume=True, progress=False)
    assert [p.name for p in out.glob("optimizer-*.pt")] == ["optimizer-0003.pt"]  # the older one is gone
    a, b = (torch.load(d / "state.pt", weights_only=True) for d in (whole, out))
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key

    # a kill between the two writes: a newer optimizer file beside the older state.pt is not read
    moments = torch.load(out / "optimizer-0003.pt", weights_only=True)
    torch.save({"epoch": 3, "optimizer": moments["optimizer"]}, out / "optimizer-0004.pt")
    assert load_optimizer_state(b, out / "state.pt") is not None
    torch.save({"epoch": 1, "optimizer": moments["optimizer"]}, out / "optimizer-0003.pt")
    with pytest.raises(ValueError, match="from epoch 2"):
        load_optimizer_state(b, out / "state.pt")
    (out / "optimizer-0003.pt").unlink()
    with pytest.raises(FileNotFoundError, match="optimizer-0003.pt"):
        load_optimizer_state(b, out / "state.pt")


def test_resume_refuses_another_config(tiny_source, tmp_path, capsys):
    out = tmp_path / "run"
    train(_config(epochs=1, schedule="cosine"), source=str(tiny_source), out_dir=out, progress=False)
    for changed, key in ((dict(lr=1e-2), "lr"), (dict(epochs=3), "epochs"), (dict(model={**TINY, "hidden": 16}), "model")):
        with pytest.raises(ValueError, match=f"another config \\({key}: .* in the state"):
            train(_config(**{"epochs": 1, "schedule": "cosine", **changed}), source=str(tiny_source), out_dir=out,
                  resume=True, progress=False)
    assert len(_log(out)) == 1  # nothing was trained or written by the refused resumes
    # a state written before configs were recorded still resumes, with a note
    state = torch.load(out / "state.pt", weights_only=True)
    del state["config"]
    torch.save(state, out / "state.pt")
    train(_config(epochs=2, schedule="cosine"), source=str(tiny_source), out_dir=out, resume=True, progress=False)
    assert "cannot check" in capsys.readouterr().out and len(_log(out)) == 2
    assert torch.load(out / "state.pt", weights_only=True)["config"]["epochs"] == 2


def test_recipe_features_run(tiny_source, tmp_path):
    cfg = _config(epochs=2, optimizer="sgd", lr=0.01, weight_decay=1e-3, label_smoothing=0.1,
                  class_weights="balanced", schedule="cosine", warmup_epochs=1, mixup=0.2, cutmix=0.2, ema=0.9,
                  augmentation="aggressive", early_stopping=1, select_on="accuracy", half=True)
    out = train(cfg, source=str(tiny_source), out_dir=tmp_path / "run", progress=False)
    assert load_model(out).card["storage_dtype"] == "float16"


def test_balanced_weights_hand_computed():
    w = balanced_class_weights(np.array([0, 0, 0, 1]), num_classes=2)
    assert torch.allclose(w, torch.tensor([4 / (2 * 3), 4 / (2 * 1)]))


def test_class_weighted_cross_entropy_semantics():
    torch.manual_seed(0)
    logits, y = torch.randn(16, 7), torch.randint(0, 7, (16,))
    w = torch.rand(7) + 0.5
    # without smoothing it is PyTorch's weighted cross-entropy; without weights, PyTorch's smoothed one
    assert torch.allclose(ClassWeightedCrossEntropy(w)(logits, y), torch.nn.CrossEntropyLoss(weight=w)(logits, y))
    assert torch.allclose(ClassWeightedCrossEntropy(None, 0.1)(logits, y),
                          torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y))
    # soft (mixup) targets: a one-hot soft target is the hard target
    one_hot = torch.nn.functional.one_hot(y, 7).float()
    loss = ClassWeightedCrossEntropy(w, 0.1)
    assert torch.allclose(loss(logits, one_hot), loss(logits, y))
    # hand-computed: each sample's smoothed cross-entropy, weighted by its own class's weight only
    smoothed = one_hot * 0.9 + 0.1 / 7
    ce = -(smoothed * logits.log_softmax(1)).sum(1)
    assert torch.allclose(loss(logits, y), (w[y] * ce).sum() / w[y].sum())


def test_balanced_weights_with_smoothing_do_not_favour_the_rare_class():
    """FER2013-like imbalance: the best constant prediction of an untrained net must not be the
    rare class (what nn.CrossEntropyLoss(weight, label_smoothing) makes it)."""
    y = torch.tensor([0] * 60 + [1] * 38 + [2] * 2)
    w = balanced_class_weights(y.numpy(), num_classes=3)
    rare = torch.tensor([[0.0, 0.0, 1.0]]).expand(len(y), 3)
    uniform = torch.zeros(len(y), 3)
    assert ClassWeightedCrossEntropy(w, 0.1)(uniform, y) < ClassWeightedCrossEntropy(w, 0.1)(rare, y)
    torch_loss = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    assert torch_loss(rare, y) < torch_loss(uniform, y)  # the behaviour the class exists to avoid


def test_onecycle_and_cosine_schedules_reach_their_ends():
    for name in ("cosine", "onecycle"):
        cfg = _config(schedule=name, epochs=2, min_lr=1e-5)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        sched, per_batch = make_scheduler(opt, cfg, steps_per_epoch=5)
        assert per_batch
        for _ in range(10):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] < cfg.lr * 0.1


def test_plateau_warmup_ramps_linearly_then_leaves_the_rate_to_the_plateau_schedule():
    cfg = _config(schedule="plateau", lr=0.1, warmup_epochs=2, plateau_patience=0, plateau_factor=0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, per_batch = make_scheduler(opt, cfg, steps_per_epoch=5)
    assert not per_batch
    rates = []
    for epoch in range(4):
        for step in range(epoch * 5, epoch * 5 + 5):
            plateau_warmup(opt, cfg, step, steps_per_epoch=5)
            rates.append(opt.param_groups[0]["lr"])
        sched.step(1.0)  # a constant validation loss: the plateau schedule cuts after every epoch
    assert rates[:10] == pytest.approx([0.1 * (i + 1) / 10 for i in range(10)])
    # the cut at the end of the warm-up's second epoch stands: warm-up no longer touches the rate
    assert rates[10:15] == pytest.approx([0.01] * 5) and rates[15:] == pytest.approx([0.001] * 5)
    # without warm-up, or under another schedule, the rate is left alone
    for other in (_config(schedule="plateau", lr=0.1), _config(schedule="cosine", lr=0.1, warmup_epochs=2)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        plateau_warmup(opt, other, 0, steps_per_epoch=5)
        assert opt.param_groups[0]["lr"] == 0.5


def test_unknown_config_keys_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\narchitecture: cnn\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_file(path)


def test_recipes_parse_and_each_reproduces_a_shipped_model():
    """train/configs/ holds recipes only: every one parses, and each recipe (a file, or a folder of
    stages whose last stage ships) is named after a shipped checkpoint; runs start only from
    shipped checkpoints or from the runs of an earlier stage (of this recipe or another)."""
    from pathlib import Path
    from ferlab.cli.train import stages
    from ferlab.soup import SoupConfig, is_soup
    from ferlab.zoo import SHIPPED
    recipes = sorted(Path("train/configs").iterdir())
    configs = {r: [SoupConfig.from_file(f) if is_soup(f) else TrainConfig.from_file(f) for f in stages(r)]
               for r in recipes}
    stage_runs = {f"runs/{c.name}" for cfgs in configs.values() for c in cfgs[:-1]}
    for recipe, cfgs in configs.items():
        assert cfgs[-1].name == recipe.stem and recipe.stem in SHIPPED, recipe
        for i, cfg in enumerate(cfgs):
            if isinstance(cfg, SoupConfig):    # a soup averages runs of this recipe's earlier stages
                assert set(cfg.soup) <= {f"runs/{c.name}" for c in cfgs[:i]}, (recipe, cfg.name)
                continue
            for start in [cfg.init_from, *(cfg.distill_from or [])]:
                if start:
                    earlier = {f"runs/{c.name}" for c in cfgs[:i]}
                    assert start in SHIPPED or start in earlier or start in stage_runs, (recipe, cfg.name, start)
    assert {r.stem for r in recipes} == set(SHIPPED)


def test_a_folder_recipe_runs_its_stages_in_order_and_skips_finished_ones(tiny_source, tmp_path, monkeypatch):
    from ferlab.cli.train import main
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    common = "architecture: cnn\nmodel: {widths: [8, 8, 8, 8], hidden: 8}\naugmentation: none\nbatch_size: 32\n" \
             "epochs: 1\nschedule: none\nloader_workers: 0\n"
    (recipe / "1_first.yaml").write_text("name: first\n" + common)
    (recipe / "2_second.yaml").write_text("name: second\ninit_from: runs/first\n" + common)
    monkeypatch.chdir(tmp_path)
    main(["--config", str(recipe), "--data", str(tiny_source), "--no-progress"])
    second = load_model(tmp_path / "runs" / "second")
    assert second.card["training"]["initialized_from"]["name"] == "first"
    written = (tmp_path / "runs" / "first" / "model.safetensors").stat().st_mtime_ns
    main(["--config", str(recipe), "--data", str(tiny_source), "--no-progress", "--resume"])
    assert (tmp_path / "runs" / "first" / "model.safetensors").stat().st_mtime_ns == written
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "missing.yaml")])


def test_evaluate_cli_writes_metrics_and_card(tiny_source, tmp_path):
    out = train(_config(epochs=2), source=str(tiny_source), out_dir=tmp_path / "run", progress=False)
    m = evaluate(str(out), "test", tta=True, source=str(tiny_source), out=tmp_path / "res", update=True)
    assert (tmp_path / "res" / "test_tta.json").exists() and (tmp_path / "res" / "test_tta_confusion.png").exists()
    assert json.loads((out / "card.json").read_text())["metrics"]["test_tta"]["accuracy"] == m["accuracy"]
    assert sum(map(sum, m["confusion_matrix"])) == 56


def test_ship_copies_evaluates_and_documents(tiny_source, tmp_path):
    from ferlab.cli.ship import main as ship
    run = train(_config(epochs=2), source=str(tiny_source), out_dir=tmp_path / "run", progress=False)
    dest = ship(["--run", str(run), "--name", "shipped", "--note", "stopped early", "--data", str(tiny_source),
                 "--checkpoints", str(tmp_path / "ck"), "--results", str(tmp_path / "res")])
    card = load_model(dest).card
    assert card["notes"] == "stopped early"
    assert {"valid", "valid_tta", "test", "test_tta", "test_full", "test_full_tta"} <= set(card["metrics"])
    assert {"valid_ferplus", "test_ferplus", "test_ferplus_tta"} <= set(card["metrics"])  # the source has votes
    assert card["metrics"]["test_full"]["n"] == 112
    for f in ("log.csv", "curves.png", "test_confusion.png", "test_report.txt", "test_full_tta.json"):
        assert (tmp_path / "res" / "shipped" / f).exists(), f
    readme = (dest / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name:") and "# shipped" in readme and "| test_full |" in readme and "stopped early" in readme


def test_ferplus_labels_training_and_evaluation(tmp_path):
    from ferlab.data import DataSourceError
    from tests.synthetic import write_parquet_source
    src = write_parquet_source(tmp_path / "src", (20, 6, 6), flip={"train": 0.3, "valid": 0.3, "test": 0.3})
    out = train(_config(epochs=2, labels="ferplus"), source=str(src), out_dir=tmp_path / "run", progress=False)
    assert load_model(out).card["data"]["labels"] == "ferplus"
    flipped_test = np.load(src / "flipped_test.npy")
    fer = evaluate(str(out), "test", tta=False, source=str(src), out=tmp_path / "r", labels_kind="fer2013")
    plus = evaluate(str(out), "test", tta=False, source=str(src), out=tmp_path / "r", update=True,
                    labels_kind="ferplus")
    assert fer["n"] == plus["n"] == 42 and flipped_test.any()
    # the FER+ labels here are the true classes, so the confusion rows differ from the flipped ones
    assert fer["confusion_matrix"] != plus["confusion_matrix"]
    assert load_model(out).card["metrics"]["test"] == plus  # its own labels: no suffix
    fer_again = evaluate(str(out), "test", tta=False, source=str(src), out=tmp_path / "r", update=True,
                         labels_kind="fer2013")
    assert load_model(out).card["metrics"]["test_fer2013"] == fer_again == fer
    bare = write_parquet_source(tmp_path / "bare", (5, 2, 2), with_votes=False)
    with pytest.raises(DataSourceError, match="no FER\\+ votes"):
        train(_config(epochs=1, labels="ferplus"), source=str(bare), out_dir=tmp_path / "run2", progress=False)


def test_ship_scores_other_labels_only_when_the_source_has_them(tmp_path):
    from ferlab import list_models
    from tests.synthetic import write_parquet_source
    from ferlab.cli.ship import main as ship
    bare = write_parquet_source(tmp_path / "bare", (6, 3, 3), with_votes=False)
    run = train(_config(epochs=1), source=str(bare), out_dir=tmp_path / "run", progress=False)
    dest = ship(["--run", str(run), "--name", "novotes", "--data", str(bare),
                 "--checkpoints", str(tmp_path / "ck"), "--results", str(tmp_path / "res")])
    metrics = load_model(dest).card["metrics"]
    assert "test" in metrics and not any("ferplus" in k for k in metrics)
    voted = write_parquet_source(tmp_path / "voted", (6, 3, 3))
    run = train(_config(epochs=1, labels="ferplus"), source=str(voted), out_dir=tmp_path / "run2", progress=False)
    ship(["--run", str(run), "--name", "plus", "--data", str(voted),
          "--checkpoints", str(tmp_path / "ck"), "--results", str(tmp_path / "res")])
    assert list_models(tmp_path / "ck", labels="ferplus") == ["plus"]
    assert list_models(tmp_path / "ck", labels="fer2013") == ["novotes"]
    assert list_models(tmp_path / "ck") == ["novotes", "plus"]


def _params(state):
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def test_swa_averages_epoch_end_weights_and_survives_resume(tiny_source, tmp_path):
    out = tmp_path / "run"
    ends = []
    for epochs in (1, 2, 3):  # one epoch per call: resume must carry the running average on
        train(_config(epochs=epochs, swa_start=1), source=str(tiny_source), out_dir=out, resume=True,
              progress=False)
        ends.append(_params(torch.load(out / "state.pt", weights_only=True)["model"]))
    state = torch.load(out / "state.pt", weights_only=True)
    average = {k.removeprefix("module."): v for k, v in state["swa"].items() if k.startswith("module.")}
    assert int(state["swa"]["n_averaged"]) == 3
    for name, values in ends[0].items():
        expected = (values + ends[1][name] + ends[2][name]) / 3
        torch.testing.assert_close(average[name], expected)
    first = next(iter(ends[0]))
    assert not torch.equal(ends[0][first], ends[2][first])  # the weights moved, so the average is not trivial


def test_init_from_starts_at_the_checkpoint_and_refuses_a_different_network(tiny_source, tmp_path):
    start = train(_config(epochs=2), source=str(tiny_source), out_dir=tmp_path / "start", progress=False)
    # lr 0: the weights cannot move, so the export must be the starting checkpoint's weights
    out = train(_config(epochs=1, lr=0.0, init_from=str(start)), source=str(tiny_source),
                out_dir=tmp_path / "tuned", progress=False)
    before, after = load_model(start).module.state_dict(), load_model(out).module.state_dict()
    for name, values in _params(before).items():
        torch.testing.assert_close(after[name], values)
    started = load_model(out).card["training"]["initialized_from"]
    assert started["epochs_run"] == 2 and started["weights_hash"] == weights_hash(load_model(start))
    assert json.loads((out / "initialized_from.json").read_text()) == started
    # the folder init_from names now holds other weights (a rename): the resume is refused
    other = train(_config(epochs=1, seed=5), source=str(tiny_source), out_dir=tmp_path / "other", progress=False)
    import shutil
    shutil.copy(other / "model.safetensors", start / "model.safetensors")
    with pytest.raises(ValueError, match="started from .* now holds"):
        train(_config(epochs=2, lr=0.0, init_from=str(start)), source=str(tiny_source), out_dir=out,
              resume=True, progress=False)
    assert len(_log(out)) == 1
    # a run begun before the record existed resumes and gets it
    (out / "initialized_from.json").unlink()
    train(_config(epochs=2, lr=0.0, init_from=str(start)), source=str(tiny_source), out_dir=out, resume=True,
          progress=False)
    assert len(_log(out)) == 2
    assert json.loads((out / "initialized_from.json").read_text())["weights_hash"] == weights_hash(load_model(other))
    wider = {**TINY, "hidden": 64}
    with pytest.raises(ValueError, match="init_from"):
        train(_config(epochs=1, model=wider, init_from=str(start)), source=str(tiny_source),
              out_dir=tmp_path / "wrong", progress=False)
    with pytest.raises(ValueError, match="ema and swa_start"):
        train(_config(epochs=1, ema=0.9, swa_start=1), source=str(tiny_source), out_dir=tmp_path / "both",
              progress=False)


def test_distillation_loss_is_zero_at_the_teacher_and_matches_a_hand_computation():
    from ferlab.training import distillation_loss
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert distillation_loss(torch.log(teacher), teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.5, 0.2]])
    t = 3.0
    p = teacher ** (1 / t) / (teacher ** (1 / t)).sum(1, keepdim=True)  # softmax(log p / T)
    q = torch.softmax(logits / t, 1)
    expected = (p * (p / q).log()).sum(1).mean() * t * t
    assert distillation_loss(logits, teacher, t).item() == pytest.approx(expected.item(), rel=1e-5)


def _shifted_teacher(start, folder):
    """A copy of ``start`` whose output classes are rotated by one: it says class c+1 for class c."""
    from ferlab.checkpoints import save_checkpoint
    model = load_model(start)
    last = model.module.classifier[-1]
    with torch.no_grad():
        last.weight.copy_(last.weight.roll(1, dims=0))
        last.bias.copy_(last.bias.roll(1, dims=0))
    return save_checkpoint(model.module, model.card, folder)


def test_distillation_follows_the_teachers_soft_labels(tiny_source, tmp_path):
    start = train(_config(epochs=6), source=str(tiny_source), out_dir=tmp_path / "start", progress=False)
    teacher = _shifted_teacher(start, tmp_path / "shifted")
    from ferlab.training import load_split
    from ferlab.evaluation import predict_arrays
    valid_x, valid_y = load_split("valid", str(tiny_source), 48)

    def student(alpha, out):
        # no flip TTA: the generated classes are marks at mirrored places, so a flip changes the class
        run = train(_config(epochs=6, distill_from=[str(teacher)], distill_alpha=alpha, distill_temperature=1.0,
                            distill_tta=False),
                    source=str(tiny_source), out_dir=tmp_path / out, progress=False)
        model = load_model(run)
        # the last epoch's weights: the exported epoch is chosen on the true labels, which a
        # student of the rotated teacher is meant to get wrong
        model.module.load_state_dict(torch.load(run / "state.pt", weights_only=True)["model"])
        return model, predict_arrays(model.module, valid_x, model.card).argmax(1)

    # all weight on the teacher: the student learns the rotated classes, so the targets really are
    # the teacher's, row for row (a shuffled pairing of images and soft labels would not learn this)
    follower, predicted = student(1.0, "follower")
    assert (predicted == (valid_y + 1) % 7).mean() > 0.8
    record = follower.card["training"]["distilled_from"]
    assert record == [{"name": "shifted", "weights_hash": weights_hash(load_model(teacher)), "tta": False,
                       "online": False}]
    # no weight on the teacher: the labels win
    _, predicted = student(0.0, "labels")
    assert (predicted == valid_y).mean() > 0.8


def test_online_distillation_targets_the_view_the_student_sees(tiny_source, tmp_path):
    """A mirror swaps the generated classes in pairs (their marks sit at mirrored places: 0-1, 2-3,
    4-5), so under flip augmentation only targets computed on the flipped view teach the right
    class: offline targets, the clean image's, teach both classes of a pair for the same mark."""
    teacher = train(_config(epochs=8), source=str(tiny_source), out_dir=tmp_path / "teacher", progress=False)
    from ferlab.training import load_split
    from ferlab.evaluation import predict_arrays
    valid_x, valid_y = load_split("valid", str(tiny_source), 48)
    paired = valid_y < 6

    def student_confidence(online):
        """Mean probability of the true class on the mirror-paired classes (offline: about 1/2)."""
        run = train(_config(epochs=8, augmentation="basic", distill_from=[str(teacher)], distill_alpha=1.0,
                            distill_temperature=1.0, distill_tta=False, distill_online=online),
                    source=str(tiny_source), out_dir=tmp_path / f"online_{online}", progress=False)
        model = load_model(run)
        assert model.card["training"]["distilled_from"][0]["online"] is online
        model.module.load_state_dict(torch.load(run / "state.pt", weights_only=True)["model"])
        probs = predict_arrays(model.module, valid_x, model.card)
        return probs[paired, valid_y[paired]].mean()

    online, offline = student_confidence(online=True), student_confidence(online=False)
    print(f"true-class probability: online {online:.3f}, offline {offline:.3f}")
    assert online > 0.7 and offline < 0.55
    with pytest.raises(ValueError, match="distill_from"):
        _config(distill_online=True)


def test_distillation_resume_reuses_its_targets_and_refuses_other_teachers(tiny_source, tmp_path):
    a = train(_config(epochs=1), source=str(tiny_source), out_dir=tmp_path / "a", progress=False)
    b = train(_config(epochs=1, seed=5), source=str(tiny_source), out_dir=tmp_path / "b", progress=False)
    out = tmp_path / "student"
    train(_config(epochs=1, distill_from=[str(a)]), source=str(tiny_source), out_dir=out, progress=False)
    cached = np.load(out / "teacher_probs.npy")
    assert cached.shape == (210, 7) and np.allclose(cached.sum(1), 1, atol=1e-5)
    written = (out / "teacher_probs.npy").stat().st_mtime_ns
    train(_config(epochs=2, distill_from=[str(a)]), source=str(tiny_source), out_dir=out, resume=True, progress=False)
    assert len(_log(out)) == 2 and (out / "teacher_probs.npy").stat().st_mtime_ns == written
    with pytest.raises(ValueError, match="start a new run folder"):
        train(_config(epochs=3, distill_from=[str(b)]), source=str(tiny_source), out_dir=out, resume=True,
              progress=False)
    # the same teacher folder with other weights: the config is unchanged, the weights hash is not
    import shutil
    shutil.copy(b / "model.safetensors", a / "model.safetensors")
    with pytest.raises(ValueError, match="start a new run folder") as refused:
        train(_config(epochs=3, distill_from=[str(a)]), source=str(tiny_source), out_dir=out, resume=True,
              progress=False)
    assert "another config" not in str(refused.value)
    for bad in (dict(distill_from="cnn"), dict(distill_from=["cnn"], mixup=0.2), dict(distill_from=["cnn"], distill_alpha=2)):
        with pytest.raises(ValueError, match="distill"):
            _config(**bad)


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_int8_export_card_metrics_are_the_stored_weights(tiny_source, tmp_path, rounding):
    from ferlab.evaluation import predict_arrays
    from ferlab.quantization import calibration_images
    from ferlab.training import load_split
    out = train(_config(epochs=2, storage="int8", int8_rounding=rounding), source=str(tiny_source),
                out_dir=tmp_path / "run", progress=False)
    model = load_model(out)
    assert model.card["storage_dtype"] == "int8"
    x, y = load_split("valid", str(tiny_source), 48)
    probs = predict_arrays(model.module, x, model.card)
    assert model.card["metrics"]["valid"]["accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()))
    from safetensors.torch import load_file
    from ferlab.checkpoints import decode_weights, stored
    best = load_file(str(out / "best" / "model.safetensors"))  # the selected epoch, float32
    nearest = stored(best, "int8")
    if rounding == "gptq":  # calibrated on training images, the codes differ from nearest rounding
        from ferlab.quantization import gptq_int8
        float32_net = load_model(out / "best", device="cpu").module
        train_x, _ = load_split("train", str(tiny_source), 48)
        expected = decode_weights(gptq_int8(float32_net, calibration_images(train_x), model.card))
        assert any(not torch.equal(expected[k], nearest[k]) for k in nearest)
    else:
        expected = nearest
    for name, w in model.module.state_dict().items():
        assert torch.equal(w, expected[name]), name
    # what int8 costs, measured against the float32 weights that do not ship
    check = model.card["storage_check"]
    assert check["rounding"] == rounding and ("calibration" in check) == (rounding == "gptq")
    float32 = load_model(out / "best")
    reference = predict_arrays(float32.module, x, float32.card)
    assert check["storage"] == "int8" and check["accuracy_stored"] == model.card["metrics"]["valid"]["accuracy"]
    assert check["accuracy_float32"] == pytest.approx(float((reference.argmax(1) == y).mean()))
    assert check["max_probability_change"] == pytest.approx(float(np.abs(probs - reference).max()), abs=1e-6)
    assert check["answers_changed"] == int((probs.argmax(1) != reference.argmax(1)).sum())
    assert check["max_probability_change"] > 0
    # benchmarks/storage.py scores it as shipped, beside that export-time float32 accuracy
    from benchmarks.storage import shipped_quantized_rows
    shipped, float32_row = shipped_quantized_rows(str(out), model, {"PublicTest": (x, y)})
    assert shipped.startswith(f"| {out} | int8{' gptq' if rounding == 'gptq' else ''} (shipped) |")
    assert f"| {100 * check['accuracy_stored']:.2f}% |" in shipped
    assert f"| {100 * check['accuracy_float32']:.2f}% |" in float32_row
    with pytest.raises(ValueError, match="storage"):
        _config(half=True, storage="int8")
    with pytest.raises(ValueError, match="int8_rounding"):
        _config(storage="float16", int8_rounding="gptq")


def test_ensemble_check_chooses_from_pool_and_candidates(tiny_source, tmp_path, capsys):
    import shutil
    from ferlab.evaluation import predict_arrays
    from ferlab.training import load_split
    from ferlab.cli.ensemble import main as ensemble_check
    runs = {n: train(_config(epochs=e, seed=s), source=str(tiny_source), out_dir=tmp_path / n, progress=False)
            for n, e, s in (("a", 1, 0), ("b", 3, 1), ("c", 3, 2))}
    ck = tmp_path / "ck"
    for n in ("a", "b"):
        shutil.copytree(runs[n], ck / n)
    choices = ensemble_check(["--candidate", str(runs["c"]), "--checkpoints", str(ck), "--data", str(tiny_source)])
    assert choices["pool"][0] == ("a", "b")  # the only subset of two
    chosen, acc = choices["with_candidates"]
    assert set(chosen) <= {"a", "b", "c"} and len(chosen) >= 2
    assert acc >= choices["pool"][1]  # the larger search contains the smaller one
    x, y = load_split("valid", str(tiny_source), 48)
    models = [load_model(runs[n]) for n in chosen]
    probs = [predict_arrays(m.module, x, m.card, tta=True) for m in models]
    assert acc == pytest.approx(100 * float((np.mean(probs, axis=0).argmax(1) == y).mean()))
    out = capsys.readouterr().out
    assert "c: PublicTest" in out and "pool + candidates (3)" in out
    assert "candidates chosen: " + ("c" if "c" in chosen else "none") in out


def test_gpu_recipes_parse_and_are_not_shipped():
    """train/gpu/ holds schedules for hardware ferlab was not trained on: they parse, ask for mixed
    precision, and are named so that nobody mistakes them for a shipped model."""
    from pathlib import Path
    from ferlab.zoo import SHIPPED
    recipes = sorted(Path("train/gpu").glob("*.yaml"))
    assert recipes
    for path in recipes:
        cfg = TrainConfig.from_file(path)
        assert cfg.name == path.stem and cfg.name not in SHIPPED
        assert cfg.precision == "auto" and "NOT TRAINED HERE" in path.read_text()


def test_precision_resolves_per_device():
    from ferlab.training import autocast_dtype
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="precision 'fp8'"):
        _config(precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_mixed_precision_run_learns(tiny_source, tmp_path, precision):
    out = train(_config(precision=precision), source=str(tiny_source), out_dir=tmp_path / "gpu", progress=False)
    rows = _log(out)
    assert float(rows[-1]["train_loss"]) < 0.7 * float(rows[0]["train_loss"])
    assert "CUDA" in load_model(out).card["training"]["hardware"]


def test_bf16_autocast_trains_on_cpu_too(tiny_source, tmp_path):
    """The mixed-precision path (autocast, scaler, state) runs here, in bf16 on the CPU."""
    out = train(_config(precision="bf16", epochs=2), source=str(tiny_source), out_dir=tmp_path / "bf16",
                progress=False)
    assert len(_log(out)) == 2 and (out / "model.safetensors").exists()
