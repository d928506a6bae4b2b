"""One video's detection result, its JSON document and that document's JSON Schema.

The document (`DetectReport.as_dict`, printed by `assynch detect --json`, one line per video)
is described field by field in docs/DETECT.md; `REPORT_SCHEMA` is the machine-checkable form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assynch.detect.analysis import OUT_OF_SYNC, VERDICTS, Analysis, evidence_mask
from assynch.detect.inference import WindowResults

SCHEMA_ID = "assynch-detect/1"

EXIT_IN_SYNC = 0
EXIT_ERROR = 2
EXIT_OUT_OF_SYNC = 3
EXIT_UNDECIDED = 4


def exit_code_of(verdict: str) -> int:
    if verdict == "in_sync":
        return EXIT_IN_SYNC
    if verdict in OUT_OF_SYNC:
        return EXIT_OUT_OF_SYNC
    return EXIT_UNDECIDED


def batch_exit_code(codes: list[int]) -> int:
    """Several videos: an error wins, then out of sync, then undecided, else 0."""
    for code in (EXIT_ERROR, EXIT_OUT_OF_SYNC, EXIT_UNDECIDED):
        if code in codes:
            return code
    return EXIT_IN_SYNC


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


@dataclass
class DetectReport:
    source: str
    model: str
    duration_sec: float
    window_sec: float
    context_windows: int | None
    offsets_sec: np.ndarray
    results: WindowResults
    analysis: Analysis
    sample_rate: int
    fix: dict[str, Any] | None = field(default=None)

    @property
    def verdict(self) -> str:
        return self.analysis.verdict

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.verdict)

    def timeline(self) -> list[dict[str, Any]]:
        results = self.results
        evidence = evidence_mask(results.audio_db, results.motion)
        rows = []
        for k in range(results.count):
            probs = results.probabilities[k]
            best = int(np.argmax(probs))
            low, high = max(best - 1, 0), best + 2
            rows.append({
                "index": k,
                "start_sec": _r(results.start_sec[k], 3),
                "end_sec": _r(results.start_sec[k] + self.window_sec, 3),
                "center_sec": _r(results.center_sec[k], 3),
                "offset_sec": float(self.offsets_sec[best]),
                "confidence": _r(probs[low:high].sum()),
                "audio_db": _r(results.audio_db[k], 1),
                "motion": _r(results.motion[k], 3),
                "evidence": bool(evidence[k]),
                "probabilities": [_r(p) for p in probs],
            })
        return rows

    def as_dict(self) -> dict[str, Any]:
        analysis, results = self.analysis, self.results
        summary = results.summary
        return {
            "schema": SCHEMA_ID,
            "video": self.source,
            "model": self.model,
            "duration_sec": _r(self.duration_sec, 3),
            "offset_sec": analysis.offset_sec,
            "offset_class": analysis.offset_class,
            "confidence": _r(analysis.confidence),
            "verdict": analysis.verdict,
            "reason": analysis.reason,
            "exit_code": self.exit_code,
            "drifting": analysis.drifting,
            "windows": results.count,
            "evidence_windows": analysis.evidence_windows,
            "context_windows": self.context_windows,
            "window_sec": _r(self.window_sec, 3),
            "hop_sec": _r(results.start_sec[1] - results.start_sec[0], 3)
            if results.count > 1 else None,
            "audio_ended_early": summary.audio_ended_early,
            "padded_audio_sec": _r(summary.padded_samples / self.sample_rate, 3),
            "wall_sec": _r(results.wall_sec, 2),
            "realtime_factor": _r(self.duration_sec / max(results.wall_sec, 1e-9), 2),
            "offsets_sec": [float(x) for x in self.offsets_sec],
            "probabilities": [_r(p) for p in analysis.probabilities],
            "segments": [
                {
                    "start_sec": s.start_sec, "end_sec": s.end_sec,
                    "offset_sec": s.offset_sec, "offset_class": s.offset_class,
                    "confidence": s.confidence, "first_window": s.first_window,
                    "last_window": s.last_window, "evidence_windows": s.evidence_windows,
                }
                for s in analysis.segments
            ],
            "timeline": self.timeline(),
            "fix": self.fix,
        }


def error_document(source: str, message: str) -> dict[str, Any]:
    return {"schema": SCHEMA_ID, "video": source, "error": message, "exit_code": EXIT_ERROR}


_NUMBER = {"type": "number"}
_SECONDS = {"type": "number", "minimum": 0}
_PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}
_CLASS = {"type": "integer", "minimum": 0}

SEGMENT_SCHEMA = {
    "type": "object",
    "required": ["start_sec", "end_sec", "offset_sec", "offset_class", "confidence",
                 "first_window", "last_window", "evidence_windows"],
    "additionalProperties": False,
    "properties": {
        "start_sec": _SECONDS, "end_sec": _SECONDS, "offset_sec": _NUMBER,
        "offset_class": _CLASS, "confidence": _PROBABILITY,
        "first_window": {"type": "integer", "minimum": 0},
        "last_window": {"type": "integer", "minimum": 0},
        "evidence_windows": {"type": "integer", "minimum": 0},
    },
}

WINDOW_SCHEMA = {
    "type": "object",
    "required": ["index", "start_sec", "end_sec", "center_sec", "offset_sec", "confidence",
                 "audio_db", "motion", "evidence", "probabilities"],
    "additionalProperties": False,
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "start_sec": _SECONDS, "end_sec": _SECONDS, "center_sec": _SECONDS,
        "offset_sec": _NUMBER, "confidence": _PROBABILITY, "audio_db": _NUMBER,
        "motion": {"type": "number", "minimum": 0}, "evidence": {"type": "boolean"},
        "probabilities": {"type": "array", "items": _PROBABILITY, "minItems": 2},
    },
}

FIX_SCHEMA = {
    "type": ["object", "null"],
    "required": ["path", "shifts", "video_reencoded", "audio_reencoded"],
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string"},
        "shifts": {"type": "array", "items": {
            "type": "object", "required": ["start_sec", "end_sec", "shift_sec"],
            "additionalProperties": False,
            "properties": {"start_sec": _SECONDS, "end_sec": _SECONDS, "shift_sec": _NUMBER},
        }},
        "video_reencoded": {"type": "boolean"},
        "audio_reencoded": {"type": "boolean"},
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "assynch detect: one video",
    "oneOf": [
        {
            "type": "object",
            "required": ["schema", "video", "model", "duration_sec", "offset_sec",
                         "offset_class", "confidence", "verdict", "reason", "exit_code",
                         "drifting", "windows", "evidence_windows", "context_windows",
                         "window_sec", "hop_sec", "audio_ended_early", "padded_audio_sec",
                         "wall_sec", "realtime_factor", "offsets_sec", "probabilities",
                         "segments", "timeline", "fix"],
            "additionalProperties": False,
            "properties": {
                "schema": {"const": SCHEMA_ID},
                "video": {"type": "string"},
                "model": {"type": "string"},
                "duration_sec": _SECONDS,
                "offset_sec": {"type": ["number", "null"]},
                "offset_class": {"type": ["integer", "null"], "minimum": 0},
                "confidence": _PROBABILITY,
                "verdict": {"enum": list(VERDICTS)},
                "reason": {"type": "string"},
                "exit_code": {"enum": [EXIT_IN_SYNC, EXIT_OUT_OF_SYNC, EXIT_UNDECIDED]},
                "drifting": {"type": "boolean"},
                "windows": {"type": "integer", "minimum": 1},
                "evidence_windows": {"type": "integer", "minimum": 0},
                "context_windows": {"type": ["integer", "null"], "minimum": 1},
                "window_sec": _SECONDS,
                "hop_sec": {"type": ["number", "null"], "minimum": 0},
                "audio_ended_early": {"type": "boolean"},
                "padded_audio_sec": _SECONDS,
                "wall_sec": _SECONDS,
                "realtime_factor": _SECONDS,
                "offsets_sec": {"type": "array", "items": _NUMBER, "minItems": 2},
                "probabilities": {"type": "array", "items": _PROBABILITY, "minItems": 2},
                "segments": {"type": "array", "items": SEGMENT_SCHEMA},
                "timeline": {"type": "array", "items": WINDOW_SCHEMA, "minItems": 1},
                "fix": FIX_SCHEMA,
            },
        },
        {
            "type": "object",
            "required": ["schema", "video", "error", "exit_code"],
            "additionalProperties": False,
            "properties": {
                "schema": {"const": SCHEMA_ID},
                "video": {"type": "string"},
                "error": {"type": "string"},
                "exit_code": {"const": EXIT_ERROR},
            },
        },
    ],
}
