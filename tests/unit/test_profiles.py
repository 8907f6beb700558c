import pytest

from workshop_utils import WorkshopError, profiles


def test_smoke_profile_is_offline_and_small(monkeypatch):
    monkeypatch.setenv("WORKSHOP_PROFILE", "smoke")
    p = profiles.detect_profile()
    assert p.name == "smoke" and not p.hub
    assert "WORKSHOP_PROFILE=smoke" in p.reason
    assert p.clf_train_rows and p.clf_train_rows <= 512
    assert p.sft_max_steps <= 300 and p.llm_eval_rows <= 32
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # applying an offline profile switches the libraries off the hub


def test_unknown_profile_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("WORKSHOP_PROFILE", "turbo")
    with pytest.raises(WorkshopError) as err:
        profiles.detect_profile(apply=False)
    assert "turbo" in str(err.value) and "\n" not in str(err.value)


def test_hf_hub_offline_is_respected_without_probe(monkeypatch):
    monkeypatch.delenv("WORKSHOP_PROFILE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(profiles.socket, "create_connection", lambda *a, **k: pytest.fail("probed the hub"))
    p = profiles.detect_profile(apply=False)
    assert p.name == "offline"
    assert "HF_HUB_OFFLINE=1" in p.reason


def test_probe_is_bounded_and_picks_offline(monkeypatch):
    import threading
    import time

    monkeypatch.delenv("WORKSHOP_PROFILE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    profiles._hub_cache.clear()

    release = threading.Event()

    def hang(*a, **k):  # a DNS lookup that ignores the socket timeout
        release.wait(30)
        raise TimeoutError("released by the test")  # end the probe thread cleanly, as a real timeout would

    monkeypatch.setattr(profiles.socket, "create_connection", hang)
    start = time.monotonic()
    try:
        reachable, why = profiles.hub_status(timeout=0.5)
        assert not reachable and "did not answer" in why
        assert time.monotonic() - start < 3
        p = profiles.detect_profile(apply=False)
        assert p.name == "offline"
    finally:
        release.set()
        profiles._hub_cache.clear()


def test_hub_reachable_without_cuda_gives_cpu_profile(monkeypatch):
    monkeypatch.delenv("WORKSHOP_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "hub_status", lambda timeout=2.0: (True, "huggingface.co answered"))
    monkeypatch.setattr(profiles, "cuda_status", lambda: (False, "no CUDA GPU"))
    p = profiles.detect_profile(apply=False)
    assert p.name == "cpu" and p.hub and p.device == "cpu"
    assert p.clf_model == profiles.MINILM_HUB and p.clf_data == profiles.GLUE


def test_gpu_profile_uses_the_real_models(monkeypatch):
    monkeypatch.delenv("WORKSHOP_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "hub_status", lambda timeout=2.0: (True, "ok"))
    monkeypatch.setattr(profiles, "cuda_status", lambda: (True, "CUDA GPU: Tesla T4"))
    monkeypatch.setattr(profiles, "gpu_precision", lambda: "fp16")
    p = profiles.detect_profile(apply=False)
    assert p.name == "gpu" and p.precision == "fp16" and p.load_in_4bit
    assert "bert-base-uncased" in p.clf_model and p.clf_data_config == "mrpc"
    assert "llama-3-8b" in p.llm_model.lower()


def test_gpu_profile_without_gpu_is_refused(monkeypatch):
    monkeypatch.setenv("WORKSHOP_PROFILE", "gpu")
    monkeypatch.setattr(profiles, "hub_status", lambda timeout=2.0: (True, "ok"))
    monkeypatch.setattr(profiles, "cuda_status", lambda: (False, "no CUDA GPU"))
    with pytest.raises(WorkshopError, match="needs a CUDA GPU"):
        profiles.detect_profile(apply=False)


def test_forced_hub_profile_offline_is_refused(monkeypatch):
    monkeypatch.setenv("WORKSHOP_PROFILE", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WorkshopError, match="needs the Hugging Face Hub"):
        profiles.detect_profile(apply=False)


def test_table_names_models_data_and_time(monkeypatch):
    monkeypatch.setenv("WORKSHOP_PROFILE", "offline")
    table = profiles.detect_profile().table()
    for word in ("profile", "why", "classifier model", "LLM", "expected time", "offline"):
        assert word in table
    assert "/work/" not in table and "/root/" not in table  # no machine paths in notebook outputs


def test_offline_and_smoke_teach_the_cpu_profiles_model_on_medquad():
    from pathlib import Path

    offline = profiles.make_profile("offline", "", cuda=False, hub=False)
    smoke = profiles.make_profile("smoke", "", cuda=False, hub=False)
    cpu = profiles.make_profile("cpu", "", cuda=False, hub=True)
    assert offline.llm_model == smoke.llm_model and Path(offline.llm_model).name.startswith("smollm2-135m-instruct")
    assert (Path(offline.llm_model) / "model.safetensors").is_file()
    assert cpu.llm_model == profiles.SMOLLM2  # the same model from the hub
    assert offline.llm_data == smoke.llm_data == cpu.llm_data and Path(offline.llm_data).name == "medquad"
    # smoke trains fewer rows and steps with the same recipe, never another model
    for setting in ("sft_learning_rate", "lora_r", "lora_alpha", "lora_dropout", "sft_max_length", "sft_batch_size", "load_in_4bit"):
        assert getattr(offline, setting) == getattr(smoke, setting), setting
    assert smoke.sft_max_steps < offline.sft_max_steps and smoke.llm_train_rows < 3000


def test_show_is_a_table_in_jupyter_and_text_elsewhere(monkeypatch, capsys):
    import sys
    import types

    profile = profiles.make_profile("smoke", "because <tests> & CI", cuda=False, hub=False)
    profile.show()  # pytest is not a Jupyter kernel: aligned text
    assert "because <tests> & CI" in capsys.readouterr().out
    html = profile.html()
    assert html.count("<tr>") == len(profile.table_rows())
    assert "because &lt;tests&gt; &amp; CI" in html and "<tests>" not in html  # values are escaped
    shown = []  # in a kernel (a shell with a .kernel), the same rows go out as HTML
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    kernel_shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel_shell))
    profile.show()
    assert len(shown) == 1 and shown[0].data == html
