from pathlib import Path

import pytest
import yaml

from assynch.config import AssynchConfig, ConfigError, load_config
from assynch.samples.offsets import (
    class_to_offset_sec,
    nearest_offset_class,
    offset_grid_sec,
    offset_sec_to_class,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_follow_synchformer_time_base() -> None:
    config = AssynchConfig()
    assert config.time.fps == 25.0
    assert config.time.sample_rate == 16000
    assert config.time.window_frames == 120
    assert config.time.window_sec == pytest.approx(4.8)
    assert config.time.segment_sec == pytest.approx(0.64)
    assert config.time.max_offset_sec == pytest.approx(2.0)
    assert (config.video.short_side, config.video.crop) == (256, 224)
    assert (config.audio.n_mels, config.audio.n_fft, config.audio.win_length) == (128, 1024, 400)
    assert (config.audio.hop_length, config.audio.segment_mel_frames) == (160, 66)


@pytest.mark.parametrize("name", ["quickstart", "tiny", "full"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.model.preset in ("tiny", "full")


def test_tiny_preset_keeps_the_time_base() -> None:
    tiny, full = load_config(CONFIGS / "tiny.yaml"), load_config(CONFIGS / "full.yaml")
    assert tiny.time == full.time
    assert tiny.model.visual_encoder.dim < full.model.visual_encoder.dim


def test_extends_merges_sections_and_overrides_win(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base_sections = {"video": {"short_side": 72, "crop": 64}, "train": {"epochs": 3}}
    base.write_text(yaml.safe_dump(base_sections))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": "base.yaml", "train": {"batch_size": 7}}))
    config = load_config(child, ["train.epochs=9", "model.kind=apa"])
    assert config.video.crop == 64
    assert (config.train.epochs, config.train.batch_size) == (9, 7)
    assert config.model.kind == "apa"


def test_bad_literal_names_field_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.encoder_regime=half"])
    message = str(info.value)
    assert "model.encoder_regime" in message
    assert "'frozen'" in message and "'partial'" in message and "'full'" in message


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"video\.crp: unknown field"):
        load_config(None, ["video.crp=3"])


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="video.crop"):
        load_config(None, ["video.crop=300"])
    with pytest.raises(ConfigError, match="audio_margin_sec"):
        load_config(None, ["preprocess.audio_margin_sec=1.0"])
    with pytest.raises(ConfigError, match="must sum to 1"):
        load_config(None, ["preprocess.splits.train=0.5"])
    with pytest.raises(ConfigError, match="onset_auc is only reported by train.objective"):
        load_config(None, ["train.select_metric=onset_auc"])
    assert load_config(None, ["train.select_metric=onset_auc",
                              "train.objective=visual_onset"]).train.select_metric == "onset_auc"


def test_missing_file_and_extends_cycle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_secrets_stay_out_of_dumps_and_hashes() -> None:
    config = load_config(None, ["storage.secret_access_key=hunter2", "storage.access_key_id=AK"])
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.model_dump(mode="json"))
    assert config.storage.fsspec_options()["secret"] == "hunter2"


def test_content_hash_is_stable_and_section_scoped() -> None:
    a = load_config(None, ["train.epochs=5"])
    b = load_config(None, ["train.epochs=6"])
    assert a.content_hash("time", "video") == b.content_hash("time", "video")
    assert a.content_hash() != b.content_hash()


def test_offset_grid_round_trip_and_sign() -> None:
    time = AssynchConfig().time
    grid = offset_grid_sec(time)
    assert len(grid) == 21 and grid[0] == -2.0 and grid[10] == 0.0 and grid[20] == 2.0
    for offset_class in range(21):
        offset = class_to_offset_sec(offset_class, time)
        assert offset == pytest.approx((offset_class - 10) * 0.2)
        assert offset_sec_to_class(offset, time) == offset_class
    assert nearest_offset_class(0.29, time) == 11
    assert nearest_offset_class(5.0, time) == 20
    with pytest.raises(ValueError, match="not on the grid"):
        offset_sec_to_class(0.1, time)
    with pytest.raises(ValueError, match="outside"):
        class_to_offset_sec(21, time)


def test_train_shards_is_one_set_or_a_list_and_stage1_overrides_are_assignments() -> None:
    assert load_config(None, ["train.shards=data/s"]).train.shards == "data/s"
    listed = load_config(None, ["train.shards=[data/s, data/s/batches/*]"]).train.shards
    assert listed == ("data/s", "data/s/batches/*")
    with pytest.raises(ConfigError, match="train.shards"):
        load_config(None, ["train.shards=[]"])
    stage1 = load_config(None, ["dag.stage1={enabled: true, overrides: [train.seed=3]}"])
    assert stage1.dag.stage1.enabled and stage1.dag.stage1.overrides == ("train.seed=3",)
    with pytest.raises(ConfigError, match="dag.stage1"):
        load_config(None, ["dag.stage1.overrides=[seed]"])
