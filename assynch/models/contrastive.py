"""Which audio the training loop cuts for AS-Synchformer's contrastive loss, and how it labels it.

A stream sample shown at offset class k (the label; the model's `audio` input) has its audio
stored with a margin, so the loop can cut the same windows' audio at any absolute offset class c
of the grid (`stream_sample_to_model_inputs(..., offset_sec=class_to_offset_sec(c))`). That audio
is in sync with the video when c is the centre class (0 s). The model and the loss do not know k
at test time, so each candidate is labelled with its *hypothesis*: the label under which it is
in sync, h = k - c + centre. The in-sync cut (c = centre) has h = k; the model's own input
(c = k) has h = centre and is candidate 0 of `StreamOutput.audio_embedding`.
"""

from __future__ import annotations

import torch


def hypotheses_for_offsets(
    label_classes: torch.Tensor, audio_offset_classes: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """(B,) labels, (B, N) absolute offset classes of the cut audio -> (B, N) hypotheses.

    Raises if a hypothesis falls off the grid (|label - cut| more than half the grid)."""
    centre = num_classes // 2
    hypotheses = label_classes.long()[:, None] - audio_offset_classes.long() + centre
    if (hypotheses < 0).any() or (hypotheses >= num_classes).any():
        raise ValueError(
            "an audio cut is more than the grid's half-width from the stream's own offset; draw "
            "cuts with contrastive_offset_classes"
        )
    return hypotheses


def contrastive_offset_classes(
    label_classes: torch.Tensor,
    count: int,
    num_classes: int,
    generator: torch.Generator | None = None,
    stored_classes: torch.Tensor | None = None,
    margin_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each stream, `count` absolute offset classes to cut audio at, and their hypotheses.

    The first is always the in-sync cut (the centre class) unless the label is the centre (then
    the model's own input is the in-sync candidate); the rest are distinct random classes whose
    hypotheses stay on the grid, never the label's own class (that audio is the input already).
    With `stored_classes` (B,) and `margin_classes` (the stored audio margin in classes: 10 for
    2.0 s), cuts stay within the stored audio: |c - stored| <= margin.
    Returns (offset_classes, hypotheses), both (B, count) long.
    """
    centre = num_classes // 2
    rows = []
    stored = (
        stored_classes.long().tolist() if stored_classes is not None
        else [None] * len(label_classes)
    )
    for label, kept in zip(label_classes.long().tolist(), stored, strict=True):
        allowed = [
            c for c in range(num_classes)
            if c != label and 0 <= label - c + centre < num_classes
            and (kept is None or margin_classes is None or abs(c - kept) <= margin_classes)
        ]
        if label != centre and centre not in allowed:
            raise ValueError(f"the in-sync cut (centre class) is outside the stored audio of a "
                             f"stream labelled {label}")
        chosen = [centre] if label != centre else []
        rest = [c for c in allowed if c not in chosen]
        order = torch.randperm(len(rest), generator=generator).tolist()
        chosen += [rest[i] for i in order[: count - len(chosen)]]
        if len(chosen) < count:
            raise ValueError(f"only {len(chosen)} distinct cuts exist for label {label}")
        rows.append(chosen)
    offsets = torch.tensor(rows, dtype=torch.long)
    return offsets, hypotheses_for_offsets(label_classes, offsets, num_classes)
