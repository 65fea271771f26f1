"""A run as a model that plain transformers loads: no PEFT, no workbench (``python -m rlhf_engine export``).

- A policy run (of any method: PPO, GRPO, RLOO, DPO, ...) becomes a causal LM: its LoRA adapter merged into the
  base weights, ``AutoModelForCausalLM.from_pretrained(DIR)``, with the tokenizer it trained with (left padding, a pad
  token distinct from EOS) and a generation config of its sampling (temperature T, top-k 0, top-p 1).
- A reward-model run becomes ``AutoModelForSequenceClassification.from_pretrained(DIR)``: the adapter merged
  into the backbone, the score head as the classifier, one logit = the run's raw score at the last real
  token; the normalisation (score = gain · raw + bias) is stored in its config as ``score_normalization``.
- ``adapter_only``: the PEFT adapter alone (and, for a reward model, its head and settings), for
  ``PeftModel.from_pretrained(base, DIR)``.

Every export writes a model card (README.md): the run's settings, final metrics and data. The folder is
written beside its destination and renamed into place: a failed export leaves nothing half-written, and
an existing folder is never overwritten. A 4-bit (or 8-bit) base is dequantized and the adapter merged in
full precision: rounding W + ΔW back to NF4 would round away most of the small LoRA update ΔW.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rlhf_engine.config import ModelConfig, from_dict
from rlhf_engine.core.models import describe_model, load_model_and_tokenizer, load_tokenizer, resolve_source
from rlhf_engine.methods import registry
from rlhf_engine.runs.reward_job import REWARD_KIND
from rlhf_engine.runs.runfolder import RunFolder, checkpoint_step

NORMALIZATION_FIELD = "score_normalization"  # the exported reward model's config: how raw logits become scores
# The last metrics worth a line in a card, by kind (those the run logged)
CARD_METRICS = {
    "policy": ("objective/scores", "objective/kl", "gold/score", "reward", "kl", "loss", "rewards/accuracies",
               "rewards/margins", "loss/policy", "entropy", "response_length"),
    REWARD_KIND: ("loss", "accuracy", "eval/accuracy", "eval/margin"),
}


class ExportError(ValueError):
    """A run that cannot be exported as asked (not a model run, nothing trained yet, destination taken)."""


@dataclass
class ExportSource:
    """What an export reads from a run folder."""

    run: RunFolder
    kind: str  # a method's name (registry.names()) or REWARD_KIND
    model: ModelConfig  # the base model as the run loaded it
    settings: dict  # the run's config (its dataclass as a dict)
    adapter_root: Path  # the folder holding policy/ (or reward/, score head and reward_model.json)
    step: int  # the step its adapter is from
    total_steps: int
    state: str  # the run's state ("completed", "stopped", ...)


def export_run(run_dir: Path, out_dir: Path, adapter_only: bool = False) -> Path:
    """Export the run at ``run_dir`` into the new folder ``out_dir`` (see the module docstring); returns it."""
    source = read_source(Path(run_dir))
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not empty: choose a new folder for the export")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        if adapter_only:
            notes = _write_adapter(source, tmp)
        elif source.kind == REWARD_KIND:
            notes = _write_reward_model(source, tmp)
        else:
            notes = _write_policy(source, tmp)
        (tmp / "README.md").write_text(model_card(source, adapter_only, notes), encoding="utf-8")
        _usual_permissions(tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def default_destination(run_dir: Path, adapter_only: bool = False) -> Path:
    """Where the dashboard exports a run: ``<run>/exports/<merged|adapter>-step-N``, N the step of the adapter
    it would export (a run trained further exports anew beside the earlier export)."""
    source = read_source(Path(run_dir))
    return source.run.path / "exports" / f"{'adapter' if adapter_only else 'merged'}-step-{source.step:06d}"


def zip_export(folder: Path) -> Path:
    """``<folder>.zip`` of an export (written once, atomically; weights stored, text compressed)."""
    import zipfile

    folder = Path(folder)
    target = folder.with_suffix(".zip")
    if target.is_file():
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=folder.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for file in sorted(folder.iterdir()):
                stored = file.suffix in (".safetensors", ".bin")  # compressing weights takes long and saves ~7 %
                archive.write(file, f"{folder.name}/{file.name}",
                              compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _usual_permissions(folder: Path) -> None:
    """mkdtemp makes a 0700 folder (and some writers 0600 files): give the export the umask's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def read_source(run_dir: Path) -> ExportSource:
    """The run's kind, base model and the adapter to export: the final one, else its latest checkpoint's."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise ExportError(f"{run_dir} is not a run folder (no status.json)")
    saved = run.config()
    kind = saved.get("kind")
    if kind != REWARD_KIND and not (isinstance(kind, str) and registry.is_policy_kind(kind)):
        raise ExportError(f"{run.id} is a {kind} run: only policy runs ({', '.join(registry.names())}) and "
                          "reward-model runs hold a model to export"
                          + (" (export one of the sweep's runs)" if kind == "sweep" else ""))
    settings = saved["config"]
    status = run.status()
    total, state = int(status.get("total_steps", settings.get("steps", 0))), status.get("state", "unknown")
    if kind == REWARD_KIND:
        from rlhf_engine.core.reward import META_FILE

        if not (run.path / META_FILE).is_file():
            raise ExportError(f"{run.id} has no trained reward model yet ({state}): a reward model is written "
                              "when its run completes")
        root, step = run.path, total
    elif (run.path / "policy" / "adapter_config.json").is_file():
        root, step = run.path, int(status.get("step", total))
    else:
        latest = run.latest_checkpoint()
        if latest is None or not (latest / "policy" / "adapter_config.json").is_file():
            raise ExportError(f"{run.id} has no trained policy yet ({state}, no checkpoint)")
        root, step = latest, checkpoint_step(latest)
    return ExportSource(run, kind, from_dict(ModelConfig, settings["model"]), settings, root, step, total, state)


def full_precision_base(model: ModelConfig):
    """(causal LM on CPU with weights in full precision, tokenizer, a note on how) for merging into.

    Unquantized: the base as the run loaded it, in float32 unless the run asked for a dtype. 4- or 8-bit:
    loaded quantized as the run was (the same rounded weights the adapter was trained on), then
    dequantized to float32.
    """
    dtype = "float32" if model.dtype == "auto" else model.dtype
    plain = replace(model, device="cpu", cpu_matmul="pytorch")
    if model.quant == "none":
        base, tokenizer = load_model_and_tokenizer(replace(plain, dtype=dtype))
        return base, tokenizer, f"the adapter merged into the base weights, in {dtype}"
    base, tokenizer = load_model_and_tokenizer(replace(plain, dtype="float32"))
    base = base.dequantize()
    for parameter in base.parameters():  # dequantize() keeps the compute dtype; make every weight float32
        parameter.data = parameter.data.float()
    base.config.dtype = torch.float32
    return base, tokenizer, (
        f"the {model.quant} weights the run trained on, dequantized to float32, with the adapter merged in: the "
        f"update ΔW = (α/r)·BA is small next to W, and rounding W + ΔW back to {model.quant} would round most of "
        "it away, so the merge is kept in full precision")


def _merged(source: ExportSource, adapter: str):
    """(merged plain transformers model, tokenizer, note): the adapter ``adapter`` merged into the base."""
    from peft import PeftModel

    base, tokenizer, note = full_precision_base(source.model)
    model = PeftModel.from_pretrained(base, str(source.adapter_root / adapter)).merge_and_unload()
    return model, tokenizer, note


def _write_policy(source: ExportSource, folder: Path) -> list[str]:
    from transformers import GenerationConfig

    model, tokenizer, note = _merged(source, "policy")
    settings = source.settings
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=settings.get("temperature", 1.0), top_k=0, top_p=1.0,
        max_new_tokens=settings.get("response_length", 64), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    notes = [f"Weights: {note}."]
    if "value_model" in settings:  # a method with a learnt value baseline (PPO)
        notes.append(f"{registry.get(source.kind).title}'s value head (and a separate value adapter) served training "
                     "only and is not exported.")
    return notes


def _write_reward_model(source: ExportSource, folder: Path) -> list[str]:
    from transformers import AutoModelForSequenceClassification

    from rlhf_engine.core.heads import load_head
    from rlhf_engine.core.reward import HEAD_FILE, META_FILE

    meta = json.loads((source.adapter_root / META_FILE).read_text())
    if meta.get("pooling", "last") != "last":
        raise ExportError(f"{source.run.id} pools the response's mean; AutoModelForSequenceClassification reads "
                          "the last token's state: export it with --adapter")
    causal, tokenizer, note = _merged(source, "reward")
    head = load_head(source.adapter_root / HEAD_FILE, device="cpu")
    config = causal.config
    config.num_labels, config.id2label, config.label2id = 1, {0: "reward"}, {"reward": 0}
    config.pad_token_id = tokenizer.pad_token_id
    classifier_model = AutoModelForSequenceClassification.from_config(config, dtype=causal.dtype)
    prefix = classifier_model.base_model_prefix
    getattr(classifier_model, prefix).load_state_dict(getattr(causal, causal.base_model_prefix).state_dict())
    heads = [m for name, m in classifier_model.named_children() if name != prefix]
    if len(heads) != 1 or not isinstance(heads[0], torch.nn.Linear) or heads[0].out_features != 1:
        raise ExportError(f"{type(classifier_model).__name__} has no single linear score layer to take the head")
    classifier = heads[0]
    offset = float(head.bias.item())  # Bradley-Terry gives the bias no gradient: 0 unless set otherwise
    with torch.no_grad():
        classifier.weight.copy_(head.weight.to(classifier.weight.dtype))
        if classifier.bias is not None:
            classifier.bias.copy_(head.bias.to(classifier.bias.dtype))
            offset = 0.0
    config.update({NORMALIZATION_FIELD: {"gain": meta["gain"], "bias": meta["bias"], "raw_offset": offset,
                                         "normalized_on": meta.get("normalized_on"),
                                         "max_length": meta["max_length"]}})
    classifier_model.config = config
    classifier_model.eval()
    classifier_model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return [f"Weights: {note}; the score head is the classifier (one logit)."]


def _write_adapter(source: ExportSource, folder: Path) -> list[str]:
    """The PEFT adapter folder as the run saved it, its base named in adapter_config.json; a reward model's
    head and settings beside it."""
    from rlhf_engine.core.reward import HEAD_FILE, META_FILE

    name = "reward" if source.kind == REWARD_KIND else "policy"
    for file in (source.adapter_root / name).iterdir():
        if file.is_file():
            shutil.copy2(file, folder / file.name)
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = resolve_source(source.model.source)
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    if source.kind == REWARD_KIND:
        for file in (HEAD_FILE, META_FILE):
            shutil.copy2(source.adapter_root / file, folder / file)
    load_tokenizer(resolve_source(source.model.source)).save_pretrained(folder)
    return []


def model_card(source: ExportSource, adapter_only: bool, notes: list[str]) -> str:
    """README.md of an export: front matter (Hugging Face's model-card fields), use, settings, metrics, data."""
    kind, run = source.kind, source.run
    reward = kind == REWARD_KIND
    base = source.model.source if source.model.source != "default" else resolve_source("default")
    tags = ["rlhf-workbench", "rlhf", kind if not reward else "reward-model", "peft" if adapter_only else "lora-merged"]
    front = ["---", f"base_model: {base}", f"library_name: {'peft' if adapter_only else 'transformers'}",
             f"pipeline_tag: {'text-classification' if reward else 'text-generation'}", "tags:",
             *(f"- {tag}" for tag in tags), "---", ""]
    what = "reward model" if reward else f"{registry.get(kind).title} policy"
    lines = [f"# {run.id}: a {what} trained with RLHF Workbench", ""]
    lines.append(f"Base model: {describe_model(source.model)}. LoRA rank {source.model.lora_r}, alpha "
                 f"{source.model.lora_alpha}, on {source.model.lora_target}. "
                 + ("The run completed" if source.state == "completed" else f"The run is {source.state}")
                 + f"; exported from step {source.step} of {source.total_steps}"
                 + ("" if source.adapter_root == run.path else f" (its latest checkpoint, {source.adapter_root.name})")
                 + ".")
    lines += ["", *notes, "", "## Use", "", "```python", *_usage(source, adapter_only), "```", ""]
    if reward and not adapter_only:
        lines += _scoring_notes(source)
    lines += ["## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | `{json.dumps(v)}` |" for k, v in source.settings.items() if k != "model"]
    lines += [f"| `model.{k}` | `{json.dumps(v)}` |" for k, v in source.settings["model"].items()]
    lines += ["", *_metrics_section(run, "policy" if not reward else REWARD_KIND), *_data_section(source)]
    return "\n".join(front + lines) + "\n"


def _usage(source: ExportSource, adapter_only: bool) -> list[str]:
    if adapter_only:
        return ["from peft import PeftModel",
                "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                "tokenizer = AutoTokenizer.from_pretrained(DIR)",
                "base = AutoModelForCausalLM.from_pretrained(BASE)  # the base_model above",
                "model = PeftModel.from_pretrained(base, DIR)"
                + ("  # + score_head.safetensors on the last token's state" if source.kind == REWARD_KIND else "")]
    if source.kind == REWARD_KIND:
        return ["import torch", "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
                "tokenizer = AutoTokenizer.from_pretrained(DIR)",
                "model = AutoModelForSequenceClassification.from_pretrained(DIR)",
                "prompt = tokenizer.apply_chat_template([{'role': 'user', 'content': question}], tokenize=False,",
                "                                       add_generation_prompt=True)",
                "ids = (tokenizer(prompt, add_special_tokens=False).input_ids",
                "       + tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])",
                "raw = model(input_ids=torch.tensor([ids])).logits[0, 0].item()",
                f"norm = model.config.{NORMALIZATION_FIELD}",
                "score = norm['gain'] * (raw + norm['raw_offset']) + norm['bias']  # the score policies trained on"]
    return ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            "tokenizer = AutoTokenizer.from_pretrained(DIR)",
            "model = AutoModelForCausalLM.from_pretrained(DIR)",
            "messages = [{'role': 'user', 'content': question}]",
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt',",
            "                                       return_dict=True)",
            "output = model.generate(**inputs, max_new_tokens=64)  # samples as the run did (generation_config.json)",
            "answer = tokenizer.decode(output[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True)"]


