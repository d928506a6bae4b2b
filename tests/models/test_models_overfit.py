"""The tiny AS-Synchformer memorises a small batch of real stream samples.

The samples go through the real data path: synthetic H.264/AAC clips (assynch.synth.clips), PyAV
decoding (decode_all), planning and cutting (windows), the normalised log-mel (features), a
Parquet shard written and read back (shards), and stream_sample_to_model_inputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from fsspec.implementations.local import LocalFileSystem

from assynch.config import AssynchConfig, load_config
from assynch.media.decode import decode_all
from assynch.media.features import normalised_log_mel
from assynch.models import build_model, cross_entropy, total_loss
from assynch.models.contrastive import contrastive_offset_classes
from assynch.models.losses import mean_pairwise_cosine
from assynch.samples.model_inputs import stream_sample_to_model_inputs
from assynch.samples.offsets import class_to_offset_sec, offset_sec_to_class
from assynch.samples.plan import cut_stream_sample, plan_stream_samples, window_starts_sec
from assynch.shards.dataset import table_to_batch
from assynch.shards.format import SampleRow, shard_layout, shard_schema
from assynch.shards.writer import ShardWriter
from assynch.synth.clips import list_clips

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Each stored sample is also shown at a second offset (within the stored audio margin), as
# training does when it draws a fresh offset, so the batch holds pairs that differ only in sync.
EXTRA_OFFSET_SHIFT_SEC = 1.0


def shard_rows(clips: Path, config: AssynchConfig) -> list[SampleRow]:
    margin = config.preprocess.audio_margin_sec
    rows = []
    for path, _events in list_clips(clips):
        media = decode_all(str(path), time=config.time, video=config.video)
        duration = media.frames.shape[0] / config.time.fps
        for plan in plan_stream_samples(
            path.stem, duration, time=config.time, samples=1, seed=0, audio_margin_sec=margin
        ):
            frames, audio = cut_stream_sample(
                media.frames, media.audio, plan, time=config.time, audio_margin_sec=margin
            )
            mel = normalised_log_mel(audio, config.audio, config.time.sample_rate)
            rows.append(SampleRow(
                video_uid=path.stem, sample_id=plan.sample_id, split="train",
                offset_sec=plan.offset_sec, offset_class=plan.offset_class,
                start_sec=plan.start_sec, window_starts_sec=window_starts_sec(config.time),
                audio_start_sec=plan.start_sec + plan.offset_sec - margin,
                audio_margin_sec=margin, frames=frames, mel=mel.numpy().astype("float16"),
                config_hash=config.content_hash("time", "video", "audio"),
            ))
    return rows


def round_trip_through_a_shard(rows: list[SampleRow], config: AssynchConfig, folder: Path) -> dict:
    layout = shard_layout(config)
    path = str(folder / "train-00000.parquet")
    with ShardWriter(LocalFileSystem(), path, shard_schema(layout), layout, 8) as writer:
        for row in rows:
            writer.write_row(row)
    return table_to_batch(pq.read_table(path))


CONTRASTIVE_CUTS = 2


def model_inputs(batch: dict, config: AssynchConfig) -> tuple[torch.Tensor, ...]:
    """Video, audio and labels, plus for AS-Synchformer's contrastive loss the same windows'
    audio re-cut from the stored margin at other offsets and their hypotheses (as the training
    loop does it: assynch.models.contrastive)."""
    videos, audios, labels, candidates, hypotheses = [], [], [], [], []
    classes = config.time.num_offset_classes
    generator = torch.Generator().manual_seed(0)
    for index, stored in enumerate(batch["offset_sec"].tolist()):
        stored_class = offset_sec_to_class(stored, config.time)
        shifted_class = offset_sec_to_class(
            stored - EXTRA_OFFSET_SHIFT_SEC if stored > 0 else stored + EXTRA_OFFSET_SHIFT_SEC,
            config.time,
        )
        margin = float(batch["audio_margin_sec"][index])

        def cut(offset_class: int, index: int = index, stored: float = stored,
                margin: float = margin) -> tuple[torch.Tensor, torch.Tensor]:
            return stream_sample_to_model_inputs(
                batch["frames"][index], batch["mel"][index], time=config.time,
                video=config.video, audio=config.audio, audio_margin_sec=margin,
                stored_offset_sec=stored,
                offset_sec=class_to_offset_sec(offset_class, config.time),
            )

        for offset_class in (stored_class, shifted_class):
            video, audio = cut(offset_class)
            cuts, hypothesis = contrastive_offset_classes(
                torch.tensor([offset_class]), CONTRASTIVE_CUTS, classes, generator,
                stored_classes=torch.tensor([stored_class]),
                margin_classes=int(round(margin / config.time.offset_step_sec)),
            )
            videos.append(video)
            audios.append(audio)
            labels.append(offset_class)
            candidates.append(torch.stack([cut(c)[1] for c in cuts[0].tolist()], dim=1))
            hypotheses.append(hypothesis[0])
    return (
        torch.stack(videos), torch.stack(audios), torch.tensor(labels),
        torch.stack(candidates), torch.stack(hypotheses),
    )


def test_tiny_as_synchformer_overfits_real_shard_samples(
    synth_clips: Path, tmp_path: Path
) -> None:
    # Frozen encoders keep a step near 0.3 s on two (shared) cores; every other part trains.
    config = load_config(
        CONFIGS / "tiny.yaml", ["time.windows_per_sample=2", "model.encoder_regime=frozen"]
    )
    batch = round_trip_through_a_shard(shard_rows(synth_clips, config), config, tmp_path)
    video, audio, labels, candidates, hypotheses = model_inputs(batch, config)
    assert video.shape == (6, 2, 14, 16, 3, 64, 64) and audio.shape == (6, 2, 14, 128, 66)
    assert len(set(labels.tolist())) == 6, labels
    assert candidates.shape == (6, 2, CONTRASTIVE_CUTS, 14, 128, 66)

    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        initial = model(video, audio, candidates, hypotheses)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=3e-3, weight_decay=0.0)
    started = time.monotonic()
    history = []
    for _ in range(80):
        output = model(video, audio, candidates, hypotheses)
        losses = total_loss(output, labels, config.model.losses)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        history.append(round(losses["cross_entropy"].item(), 3))
        if history[-1] < 0.5:
            break
    model.eval()
    with torch.no_grad():
        trained = model(video, audio, candidates, hypotheses)
        final = cross_entropy(trained.logits, labels).item()
    elapsed = time.monotonic() - started
    assert history[0] > 2.5, history  # near chance (ln 21 = 3.04) before training
    assert final < 1.0, (final, history)
    # Under a minute when the machine is not shared; generous for a busy CI box.
    assert elapsed < 120, f"overfitting took {elapsed:.0f} s ({len(history)} steps)"
    # The K streaming tokens of a window (and the K picks of each modality) differ at init and
    # stay different after training on real samples.
    for name in ("streaming_tokens", "visual_tokens", "audio_tokens"):
        before = mean_pairwise_cosine(getattr(initial, name)).item()
        after = mean_pairwise_cosine(getattr(trained, name)).item()
        assert before < 0.5, (name, before)
        assert after < 0.9, (name, after, len(history))
