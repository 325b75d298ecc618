from pathlib import Path

import pytest

from cluster.config import Config, absolute_path_overrides, flatten, load_config
from data.errors import InputError

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_demo_config_loads_and_overrides_apply():
    cfg = load_config(DEMO, ["train.epochs=3", "model.pretrained=/w.pth", "run_dir=runs/x"])
    assert isinstance(cfg, Config)
    assert (cfg.train.epochs, cfg.model.pretrained, cfg.run_dir) == (3, "/w.pth", "runs/x")
    assert cfg.model.mean == (114.7748, 107.7354, 99.4750)
    assert flatten(cfg)["train.epochs"] == 3


def test_unknown_key_names_file_line_and_key(tmp_path):
    text = DEMO.read_text().replace("train:\n", "train:\n  lrr: 0.1\n")
    line = text.splitlines().index("  lrr: 0.1") + 1
    with pytest.raises(InputError, match=rf"c.yaml:{line}: unknown key 'train.lrr'"):
        load_config(write(tmp_path, text))


def test_missing_key_is_an_error(tmp_path):
    text = DEMO.read_text().replace("  momentum: 0.9\n", "")
    with pytest.raises(InputError, match=r"missing key 'train.momentum'"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", r"epochs must be > 0"),
    ("train.lr=-1", r"lr must be > 0"),
    ("train.epochs=three", r"'train.epochs' must be int, got 'three'"),
    ("model.ft_begin=layer9", r"'model.ft_begin' is 'layer9'; expected one of conv1 \| layer1"),
    ("model.depth=19", r"depth 19 is not one of"),
    ("train.nope=1", r"unknown key 'train.nope'"),
    ("train.epochs", r"expected key=value"),
    ("train.warmup_epochs=30", r"warmup_epochs must be >= 0 and below epochs \(30\)"),
    ("train.lr_schedule=plateau", r"warmup_epochs needs lr_schedule: cosine"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(InputError, match=message):
        load_config(DEMO, [override])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,"))
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_ints_are_accepted_where_floats_are_expected():
    assert load_config(DEMO, ["train.lr=1"]).train.lr == 1.0


def test_path_fields_are_made_absolute_by_their_type(tmp_path):
    cfg = load_config(ROOT / "configs" / "ava_fight.yaml", ["model.pretrained=/weights/r34.pth",
                                                            "data.video_root=videos", "dist.topology=null"])
    overrides = absolute_path_overrides(cfg, Path("/shared"))
    keys = {o.partition("=")[0] for o in overrides}
    # every path field that is set and relative; model.pretrained is absolute already, dist.topology unset
    assert keys == {"run_dir", "data.cache_dir", "data.video_root", "data.ava.train_csv", "data.ava.val_csv",
                    "data.ava.label_map", "data.ava.excluded", "watch.out_dir", "watch.store"}
    again = load_config(ROOT / "configs" / "ava_fight.yaml", ["model.pretrained=/weights/r34.pth",
                                                              "data.video_root=videos", *overrides])
    assert again.data.video_root == "/shared/videos" and again.run_dir == f"/shared/{cfg.run_dir}"
    assert all(p.startswith("/shared/") for p in again.data.ava.excluded)
    assert absolute_path_overrides(again, Path("/elsewhere")) == []


def test_kfold_split_is_a_data_key_that_reaches_the_params():
    assert load_config(DEMO).data.split is None and flatten(load_config(DEMO))["data.split"] is None
    params = flatten(load_config(DEMO, ["data.split={folds: 5, fold: 4}"]))
    assert (params["data.split.folds"], params["data.split.fold"]) == (5, 4)


@pytest.mark.parametrize("config, override, message", [
    ("demo.yaml", "data.split={folds: 1, fold: 0}", r"demo.yaml:\d+: 'data.split': k-fold needs folds >= 2"),
    ("demo.yaml", "data.split={folds: 3, fold: 3}", r"'data.split': k-fold needs folds >= 2 and 0 <= fold < folds"),
    ("demo.yaml", "data.split={folds: 3}", r"missing key 'data.split.fold'"),
    ("ava_fight.yaml", "data.split={folds: 3, fold: 0}", r"ava_fight.yaml:\d+: 'data': data.split \(k-fold\) applies "
                                                         r"to sources folders and synthetic"),
])
def test_bad_kfold_split_is_a_config_error(config, override, message):
    with pytest.raises(InputError, match=message):
        load_config(ROOT / "configs" / config, [override])
