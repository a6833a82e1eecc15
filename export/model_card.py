"""``assets.extra/MODEL_CARD.md``: what an export is, for the people who deploy it.

Rendered from the export metadata (``zoo_export.json``) only, so the card and the
metadata cannot disagree: model and config, signatures, the anomaly score's definition,
how the threshold was chosen, the normalisation constants, the measured parity, the
intended use and limits, and the library versions (in the spirit of Mitchell et al.,
2019, "Model Cards for Model Reporting").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.tasks.signatures import LABEL_RULE

__all__ = ["MODEL_CARD_FILE", "render"]

MODEL_CARD_FILE = "MODEL_CARD.md"

#: Config keys worth a line in the card (the full config is in zoo_export.json).
_CONFIG_KEYS = (
    "reconstruction_loss",
    "score",
    "corruption",
    "noise_level",
    "penalty",
    "penalty_weight",
    "sparsity_target",
    "mask_value",
    "likelihood",
    "beta",
)


def _g(value: Any) -> str:
    """A number as people read it (6 significant digits), anything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _shape(info: Mapping[str, Any]) -> str:
    shape = info.get("shape")
    if shape is None:
        return f"{info.get('dtype', '?')}, any shape (a scalar or one value per example)"
    dims = ", ".join("N" if d == -1 else str(d) for d in shape)
    return f"{info.get('dtype', '?')} [{dims}]"


def _tensors(tensors: Mapping[str, Any]) -> str:
    return "<br>".join(f"`{k}` {_shape(v)}" for k, v in tensors.items()) or "-"


def _threshold_lines(meta: Mapping[str, Any]) -> list[str]:
    t = meta.get("threshold")
    if not t:
        family = meta.get("model", {}).get("family", "model")
        return [f"This model has no anomaly threshold (a {family}: it scores nothing)."]
    rule = t.get("rule", "is_anomaly = anomaly_score > threshold")
    lines = [
        f"- Value: **{_g(t['value'])}** (`{rule}`)",
        "- A NaN or infinite input gives a NaN or infinite score and is flagged as an anomaly: "
        "it is never called normal (the rule is in the graph, so TF Serving and ONNX Runtime "
        "decide the same).",
    ]
    method = t["method"]
    if method == "quantile":
        lines += [
            "- Method: quantile of held-out normal scores: the smallest threshold whose "
            "false-positive rate on the calibration examples is at most the target",
            f"- Target FPR: {_g(t['target_fpr'])}; observed FPR on the calibration examples: "
            f"{_g(t['observed_fpr'])} (n = {t['n']})",
        ]
    elif method == "best_f1":
        lines += [
            "- Method: best F1 on labelled calibration data",
            f"- F1 {_g(t['f1'])}, precision {_g(t['precision'])}, recall {_g(t['recall'])}; "
            f"observed FPR {_g(t['observed_fpr'])} (n = {t['n']})",
        ]
    else:
        lines.append("- Method: given by the caller (not calibrated by the export)")
        if t.get("n"):
            lines.append(
                f"- Observed FPR of that threshold on the {t['n']} calibration examples: "
                f"{_g(t['observed_fpr'])}"
            )
    lines.append(
        "- `score_with_threshold` takes the threshold as an input instead: `threshold` [N], "
        "one per example (batch first, as TF Serving's batching needs; a scalar is refused)."
    )
    return lines


def _normalization_lines(meta: Mapping[str, Any]) -> list[str]:
    norm = meta.get("normalization")
    if norm is None:
        return ["Not applicable (no anomaly score)."]
    if norm.get("output") is None:
        return [f"No `normalized_score` output: {norm.get('reason')}."]
    return [
        "`normalized_score = (anomaly_score - mean) / std`, computed in the graph from "
        "constants baked in at export (SavedModel and ONNX alike):",
        "",
        f"- mean = {_g(norm['mean'])}",
        f"- std = {_g(norm['std'])} (sample standard deviation, ddof = {norm['ddof']})",
        f"- from the scores of the n = {norm['n']} calibration examples",
        "",
        "A normal example scores around 0; the value counts standard deviations above the "
        "calibration mean. It is a rescaling for comparing models, not a probability.",
    ]


