"""scripts/benchmark_sft.py's decoding part: the dev split it chooses on, and the rule it chooses by.

The repetition penalty the profiles score with was picked on a dev split of *training* topics; these tests
check on the committed data that the split really shares no topic and no answer with what it trains on, and
that the rule picks what its docstring promises (no model is loaded: the run itself takes ~20 minutes).
"""

from __future__ import annotations

import importlib.util
import json
import sys

from conftest import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_sft", ROOT / "scripts" / "benchmark_sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_split_holds_whole_training_topics():
    bench = load_script()
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_medquad import topic_keys

    data = ROOT / "data" / "medquad"
    raw = [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [{"instruction": r["instruction"], "response": r["response"]} for r in raw]
    dev, rest = bench.dev_split(train, data, rows=100, seed=1)
    assert 100 <= len(dev) < 130 and len(dev) + len(rest) == len(train)
    topic = dict(zip(((r["instruction"], r["response"]) for r in raw), topic_keys(raw)))
    dev_topics = {topic[(r["instruction"], r["response"])] for r in dev}
    assert not dev_topics & {topic[(r["instruction"], r["response"])] for r in rest}
    assert not {r["response"] for r in dev} & {r["response"] for r in rest}
    test = [json.loads(line) for line in (data / "test.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert not {r["instruction"] for r in dev} & {r["instruction"] for r in test}  # dev comes from training rows only
    assert bench.dev_split(train, data, rows=100, seed=1) == (dev, rest)  # seeded


def test_penalty_rule_takes_the_best_stop_rate_that_keeps_rouge():
    bench = load_script()

    def scores(stop, rouge):
        return {"eos_rate": stop, "rougeL": rouge}

    # the figures of the 2026-12-03 run: 1.1 stops as often as 1.3 and keeps ROUGE-L; 1.3 costs 0.04
    run = {1.0: scores(0.95, 0.235), 1.1: scores(1.0, 0.236), 1.2: scores(0.97, 0.204), 1.3: scores(1.0, 0.195)}
    assert bench.choose_penalty(run) == 1.1
    # a penalty that stops more but costs more than 0.02 ROUGE-L is not eligible; greedy always is
    assert bench.choose_penalty({1.0: scores(0.9, 0.30), 1.2: scores(1.0, 0.27)}) == 1.0
    assert bench.choose_penalty({1.0: scores(0.9, 0.30), 1.2: scores(1.0, 0.285)}) == 1.2
