"""3D-ResNets-PyTorch files as they are released: read for scoring (2018 and 2020 layouts), the options the
weights cannot show, the family switch, and Kinetics class names; also as pretrained weights for fine-tuning."""

import json
import logging
import shutil

import pytest
import torch
import torch.nn.functional as F

from data.errors import InputError
from tests.support.commands import assert_one_line_error, fightwatch
from tests.support.models import release_like, save_hara
from tests.support.training import TINY as TINY_RUN
from tests.support.videos import write_noise_video
from trainer.checkpoint import read_checkpoint, save_checkpoint
from trainer.model import FAMILY_NORMALIZATION, ModelConfig, ResNet3D, stage_module
from trainer.releases import ReleaseOptions, load_any_model, load_pretrained
from trainer.serve.runtime.class_names import FIGHT_CLASSES, class_names, kinetics400
from trainer.serve.runtime.scoring import ScoreConfig, score_video

TINY = dict(sample_size=32, sample_duration=8)


def clip(seed=0, size=32, frames=8):
    return torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def same_function(a: ResNet3D, b: ResNet3D, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a(x), b(x))


# --- the model's options, against the original's definition -------------------------------------------------------

@pytest.mark.parametrize("t_size, t_stride, no_max_pool", [(7, 1, False), (3, 1, False), (7, 2, False), (7, 1, True)])
def test_conv1_stage_is_the_originals(t_size, t_stride, no_max_pool):
    """3D-ResNets-PyTorch (master) models/resnet.py: conv1 kernel (t, 7, 7), stride (t_stride, 2, 2), padding
    (t // 2, 3, 3), BN, ReLU, then MaxPool3d(3, 2, 1) unless no_max_pool."""
    model = release_like(conv1_t_size=t_size, conv1_t_stride=t_stride, no_max_pool=no_max_pool)
    x = clip()
    bn = model.bn1
    expected = F.relu(F.batch_norm(F.conv3d(x, model.conv1.weight, stride=(t_stride, 2, 2), padding=(t_size // 2, 3, 3)),
                                   bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    if not no_max_pool:
        expected = F.max_pool3d(expected, 3, 2, 1)
    with torch.no_grad():
        torch.testing.assert_close(stage_module(model, "conv1")(x), expected, rtol=0, atol=1e-5)


def test_the_family_sets_shortcut_and_normalisation_and_stated_values_win():
    def cfg(**kw):
        return ModelConfig(**{**dict(depth=18, shortcut=None, width=4, n_classes=2, pretrained=None, ft_begin="fc",
                                     mean=None, std=None, value_scale=None, **TINY), **kw})

    old, new = cfg(family="hara2018"), cfg(family="hara2020")
    assert (old.shortcut, old.normalization) == ("A", FAMILY_NORMALIZATION["hara2018"])
    assert (new.shortcut, new.normalization) == ("B", FAMILY_NORMALIZATION["hara2020"])
    assert new.value_scale == 1.0 and new.mean == (0.4345, 0.4051, 0.3775)
    assert cfg(family="hara2018", depth=50).shortcut == "B"  # the 2018 bottleneck releases
    stated = cfg(family="hara2020", shortcut="A", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), value_scale=1.0)
    assert stated.shortcut == "A" and stated.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="family 'hara2019'"):
        cfg(family="hara2019")


# --- scoring a release as it is -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["2018", "2020"])
def test_a_release_is_rebuilt_from_its_weights(tmp_path, layout):
    shortcut = "A" if layout == "2018" else "B"
    source = release_like(depth=18, shortcut=shortcut, width=8, conv1_t_size=3, **TINY)
    path = save_hara(tmp_path / "r.pth", source, arch="resnet-18", layout=layout)
    model, cfg, release = load_any_model(path, ReleaseOptions(**TINY))
    assert release and (cfg.depth, cfg.shortcut, cfg.width, cfg.n_classes, cfg.conv1_t_size) == (18, shortcut, 8, 400, 3)
    assert cfg.family == f"hara{layout}" and cfg.normalization == FAMILY_NORMALIZATION[f"hara{layout}"]
    assert same_function(model, source, clip())


def test_a_bare_state_dict_gets_the_family_of_its_shortcut_and_the_log_says_so(tmp_path, caplog):
    torch.save(release_like(shortcut="B").state_dict(), tmp_path / "bare.pth")
    with caplog.at_level(logging.INFO, logger="trainer.releases"):
        _, cfg, _ = load_any_model(tmp_path / "bare.pth", ReleaseOptions(**TINY))
    assert cfg.family == "hara2020"
    assert "assumed from shortcut B; --family to say otherwise" in caplog.text
    assert "mean [0.4345, 0.4051, 0.3775]" in caplog.text and "max pool on" in caplog.text
    _, cfg, _ = load_any_model(tmp_path / "bare.pth", ReleaseOptions(family="hara2018", **TINY))
    assert cfg.family == "hara2018" and cfg.value_scale == 255.0


def test_options_the_weights_cannot_show_are_stated(tmp_path):
    """no_max_pool and conv1_t_stride leave the weights as they are: the file loads either way, so the user states
    them (the log line beside the weights names what was assumed), and stated, the model is the original's."""
    source = release_like(no_max_pool=True, conv1_t_stride=2, **TINY)
    path = save_hara(tmp_path / "r.pth", source, layout="2020")
    stated, cfg, _ = load_any_model(path, ReleaseOptions(no_max_pool=True, conv1_t_stride=2, **TINY))
    assert cfg.no_max_pool and cfg.conv1_t_stride == 2 and same_function(stated, source, clip())
    assumed, _, _ = load_any_model(path, ReleaseOptions(**TINY))
    assert not same_function(assumed, source, clip())


def write_opts(folder, **kw):
    """The opts.json 3D-ResNets-PyTorch's main.py writes into its result_path, beside the save_N.pth files: vars(opt)
    of its opts.py (master), here of a run like release_like's defaults, `kw` replacing values."""
    opts = dict(root_path=None, video_path="kinetics/jpg", result_path=str(folder), dataset="kinetics", n_classes=400,
                n_pretrain_classes=0, pretrain_path=None, ft_begin_module="", sample_size=32, sample_duration=8,
                sample_t_stride=1, value_scale=1, mean=[0.4345, 0.4051, 0.3775], std=[0.2768, 0.2713, 0.2737],
                model="resnet", model_depth=10, conv1_t_size=7, conv1_t_stride=1, no_max_pool=False,
                resnet_shortcut="B", resnet_widen_factor=1.0, n_input_channels=3, arch="resnet-10", begin_epoch=1)
    (folder / "opts.json").write_text(json.dumps({**opts, **kw}))


def test_the_originals_opts_json_beside_the_file_states_what_the_weights_cannot_show(tmp_path, caplog):
    """3D-ResNets-PyTorch writes opts.json beside its checkpoints: no_max_pool, conv1_t_stride and the input size
    come from it; a flag may say the same, not otherwise; one of another run (other weights) is refused."""
    source = release_like(shortcut="B", no_max_pool=True, conv1_t_stride=2, **TINY)
    path = save_hara(tmp_path / "save_200.pth", source, arch="resnet-10", layout="2020")
    write_opts(tmp_path, no_max_pool=True, conv1_t_stride=2)
    with caplog.at_level(logging.INFO, logger="trainer.releases"):
        model, cfg, _ = load_any_model(path, ReleaseOptions())
    assert (cfg.no_max_pool, cfg.conv1_t_stride, cfg.sample_size, cfg.sample_duration) == (True, 2, 32, 8)
    assert isinstance(model.maxpool, torch.nn.Identity) and model.conv1.stride == (2, 2, 2)
    x = clip()
    with torch.no_grad():
        assert torch.equal(model.features(x), source.features(x))
    assert f"from {tmp_path / 'opts.json'}" in caplog.text
    same, _, _ = load_any_model(path, ReleaseOptions(no_max_pool=True, conv1_t_stride=2, sample_size=32))
    assert same_function(same, source, x)
    with pytest.raises(InputError, match=r"save_200.pth: --conv1_t_stride 1, but .*opts.json states conv1_t_stride 2"):
        load_any_model(path, ReleaseOptions(conv1_t_stride=1))
    write_opts(tmp_path, model_depth=18, arch="resnet-18")
    with pytest.raises(InputError, match=r"save_200.pth: .*opts.json states model_depth 18, but the weights show 10"):
        load_any_model(path, ReleaseOptions())
    write_opts(tmp_path, n_classes=700, pretrain_path="r3d10_K_200ep.pth", n_finetune_classes=400)  # a fine-tune
    assert load_any_model(path, ReleaseOptions()).config.n_classes == 400


def test_without_opts_json_the_log_names_the_flags_for_what_was_assumed(tmp_path, caplog):
    path = save_hara(tmp_path / "r3d10_K_200ep.pth", release_like(shortcut="B", **TINY), layout="2020")
    with caplog.at_level(logging.INFO, logger="trainer.releases"):
        _, cfg, _ = load_any_model(path, ReleaseOptions())
    assert (cfg.no_max_pool, cfg.conv1_t_stride, cfg.sample_size, cfg.sample_duration) == (False, 1, 112, 16)
    assert "conv1 temporal stride 1, max pool on" in caplog.text
    assert ("max pool on (assumed, as the weights cannot show them: for weights from a run with --no_max_pool or "
            "--conv1_t_stride 2, pass score the same flags, or keep that run's opts.json beside the file)"
            in caplog.text and "model.*" not in caplog.text)


@pytest.mark.parametrize("options, needle", [
    (ReleaseOptions(depth=34), "--model_depth 34, but the file holds a resnet-10"),
    (ReleaseOptions(shortcut="B"), "--resnet_shortcut B, but the file's weights use shortcut A"),
    (ReleaseOptions(family="hara2020"), "--family hara2020, but the file was saved by the 2018 (CVPR2018 branch) code"),
])
def test_a_flag_that_contradicts_the_file_is_an_error(tmp_path, options, needle):
    path = save_hara(tmp_path / "r.pth", release_like())
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_any_model(path, options)


def test_input_channels_other_than_rgb_are_named(tmp_path):
    source = release_like()
    state = source.state_dict()
    state["conv1.weight"] = state["conv1.weight"][:, :2].clone()  # a 2-channel (optical flow) model's conv1
    torch.save({"arch": "resnet-10", "state_dict": state}, tmp_path / "flow.pth")
    for load in (lambda p: load_any_model(p, ReleaseOptions(**TINY)),
                 lambda p: load_pretrained(ResNet3D(source_cfg()), p, source_cfg())):
        with pytest.raises(InputError, match=r"flow.pth: conv1 takes 2 input channels \(the original's "
                                             r"--n_input_channels; e.g. 2 for optical flow\)"):
            load(tmp_path / "flow.pth")


def source_cfg(**kw):
    """A tiny fine-tune's model config; shortcut and normalisation from the family unless `kw` states them."""
    return ModelConfig(**{**dict(depth=10, shortcut=None, width=4, n_classes=2, pretrained=None, ft_begin="layer4",
                                 mean=None, std=None, value_scale=None, **TINY), **kw})


def test_a_fightwatch_checkpoint_is_not_a_release(tmp_path):
    model = ResNet3D(source_cfg())
    save_checkpoint(tmp_path / "m.pth", model, source_cfg(), epoch=1)
    loaded = load_any_model(tmp_path / "m.pth", ReleaseOptions(depth=50))  # release flags do not apply
    assert not loaded.release and loaded.config == source_cfg()


# --- the same files as pretrained weights for a fine-tune ----------------------------------------------------------

def test_pretrained_conv1_kernel_is_named(tmp_path):
    path = save_hara(tmp_path / "r.pth", release_like(conv1_t_size=3))
    with pytest.raises(InputError, match=r"model.conv1_t_size \(the file's conv1 spans 3 frames: set "
                                         r"model.conv1_t_size=3\)"):
        load_pretrained(ResNet3D(source_cfg()), path, source_cfg())
    cfg = source_cfg(conv1_t_size=3)
    load_pretrained(ResNet3D(cfg), path, cfg)


def test_pretrained_family_must_match_the_file_and_the_normalisation_is_logged(tmp_path, caplog):
    path = save_hara(tmp_path / "r.pth", release_like(shortcut="B"), layout="2020")
    with pytest.raises(InputError, match="saved by 3D-ResNets-PyTorch's 2020 \\(master\\) code, model.family is "
                                         "hara2018: set model.family=hara2020"):
        load_pretrained(ResNet3D(source_cfg(shortcut="B")), path, source_cfg(shortcut="B"))
    cfg = source_cfg(family="hara2020")
    with caplog.at_level(logging.INFO, logger="trainer.releases"):
        load_pretrained(ResNet3D(cfg), path, cfg)
    assert cfg.shortcut == "B"  # the family's
    assert ("saved by the 2020 (master) code" in caplog.text
            and "input: pixels scaled to 0-1, mean [0.4345, 0.4051, 0.3775], std [0.2768, 0.2713, 0.2737]"
            in caplog.text)


# --- class names --------------------------------------------------------------------------------------------------

def test_class_names(tmp_path):
    names = kinetics400()
    assert len(names) == 400 == len(set(names)) and names[:2] == ("abseiling", "air drumming")
    assert names == tuple(sorted(names)) and names[-1] == "zumba"  # the models' output order: sorted names
    model = tmp_path / "m.pth"
    assert class_names(model, 400, True, None) == names and class_names(model, 2, False, None) == FIGHT_CLASSES
    with pytest.raises(InputError, match="m.pth: the model has 700 classes: name them with --class-names FILE"):
        class_names(model, 700, True, None)
    (tmp_path / "ucf.txt").write_text("ApplyEyeMakeup\nApplyLipstick\nArchery\n")
    assert class_names(model, 3, True, tmp_path / "ucf.txt") == ("ApplyEyeMakeup", "ApplyLipstick", "Archery")
    assert class_names(model, 3, False, tmp_path / "ucf.txt")[0] == "ApplyEyeMakeup"  # a fightwatch 3-class model
    with pytest.raises(InputError, match="ucf.txt: 3 class names for a model with 400 classes"):
        class_names(model, 400, True, tmp_path / "ucf.txt")
    with pytest.raises(InputError, match=r"m.pth: checkpoint has 3 classes, fightwatch scores 2 \(no fight, fight\)"):
        class_names(model, 3, False, None)
    (tmp_path / "gap.txt").write_text("a\n\nb\n")
    with pytest.raises(InputError, match="gap.txt:2: empty class name"):
        class_names(model, 3, True, tmp_path / "gap.txt")


def test_feature_mode_needs_no_class_names(tmp_path, capsys):
    """A release fightwatch cannot name the classes of (a Kinetics-700 one, like master's r3d18_K_200ep.pth):
    features need no labels, so --mode feature runs without --class-names; --mode score still asks for them."""
    from cluster.cli import main

    source = release_like(shortcut="B", n_classes=700, **TINY)
    save_hara(tmp_path / "r3d10_K_200ep.pth", source, layout="2020")
    write_noise_video(tmp_path / "v.mp4", 24)
    (tmp_path / "input").write_text("v.mp4\n")
    common = ["score", "--input", str(tmp_path / "input"), "--video_root", str(tmp_path), "--model",
              str(tmp_path / "r3d10_K_200ep.pth"), "--sample_size", "32", "--sample_duration", "8"]
    assert main([*common, "--output", str(tmp_path / "f.json"), "--mode", "feature"]) == 0, capsys.readouterr().err
    (entry,) = json.loads((tmp_path / "f.json").read_text())
    assert entry["clips"] and {len(c["features"]) for c in entry["clips"]} == {source.fc.in_features}
    capsys.readouterr()
    assert main([*common, "--output", str(tmp_path / "s.json"), "--mode", "score"]) == 2
    assert "the model has 700 classes: name them with --class-names FILE" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


# --- the seed's command -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory):
    """The layout of video-classification-3d-cnn-pytorch's README: ./input lists videos under ./videos, and the
    Kinetics release resnet-34-kinetics.pth (the real shape: ResNet-34, shortcut A, width 64, 400 classes, in the
    2018 layout) beside them."""
    folder = tmp_path_factory.mktemp("seed")
    (folder / "videos" / "sub").mkdir(parents=True)
    write_noise_video(folder / "videos" / "a.mp4", 40, size=(160, 120))
    write_noise_video(folder / "videos" / "sub" / "a.mp4", 20, size=(160, 120))
    (folder / "input").write_text("a.mp4\nsub/a.mp4\n")
    save_hara(folder / "resnet-34-kinetics.pth", release_like(depth=34, width=64, sample_size=112, sample_duration=16),
              arch="resnet-34")
    return folder


@pytest.mark.slow
def test_the_seeds_command_runs_as_written_with_a_kinetics_release(seed_folder):
    result = fightwatch("score", "--input", "./input", "--video_root", "./videos", "--output", "./output.json",
                        "--model", "./resnet-34-kinetics.pth", "--mode", "score", cwd=seed_folder)
    assert result.returncode == 0, result.stderr
    entries = json.loads((seed_folder / "output.json").read_text())
    assert [e["video"] for e in entries] == ["a.mp4", "sub/a.mp4"]
    names = set(kinetics400())
    for entry in entries:
        for segment in entry["clips"]:
            assert segment["label"] in names and len(segment["scores"]) == 400 and "fight_prob" not in segment
    assert [c["segment"] for c in entries[0]["clips"]] == [[1, 16], [17, 32], [25, 40]]
    assert "family hara2018: saved by the 2018 (CVPR2018 branch) code" in result.stderr


@pytest.mark.slow
def test_feature_mode_gives_512_d_features_and_alerts_need_a_fight_model(seed_folder):
    result = fightwatch("score", "--input", "./input", "--video_root", "./videos", "--output", "./features.json",
                        "--model", "./resnet-34-kinetics.pth", "--mode", "feature", cwd=seed_folder)
    assert result.returncode == 0, result.stderr
    entries = json.loads((seed_folder / "features.json").read_text())
    assert {len(c["features"]) for e in entries for c in e["clips"]} == {512}
    result = fightwatch("score", "--input", "./input", "--video_root", "./videos", "--output", "./o.json",
                        "--model", "./resnet-34-kinetics.pth", "--alerts", "a.jsonl", "--model_depth", "34",
                        cwd=seed_folder)
    assert_one_line_error(result, "--alerts: ", "resnet-34-kinetics.pth is not a fight model (400 classes: abseiling")
    result = fightwatch("score", "--input", "./input", "--video_root", "./videos", "--output", "./o.json",
                        "--model", "./resnet-34-kinetics.pth", "--model_depth", "18", cwd=seed_folder)
    assert_one_line_error(result, "--model_depth 18, but the file holds a resnet-34")


@pytest.mark.slow
def test_a_2020_release_fine_tunes_end_to_end(prepared, tmp_path):
    """model.pretrained with a 2020 file (shortcut B, conv1 over 3 frames): the family switch and conv1_t_size
    configure it; the trunk keeps the file's weights; the wrong family is a one-line error before training."""
    run_dir = tmp_path / "run"
    shutil.copytree(prepared, run_dir)
    source = release_like(shortcut="B", conv1_t_size=3)
    path = save_hara(tmp_path / "r3d10_K_200ep.pth", source, layout="2020")
    args = ["train", "--config", "configs/demo.yaml", f"run_dir={run_dir}", *TINY_RUN, f"model.pretrained={path}",
            "model.shortcut=null", "model.conv1_t_size=3", "model.ft_begin=layer4", "train.epochs=2"]
    assert_one_line_error(fightwatch(*args), "set model.family=hara2020")
    result = fightwatch(*args, "model.family=hara2020")
    assert result.returncode == 0, result.stderr[-3000:]
    state = read_checkpoint(run_dir / "model.pth")
    assert state["model_config"]["family"] == "hara2020" and state["model_config"]["shortcut"] == "B"
    assert tuple(state["model_config"]["mean"]) == FAMILY_NORMALIZATION["hara2020"].mean
    for name, tensor in source.state_dict().items():
        if name.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")) and "num_batches" not in name:
            assert torch.equal(state["state_dict"][name], tensor), name
    log = (run_dir / "fightwatch.log").read_text()
    assert "saved by the 2020 (master) code" in log and "mean [0.4345, 0.4051, 0.3775]" in log


@pytest.mark.slow
def test_the_original_flags_configure_what_the_file_cannot_show(tmp_path):
    source = release_like(shortcut="B", no_max_pool=True, conv1_t_stride=2)
    save_hara(tmp_path / "r.pth", source, layout="2020")
    write_noise_video(tmp_path / "v.mp4", 24)
    (tmp_path / "input").write_text("v.mp4\n")
    result = fightwatch("score", "--input", "input", "--video_root", ".", "--output", "f.json", "--model", "r.pth",
                        "--mode", "feature", "--precision", "fp32", "--no_max_pool", "--conv1_t_stride", "2",
                        "--sample_size", "32", "--sample_duration", "8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((tmp_path / "f.json").read_text())
    cfg = ModelConfig(depth=10, shortcut="B", width=4, n_classes=400, pretrained=None, ft_begin="fc", mean=None,
                      std=None, value_scale=None, family="hara2020", no_max_pool=True, conv1_t_stride=2, **TINY)
    expected = score_video(source, cfg, tmp_path / "v.mp4", ScoreConfig(16, 8), mode="feature")
    torch.testing.assert_close(torch.tensor([c["features"] for c in entry["clips"]]),
                               torch.tensor([c["features"] for c in expected["clips"]]), rtol=1e-4, atol=1e-5)


def test_a_fightwatch_model_fine_tunes_further_with_its_fc_and_its_stated_input(tmp_path):
    """model.pretrained = a fightwatch model (e.g. retraining on reviewed alerts): fc carries over when the
    classes match, and the input it was trained on must be the config's."""
    cfg = source_cfg()
    trained = ResNet3D(cfg)
    torch.nn.init.normal_(trained.fc.weight)
    save_checkpoint(tmp_path / "m.pth", trained, cfg, epoch=30)
    model = ResNet3D(cfg)
    load_pretrained(model, tmp_path / "m.pth", cfg)
    assert same_function(model.eval(), trained.eval(), clip())
    with pytest.raises(InputError, match=r"m.pth: the model was trained with model.value_scale=255.0, the config "
                                         r"states 1.0: set model.value_scale to match"):
        other = source_cfg(value_scale=1.0)
        load_pretrained(ResNet3D(other), tmp_path / "m.pth", other)
    three = source_cfg(n_classes=3)
    fresh = ResNet3D(three)
    before = fresh.fc.weight.clone()
    load_pretrained(fresh, tmp_path / "m.pth", three)
    assert torch.equal(fresh.fc.weight, before)  # other classes: fc stays fresh
