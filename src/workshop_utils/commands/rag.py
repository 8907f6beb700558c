"""`workshop rag`: notebook 06 as a command: the base model and notebook 03's adapter, each with and without
retrieved passages, scored on the same held-out questions.

    workshop rag --adapter outputs/offline/sft-adapter --output-dir runs/rag
    workshop rag --adapter runs/medquad --data data/medquad --corpus data/medquad-corpus/corpus.jsonl --k 3 --output-dir runs/rag

It runs notebook 06's recipe (:mod:`workshop_utils.recipes.rag_vs_finetune`): the dense retriever over the corpus
(with BM25's recall beside it), the passages in the user message, and ``score_systems``, which scores the four
systems with ``answers.score_chat_model`` plus SemScore. ``DIR/metrics.json`` holds one object per system
(``base``, ``base_rag``, ``sft``, ``sft_rag``: ``nll``, ``rougeL``, ``eos_rate``, ``repetition``, ``similarity``,
``decoding``, ``answered``), top-level ``k``, ``retrieval_recall_at_k`` (dense) and ``bm25_recall_at_k``, and the
per-question NLL change that retrieval brings to each model with its 95% bootstrap interval.

Bad input fails before any model loads, with one line: a ``--data`` folder without ``test.jsonl``, a corpus row
without ``text``, a passage that holds a held-out answer, a folder that is not an adapter, a finished run in
``--output-dir`` (pass ``--overwrite``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import DataError, WorkshopError


def add_arguments(parser) -> None:
    parser.add_argument("--adapter", required=True, help="the SFT adapter folder (notebook 03's outputs/<profile>/sft-adapter "
                                                         "or a `workshop sft --output-dir`)")
    parser.add_argument("--data", help="folder with train.jsonl and test.jsonl, as `workshop sft` reads it; the test rows "
                                       "are the questions (default: the profile's instruction set)")
    parser.add_argument("--corpus", help="jsonl/csv/tsv of passages in a 'text' field, optional 'focus' (default: the "
                                         "profile's, data/medquad-corpus/corpus.jsonl)")
    parser.add_argument("--output-dir", required=True, help="where metrics.json goes")
    parser.add_argument("--k", type=int, help="passages put in each prompt (default: the profile's)")
    parser.add_argument("--eval-rows", type=int, help="held-out questions whose reference answers' NLL is measured "
                                                      "(default: the profile's)")
    parser.add_argument("--generate-rows", type=int, help="of those, how many each system answers (default: the profile's)")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget per answer (default: the profile's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")
    parser.add_argument("--seed", type=int, default=42)


def _profile_for(args):
    """The active profile with the command's options applied (what the notebook reads as ``profile``)."""
    from ..profiles import active_profile

    profile = active_profile()
    changes = {"rag_k": args.k, "llm_eval_rows": args.eval_rows, "llm_generate_rows": args.generate_rows,
               "max_new_tokens": args.max_new_tokens, "llm_data": args.data, "rag_corpus": args.corpus}
    for name in ("k", "eval_rows", "generate_rows", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise WorkshopError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    return dataclasses.replace(profile, **{k: v for k, v in changes.items() if v is not None})


def _inputs(profile, args):
    """(held-out rows with focus, corpus rows, output folder): every check made before anything slow loads."""
    from ..corpus import load_corpus
    from ..data import load_instruction_files
    from ..paths import check_output_dir, display_path
    from ..tables import find_split_files

    adapter = Path(args.adapter).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise WorkshopError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json); give notebook 03's "
                            "outputs/<profile>/sft-adapter or a `workshop sft --output-dir`")
    out = check_output_dir(args.output_dir, args.overwrite)
    if out.resolve() == adapter.resolve():
        raise WorkshopError(f"{display_path(out)}: --output-dir must not be the --adapter folder")
    data = Path(profile.llm_data).expanduser()
    files = find_split_files(data) if data.is_dir() else {}
    if "test" not in files:
        raise DataError(f"{data}: --data must be a folder with train.jsonl and test.jsonl (the held-out questions)")
    fields = profile.llm_fields
    held_out = load_instruction_files(files, instruction_field=fields[0], response_field=fields[1], extra_fields=("focus",),
                                      max_rows={"test": profile.llm_eval_rows})["test"]
    corpus = load_corpus(profile.rag_corpus, held_out=held_out)  # refuses a passage holding a held-out answer
    return adapter, held_out, corpus, out


def run(args) -> int:
    """`workshop rag`: retrieve for every held-out question, score the four systems, write metrics.json."""
    from transformers import set_seed

    from ..metrics import paired_difference
    from ..paths import display_path, finish_run
    from ..recipes import rag_vs_finetune as recipe
    from ..recipes.preference_dpo import load_sft_model

    profile = _profile_for(args)
    adapter, held_out, corpus, out = _inputs(profile, args)
    set_seed(args.seed)
    questions, references = list(held_out["instruction"]), list(held_out["response"])
    passages, topics = [r["text"] for r in corpus], [r["focus"] for r in corpus]
    k = min(profile.rag_k, len(passages))
    encoder = recipe.load_encoder(profile)
    vectors, _ = recipe.encode_passages(encoder, passages, profile.rag_encoder)
    dense_hits = recipe.dense_search(encoder, vectors, questions, k)
    bm25_hits = recipe.bm25_search(recipe.bm25_index(passages), questions, k)
    rag_questions = [recipe.with_passages(q, [passages[i] for i in ids]) for q, ids in zip(questions, dense_hits)]
    model, tokenizer = load_sft_model(profile, adapter)
    model.eval()
    scores = recipe.score_systems(model, tokenizer, questions, rag_questions, references, profile=profile, encoder=encoder)
    kept = ("nll", "rougeL", "eos_rate", "repetition", "similarity", "decoding", "answered")
    record = {name: {m: scores[name][m] for m in kept} for name in recipe.SYSTEMS}
    record.update(
        k=k, retriever=f"dense ({profile.rag_encoder})", questions=len(questions), passages=len(passages),
        retrieval_recall_at_k=recipe.recall_at_k(dense_hits, held_out["focus"], topics, k),
        bm25_recall_at_k=recipe.recall_at_k(bm25_hits, held_out["focus"], topics, k),
        prompt_tokens={"question": _mean(recipe.prompt_tokens(tokenizer, questions)),
                       "with_passages": _mean(recipe.prompt_tokens(tokenizer, rag_questions))},
        nll_change_from_retrieval={name: paired_difference(scores[f"{name}_rag"]["nll_per_question"],
                                                           scores[name]["nll_per_question"]) for name in ("base", "sft")},
    )
    finish_run(out, record)
    change = record["nll_change_from_retrieval"]
    print(f"{len(questions)} held-out questions, top {k} of {len(passages):,} passages (recall@{k} "
          f"{record['retrieval_recall_at_k']:.0%}); NLL base {record['base']['nll']:.3f} -> {record['base_rag']['nll']:.3f} "
          f"with retrieval ({change['base']['mean']:+.3f} per question), SFT {record['sft']['nll']:.3f} -> "
          f"{record['sft_rag']['nll']:.3f} ({change['sft']['mean']:+.3f}); metrics.json in {display_path(out)}")
    return 0


def _mean(values) -> float:
    return sum(values) / max(1, len(values))
