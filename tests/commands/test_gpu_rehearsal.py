"""scripts/gpu_rehearsal.py on a machine without a GPU: the one-line refusal, the random Llama 3-shaped model
at a tiny scale, the report (a failing step is recorded and the next one still runs), the time budget and the
slimmed wheel. The GPU steps themselves run only on a GPU machine (docs/benchmarks.md, "GPU rehearsal").
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_rehearsal.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_rehearsal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_one_line_and_exit_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible even on a GPU machine
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--pass", "1"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_rehearsal: no CUDA GPU here ("), done.stderr
    assert "run it on a machine with an NVIDIA GPU" in lines[0]
    assert time.perf_counter() - start < 60
    # and it decides before importing torch or transformers
    probe = ("import runpy, sys\nsys.argv = ['gpu_rehearsal.py']\ntry:\n"
             f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\nexcept SystemExit as e:\n"
             "    print(e.code, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr


def test_full_shape_is_llama3_8b():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = load_script().llama3_shape()
    assert {k: shape[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                  "intermediate_size", "vocab_size", "max_position_embeddings")} == {
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192}
    config = LlamaConfig(**shape)
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))
    assert rope == 500000.0 and not config.tie_word_embeddings
    with torch.device("meta"):
        assert LlamaForCausalLM(config).num_parameters() == 8_030_261_248  # Llama 3 8B's count


def test_tiny_random_model_with_llama3_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workshop_utils.recipes.qlora_llama3_sft import ensure_distinct_pad

    rehearsal = load_script()
    shape = rehearsal.llama3_shape(layers=1, hidden=64)
    assert shape["vocab_size"] == 128256 and shape["intermediate_size"] % 64 == 0
    info = rehearsal.build_random_llama(tmp_path / "model", shape=shape, device="cpu")
    assert not info["reused"] and info["tokenizer_entries"] == 128256
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt"))]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert len(tokenizer) == model.get_input_embeddings().num_embeddings == 128256
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
                                                            "<|start_header_id|>", "<|reserved_special_token_250|>")}
    assert ids == {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eot_id|>": 128009,
                   "<|start_header_id|>": 128006, "<|reserved_special_token_250|>": 128255}
    text = "What are the symptoms of anemia?"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer.decode([100000]) == "[w100000]"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    assert chat.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    assert tokenizer.pad_token is None  # as Meta ships Llama 3; notebook 03's fix then picks Llama 3's reserved token
    ensure_distinct_pad(tokenizer, model)
    assert tokenizer.pad_token == "<|reserved_special_token_250|>"
    assert model(**tokenizer([chat], return_tensors="pt")).logits.shape[-1] == 128256
    assert rehearsal.build_random_llama(tmp_path / "model", shape=shape, device="cpu")["reused"]


def test_report_records_a_failure_and_runs_on(tmp_path, monkeypatch):
    rehearsal = load_script()

    def broken(args):
        raise ValueError("no adapter here\nsecond line of the message")

    monkeypatch.setattr(rehearsal, "STEPS", {
        "build": lambda args: {"gpu": "test GPU"},
        "bnb": broken,
        "merge": lambda args: {"train_tokens_per_second": 1234.5, "generate_tokens_per_second": 42.0},
    })
    args = rehearsal.parse_args(["--pass", "1", "--report", str(tmp_path / "report"), "--work", str(tmp_path / "work")])
    results = rehearsal.run_all(["build", "bnb", "merge"], args, isolate=False)
    assert [r["status"] for r in results] == ["passed", "failed", "passed"]
    assert results[1]["error"] == "ValueError: no adapter here"
    json_file, md_file = rehearsal.write_report(results, args, args.report)
    data = json.loads(json_file.read_text())
    assert data["gpu"] == "test GPU" and data["pass"] == "1" and len(data["steps"]) == 3
    assert data["model_shape"]["hidden_size"] == 4096 and data["steps"][2]["metrics"]["generate_tokens_per_second"] == 42.0
    rows = {line.split("|")[1].strip(): line for line in md_file.read_text().splitlines() if line.startswith("| ")}
    assert "failed" in rows["bnb"] and "ValueError: no adapter here" in rows["bnb"]
    assert "1,234.5" in rows["merge"] and "42.0" in rows["merge"] and "passed" in rows["merge"]


def test_time_budget_marks_the_rest_not_run(tmp_path, monkeypatch):
    rehearsal = load_script()
    monkeypatch.setattr(rehearsal, "STEPS", {"build": lambda args: time.sleep(0.3), "bnb": lambda args: {}})
    args = rehearsal.parse_args(["--budget-s", "0.2", "--report", str(tmp_path), "--work", str(tmp_path)])
    results = rehearsal.run_all(["build", "bnb"], args, isolate=False, min_step_s=0.0)
    assert [r["status"] for r in results] == ["passed", "not run (time)"]
    assert "--budget-s 0.2" in results[1]["error"]


@pytest.mark.parametrize("argv", [["--steps", "1"], ["--hidden", "100"]])
def test_bad_options_stop_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        load_script().parse_args(argv)
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()[-1:]) == 1


def test_slim_wheel_drops_a_folder_and_its_record_lines(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
        z.writestr("studio/app.js", "big")
        z.writestr("pkg-1.0.dist-info/RECORD", "pkg/__init__.py,sha256=a,6\nstudio/app.js,sha256=b,3\n")
    load_script().slim_wheel(wheel, "studio")
    with zipfile.ZipFile(wheel) as z:
        assert z.namelist() == ["pkg/__init__.py", "pkg-1.0.dist-info/RECORD"]
        assert z.read("pkg-1.0.dist-info/RECORD").decode() == "pkg/__init__.py,sha256=a,6\n"