def _parity_lines(meta: Mapping[str, Any]) -> list[str]:
    report = meta.get("parity") or {}
    backends = report.get("backends", [])
    lines = [
        f"Every signature was run on a fixed batch of {report.get('batch_size', '?')} examples "
        f"through Keras (the reference) and {', '.join(backends) or 'no backend'}; rule: "
        f"{report.get('rule', '?')}. Passed: **{report.get('passed')}**; largest "
        f"|difference| {report.get('max_abs_diff', 0.0):.3g}.",
        "",
        "| signature | tolerance | " + " | ".join(backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]
    tolerances = report.get("tolerances", {})
    for name, per_backend in report.get("signatures", {}).items():
        cells = []
        for backend in backends:
            diffs = per_backend.get(backend)
            if diffs is None:
                cells.append("-")
                continue
            worst = max((d["max_abs_diff"] for d in diffs.values() if "max_abs_diff" in d),
                        default=0.0)  # fmt: skip
            wrong = sum(d.get("mismatches", 0) for d in diffs.values())
            cells.append(f"{worst:.2e}" + (f", {wrong} verdicts differ" if wrong else ""))
        t = tolerances.get(name) or {"atol": report.get("atol"), "rtol": report.get("rtol")}
        tolerance = f"atol {_g(t['atol'])}, rtol {_g(t['rtol'])}"
        lines.append(f"| {name} | {tolerance} | " + " | ".join(cells) + " |")
    return lines


def _use_lines(meta: Mapping[str, Any]) -> list[str]:
    """The model's own notes (from its task declaration), then, for anomaly scorers,
    what the calibration data means for the threshold."""
    lines = list(meta["model"].get("intended_use") or [])
    if not meta.get("threshold"):
        return lines
    calibration = meta.get("calibration") or {}
    description = calibration.get("description")
    if description:
        lines.append(
            f"- Calibrated on: {description}. The threshold's false-positive rate and the "
            "normalised score's scale hold only for data distributed like that."
        )
    else:
        lines.append(
            "- No calibration data: the threshold was given by the caller and its "
            "false-positive rate is unknown."
        )
    if description and "SYNTHETIC" in description:
        lines.append(
            "- The calibration data is synthetic: recalibrate on held-out normal data from "
            "your own source (`zoo.export.export_model(..., calibration_images=...)`) before "
            "trusting the threshold or the normalised score on real series."
        )
    lines.append(
        "- Verdicts of examples within float round-off of the threshold may differ between "
        "backends (SavedModel vs ONNX Runtime)."
    )
    return lines


def render(meta: Mapping[str, Any]) -> str:
    """The model card (Markdown) of one export, from its metadata."""
    model = meta["model"]
    config = model.get("config", {})
    user = meta.get("user") or {}
    out = [
        f"# Model card: {meta['name']} (version {meta['version']})",
        "",
        f"Exported {meta['created']} by `zoo.export` ({meta['format']}); machine-readable "
        "details are in `zoo_export.json` beside this file.",
        "",
        "## Model",
        "",
        f"- Class: `{model['class']}` (family: {model['family']})",
        f"- Registered name: {model.get('registered_name') or '-'}; Keras name: "
        f"{model['keras_name']}",
    ]
    if user.get("source"):
        out.append(f"- Exported from: `{user['source']}`")
    given = model["input"]
    shape = [-1 if d is None else d for d in given["shape"]]
    out.append(f"- Input: `{given['key']}` {_shape({**given, 'shape': shape})}")
    if model.get("tasks"):
        out.append(f"- Tasks: {', '.join(model['tasks'])}")
    if "latent_dim" in model:
        out.append(f"- Latent dimension: {model['latent_dim']}")
    settings = [f"{k}={_g(config[k])}" for k in _CONFIG_KEYS if k in config]
    if settings:
        out.append(f"- Settings: {', '.join(settings)}")
    if model.get("num_classes"):
        out.append(
            f"- Conditional on `labels`: int64 class ids in [0, {model['num_classes']}), one "
            f"per example, in every signature; {LABEL_RULE.format(k=model['num_classes'])} "
            "(the other examples of the batch are unaffected; a score signature flags it "
            "as an anomaly)"
        )
    out += [
        "",
        "## Signatures",
        "",
        f"`serving_default` = `{meta.get('serving_default')}`. Call them by name "
        "(TF Serving `signature_name`); inputs and outputs are named tensors.",
        "",
        "| signature | inputs | outputs | ONNX |",
        "|---|---|---|---|",
    ]
    reasons = (meta.get("onnx") or {}).get("savedmodel_only_reasons", {})
    for name, sig in meta["signatures"].items():
        if sig.get("alias_of"):
            continue
        onnx = sig.get("onnx", {}).get("file")
        if onnx is None:
            onnx = f"no: {reasons[name]}" if name in reasons else "not exported"
        else:
            renamed = {k: v for k, v in sig["onnx"]["output_names"].items() if k != v}
            onnx = f"`{onnx}`"
            if renamed:
                onnx += (
                    " (outputs " + ", ".join(f"`{k}` -> `{v}`" for k, v in renamed.items()) + ")"
                )
        out.append(
            f"| `{name}` | {_tensors(sig['inputs'])} | {_tensors(sig['outputs'])} | {onnx} |"
        )
    score = meta.get("score")
    out += ["", "## Anomaly score", ""]
    if score:
        out += [
            f"Definition: {score['definition']}.",
            "",
            "Higher is more anomalous. Outputs of `score`: "
            + ", ".join(f"`{o}`" for o in score["outputs"])
            + ".",
        ]
    else:
        out.append("Not applicable.")
    out += ["", "## Threshold", "", *_threshold_lines(meta)]
    out += ["", "## Normalised score", "", *_normalization_lines(meta)]
    calibration = meta.get("calibration")
    if calibration:
        out += [
            "",
            "## Calibration data",
            "",
            f"{calibration.get('n', 0)} {calibration.get('examples')}: "
            f"{calibration.get('description') or 'none (threshold given by the caller)'}.",
        ]
        if calibration.get("warning"):
            out += ["", f"Warning: {calibration['warning']}."]
    out += ["", "## Parity", "", *_parity_lines(meta)]
    out += ["", "## Intended use and limits", "", *_use_lines(meta)]
    versions = meta.get("versions", {})
    out += ["", "## Versions", ""]
    out += [f"- {k} {v}" for k, v in versions.items()]
    out.append("- Serve with a TensorFlow Serving at least as new as the TensorFlow above.")
    return "\n".join(out) + "\n"
