"""Time estimates hold on the machine in front of you: the calibration probe, its cache, the scaling, the
GPU label, and the check of a `workshop run-all` against the estimates."""

from __future__ import annotations

import time

import pytest

from workshop_utils import WorkshopError, estimates, estimates_probe
from workshop_utils.tooling import estimates_check
from workshop_utils.profiles import make_profile
from workshop_utils.commands.runall import NotebookRun, write_summary

REFERENCE = {"train384_gflops": 40.0, "train576_gflops": 60.0, "matmul_gflops": 150.0, "decode_gflops": 20.0,
             "copy_gbs": 15.0, "python_mops": 8.0}


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """A fake probe (counts its runs, returns ``probe.figures``), a fresh cache and no calibration yet."""
    monkeypatch.setattr(estimates_probe, "cache_path", lambda: tmp_path / estimates_probe.CACHE_NAME)
    monkeypatch.delenv(estimates_probe.DISABLE_ENV, raising=False)
    monkeypatch.setattr(estimates, "REFERENCE_PROBE", dict(REFERENCE))
    monkeypatch.setattr(estimates, "_CALIBRATION", None)
    monkeypatch.setattr(estimates, "_LAST_DEVICE", "cpu")

    class Fake:
        figures = dict(REFERENCE)
        runs = 0
        fp = {"cpu": "Test CPU", "flags": ["avx2"], "cores": 2, "threads": 2, "torch": "x", "probe": 1}
        busy = False

    def run_probe(budget_s=0.2, limit_s=6.0):
        Fake.runs += 1
        return dict(Fake.figures)

    monkeypatch.setattr(estimates_probe, "run_probe", run_probe)
    monkeypatch.setattr(estimates_probe, "fingerprint", lambda: dict(Fake.fp))
    monkeypatch.setattr(estimates_probe, "machine_busy", lambda: (Fake.busy, 3.0 if Fake.busy else 0.1))
    return Fake


_SMOKE = []


def smoke():
    if not _SMOKE:  # made once: the offline profiles find (and on a first run convert) the local SmolLM2
        _SMOKE.append(make_profile("smoke", "test", cuda=False, hub=False))
    return _SMOKE[0]


def test_cache_is_reused_while_the_fingerprint_matches(probe):
    first, source = estimates_probe.measured_figures()
    assert probe.runs == 1 and source.startswith("measured now")
    again, source = estimates_probe.measured_figures()
    assert probe.runs == 1 and again == first and source.startswith("cached")
    assert estimates_probe.cache_path().is_file()


def test_probe_runs_again_when_the_fingerprint_changes(probe):
    estimates_probe.measured_figures()
    probe.fp = {**probe.fp, "cores": 1, "threads": 1}  # e.g. `taskset -c 0`
    estimates_probe.measured_figures()
    assert probe.runs == 2
    probe.fp = {**probe.fp, "cores": 2, "threads": 2}  # back to the first: its entry is still cached
    estimates_probe.measured_figures()
    assert probe.runs == 2


def test_busy_probe_is_retaken_keeping_the_best(probe):
    probe.busy = True
    probe.figures = {k: v / 4 for k, v in REFERENCE.items()}
    estimates_probe.measured_figures()
    probe.busy = False
    probe.figures = dict(REFERENCE)
    figures, _ = estimates_probe.measured_figures()
    assert probe.runs == 2 and figures == REFERENCE
    estimates_probe.measured_figures()
    assert probe.runs == 2  # idle now: cached


def test_broken_cache_file_is_measured_again(probe):
    estimates_probe.cache_path().write_text("{not json", encoding="utf-8")
    figures, _ = estimates_probe.measured_figures()
    assert probe.runs == 1 and figures == REFERENCE


def test_a_machine_twice_as_slow_doubles_every_cpu_estimate(probe):
    fast = estimates.series_estimate(smoke()).per_notebook
    probe.fp = {**probe.fp, "cpu": "Slower CPU"}
    probe.figures = {k: v / 2 for k, v in REFERENCE.items()}
    estimates.calibration(refresh=True)
    slow = estimates.series_estimate(smoke()).per_notebook
    assert slow.keys() == fast.keys()
    for name in fast:
        assert slow[name] == pytest.approx(2 * fast[name]), name
    assert estimates.calibration().speed["forward"] == pytest.approx(0.5)


def test_reference_figures_give_the_reference_rates(probe):
    profile = smoke()
    rate = estimates.CLF_TRAIN_SAMPLES_PER_S[("cpu", "minilm")]
    assert estimates.classifier_train_seconds(profile, 280, 1) == pytest.approx(280 / rate)
    assert estimates.nll_seconds(profile, 10) == pytest.approx(10 * 130 / estimates.NLL_TOKENS_PER_S[("cpu", "small")])
    assert "1x the reference machine" in estimates.calibration_line(profile)


