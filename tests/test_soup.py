import csv
import json

import pytest
import torch

from ferlab import load_model
from ferlab.soup import SoupConfig, average_weights, make_soup
from ferlab.training import load_split, train
from ferlab.evaluation import predict_arrays
from tests.test_training import _config


def test_average_weights_is_the_mean_of_float_tensors_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 2.0]), "bn.num_batches_tracked": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "bn.num_batches_tracked": torch.tensor(9)}
    c = {"w": torch.tensor([2.0, 1.0]), "bn.num_batches_tracked": torch.tensor(1)}
    out = average_weights([a, b, c])
    assert torch.equal(out["w"], torch.tensor([2.0, 3.0])) and out["w"].dtype == torch.float32
    assert out["bn.num_batches_tracked"].item() == 5


@pytest.fixture(scope="module")
def ingredients(tiny_source, tmp_path_factory):
    """Three fine-tunes of one tiny run, as a recipe's stages make them."""
    root = tmp_path_factory.mktemp("soup")
    start = train(_config(epochs=3), source=str(tiny_source), out_dir=root / "start", progress=False)
    return [train(_config(init_from=str(start), seed=seed, lr=lr, epochs=2), source=str(tiny_source),
                  out_dir=root / f"ft{seed}", progress=False)
            for seed, lr in ((1, 1e-3), (2, 3e-3), (3, 1e-2))]


def test_greedy_soup_exports_the_average_of_the_runs_it_kept(ingredients, tiny_source, tmp_path):
    out = make_soup(SoupConfig(name="souped", soup=[str(p) for p in ingredients]), source=str(tiny_source),
                    out_dir=tmp_path / "soup", command="pytest")
    card = json.loads((out / "card.json").read_text())
    alone = {i["name"]: i["valid_accuracy"] for i in card["training"]["soup_of"]}
    chosen = card["training"]["chosen"]
    # the greedy soup starts from the best run alone, and never scores under it on PublicTest
    assert chosen[0] == max(alone, key=alone.get)
    assert card["metrics"]["valid"]["accuracy"] >= max(alone.values())
    # what was exported is the mean of the kept runs' weights, scored as the card says
    souped = load_model(out)
    kept = [load_model(p).module.state_dict() for p in ingredients if p.name in chosen]
    for k, v in souped.module.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, torch.stack([s[k] for s in kept]).mean(0), atol=1e-6), k
    images, labels = load_split("valid", str(tiny_source), 48)
    accuracy = (predict_arrays(souped.module, images, souped.card).argmax(1) == labels).mean()
    assert accuracy == pytest.approx(card["metrics"]["valid"]["accuracy"])
    with open(out / "soup.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["alone"] * 3 + ["add"] * 2
    assert [r["ingredients"].split(" + ")[-1] for r in rows if r["kept"] == "yes"] == chosen[1:]


def test_a_soup_stage_runs_in_a_recipe_and_ships(ingredients, tiny_source, tmp_path, monkeypatch):
    from ferlab.cli.ship import main as ship
    from ferlab.cli.train import main
    from ferlab.cards import training_summary
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "1_soup.yaml").write_text(f"name: souped\nsoup: [{ingredients[0]}, {ingredients[1]}]\n")
    monkeypatch.chdir(tmp_path)
    main(["--config", str(recipe / "1_soup.yaml"), "--data", str(tiny_source)])
    run = tmp_path / "runs" / "souped"
    summary = training_summary(load_model(run).card)
    assert summary.startswith("weight average (greedy soup) of ft1 (2 epochs after start)"), summary
    stale = tmp_path / "res" / "souped" / "log.csv"    # a previous model's log under the same name
    stale.parent.mkdir(parents=True)
    stale.write_text("epoch\n1\n")
    ship(["--run", str(run), "--data", str(tiny_source), "--checkpoints", str(tmp_path / "ck"),
          "--results", str(tmp_path / "res")])
    assert (tmp_path / "res" / "souped" / "soup.csv").exists() and not stale.exists()
    readme = (tmp_path / "ck" / "souped" / "README.md").read_text()
    assert "weight average (greedy soup)" in readme and "the runs averaged were selected on PublicTest" in readme
    assert "- soup ingredients (PublicTest alone; epochs and training time of each run): ft1 " in readme
    with pytest.raises(SystemExit):   # a seed means nothing to a soup alone
        main(["--config", str(recipe / "1_soup.yaml"), "--seed", "3"])
    # in a folder recipe, the seed is for its training stages: a soup stage goes on without it
    (recipe / "2_soup.yaml").write_text(f"name: souped2\nsoup: [{ingredients[1]}, {ingredients[2]}]\n")
    main(["--config", str(recipe), "--data", str(tiny_source), "--seed", "3"])
    assert load_model(tmp_path / "runs" / "souped2").card["training"]["chosen"]


def test_soup_refuses_runs_of_different_networks(ingredients, tiny_source, tmp_path):
    other = train(_config(model={"widths": [8, 8, 8, 8], "hidden": 8}, epochs=1), source=str(tiny_source),
                  out_dir=tmp_path / "other", progress=False)
    with pytest.raises(ValueError, match="differ in config"):
        make_soup(SoupConfig(name="bad", soup=[str(ingredients[0]), str(other)]), source=str(tiny_source),
                  out_dir=tmp_path / "bad")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsoup: [runs/a]\n")
    with pytest.raises(ValueError, match="at least two"):
        SoupConfig.from_file(bad)