def _scoring_notes(source: ExportSource) -> list[str]:
    from rlhf_engine.core.reward import META_FILE

    meta = json.loads((source.adapter_root / META_FILE).read_text())
    return ["## Scores", "",
            "The logit is the run's raw score of prompt + answer + EOS, read at the last token (the prompt in the "
            "chat template with a generation prompt; at most "
            f"{meta['max_length']} tokens, cut from the left). Tokenize the prompt and the answer apart, as above: "
            "the run did. One sequence at a time, or pass `position_ids` counting real tokens with a padded batch.",
            "",
            f"Normalised score = gain · raw + bias, with gain {meta['gain']:.6g} and bias {meta['bias']:.6g} "
            f"(`config.{NORMALIZATION_FIELD}`): mean 0 and standard deviation 1 on answers of "
            f"{meta.get('normalized_on') or 'the base model'}, as Ziegler et al. (2019) normalise.", ""]


def _metrics_section(run: RunFolder, family: str) -> list[str]:
    rows = run.metrics()
    if not rows:
        return ["## Final metrics", "", "No step was logged.", ""]
    last = rows[-1]
    shown = [(k, last[k]) for k in CARD_METRICS[family] if isinstance(last.get(k), (int, float))]
    lines = ["## Final metrics", "", f"At step {last.get('step')} (the last logged):", "", "| metric | value |",
             "|---|---|", *(f"| `{k}` | {v:.4g} |" for k, v in shown)]
    evaluation = run.eval()
    if evaluation:
        lines.append(f"| held-out accuracy | {evaluation.get('accuracy', float('nan')):.3f} |")
    return [*lines, ""]


def _data_section(source: ExportSource) -> list[str]:
    saved = source.run.config()
    if source.kind == REWARD_KIND:
        data = [f"- Preference pairs: {saved.get('data')} ({saved.get('pairs')} pairs; a copy is the run's "
                "pairs.jsonl), split into training and held-out pairs by the run's seed."]
    else:
        prompts = saved.get("prompts")
        prompts = "the demo prompts (the held-out ones answer the probes)" if prompts == "demo" else prompts
        data = [f"- Reward model: {saved.get('reward')}", f"- Prompts: {prompts}"]
        if saved.get("pairs"):
            data.append(f"- Preference pairs (DPO): {saved['pairs']}")
    return ["## Data", "", *data, f"- Run folder: {source.run.path}", ""]