def test_failed_probe_falls_back_to_core_count_with_the_reason(probe, monkeypatch):
    def broken(budget_s=0.2, limit_s=6.0):
        raise RuntimeError("no BLAS here")

    monkeypatch.setattr(estimates_probe, "run_probe", broken)
    cal = estimates.calibration(refresh=True)
    assert not cal.speed and "no BLAS here" in cal.reason
    assert cal.factor("llm_train") == estimates.cpu_scale()
    assert "core count" in estimates.calibration_line(smoke()) and "no BLAS here" in estimates.calibration_line(smoke())


def test_probe_can_be_turned_off(probe, monkeypatch):
    monkeypatch.setenv(estimates_probe.DISABLE_ENV, "0")
    cal = estimates.calibration(refresh=True)
    assert probe.runs == 0 and not cal.speed and estimates_probe.DISABLE_ENV in cal.reason


def test_gpu_estimates_are_labelled_not_measured(probe, capsys):
    gpu = make_profile("gpu", "test", cuda=True, hub=True)
    est = estimates.series_estimate(gpu)
    assert not est.measured and "not measured" in est.label and "not measured" in est.total_text()
    assert "guess" in estimates.calibration_line(gpu)
    assert "not measured" in estimates.announce("SFT", estimates.sft_train_seconds(gpu))
    assert probe.runs == 0  # a GPU estimate needs no CPU probe
    cpu = estimates.series_estimate(smoke())
    assert cpu.measured and cpu.label == "estimate"
    assert "not measured" not in estimates.announce("SFT", estimates.sft_train_seconds(smoke()))


def write_run(folder, profile, seconds: dict[str, float]):
    runs = [NotebookRun(name=name, seconds=sec, cells=3, status="ok") for name, sec in seconds.items()]
    runs.append(NotebookRun(name="99_extra", seconds=1.0, status="failed", failure="cell 2 (`x | y`): boom"))
    folder.mkdir(parents=True, exist_ok=True)
    md, _ = write_summary(folder, profile, runs, [], [], sum(seconds.values()))
    return md


def test_check_compares_a_run_all_summary_with_the_estimates(probe, tmp_path, capsys):
    profile = smoke()
    est = estimates.series_estimate(profile).per_notebook
    measured = {name: sec * 1.2 for name, sec in est.items()}
    md = write_run(tmp_path / "run-all" / "20261205-150000", profile, measured)
    assert estimates_check.read_run_summary(tmp_path / "run-all") == ("smoke", pytest.approx(measured, abs=0.06))
    rows = estimates_check.check_run(md)
    assert [r[0] for r in rows] == list(est) and all(r[3] == pytest.approx(1.2, abs=0.01) for r in rows)
    assert estimates_check.main(["--check", str(md)]) == 0
    assert f"{len(est)} of {len(est)} notebooks within 1.5x" in capsys.readouterr().out
    slow = {**measured, "03_qlora_llama3_sft": est["03_qlora_llama3_sft"] * 2}
    assert estimates_check.main(["--check", str(write_run(tmp_path / "slow", profile, slow))]) == 1
    assert "OUTSIDE 1.5x" in capsys.readouterr().out


def test_check_names_a_wrong_path(tmp_path, capsys):
    with pytest.raises(WorkshopError, match="summary.md"):
        estimates_check.read_run_summary(tmp_path)
    assert estimates_check.main(["--check", str(tmp_path / "nope.md")]) == 2
    assert "error:" in capsys.readouterr().err


def test_probe_gives_up_past_its_time_limit():
    with pytest.raises(estimates_probe.ProbeTooSlow, match="ran past 0.001 s"):
        estimates_probe.run_probe(limit_s=0.001)
    assert estimates_probe._LIMIT[0] == float("inf")  # the next probe has no stale deadline


def test_real_probe_is_short_and_leaves_the_random_state_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    start = time.perf_counter()
    try:
        figures = estimates_probe.run_probe()
    except estimates_probe.ProbeTooSlow:  # a machine busy with other jobs: the limit is what keeps it short
        figures = dict.fromkeys(estimates_probe.FIGURES, 1.0)
    assert time.perf_counter() - start < 10
    assert torch.equal(torch.rand(3), expected)
    assert set(figures) == set(estimates_probe.FIGURES) and all(v > 0 for v in figures.values())


def test_a_probe_too_slow_is_not_retried_at_once(probe, monkeypatch):
    def too_slow(budget_s=0.2, limit_s=6.0):
        probe.runs += 1
        raise estimates_probe.ProbeTooSlow("the probe ran past 6 s (machine busy?)")

    monkeypatch.setattr(estimates_probe, "run_probe", too_slow)
    for _ in range(2):
        cal = estimates.calibration(refresh=True)
        assert not cal.speed and "busy" in cal.reason
    assert probe.runs == 1  # the second process fell back without probing


def test_fingerprint_follows_affinity_and_threads():
    import os

    import torch

    fp = estimates_probe.fingerprint()
    assert fp["cores"] == len(os.sched_getaffinity(0)) and fp["threads"] == torch.get_num_threads()
    assert fp["torch"] == torch.__version__ and isinstance(fp["flags"], list)
    assert len(estimates_probe.fingerprint_key(fp)) == 16
