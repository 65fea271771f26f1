"""The CLI contract: names, exit codes, one-line errors with no traceback."""

import json
import subprocess
import sys

import pytest

from rlhf_engine.cli import main
from rlhf_engine.data import PreferencePair, read_pairs, write_pairs


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rlhf_engine", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture
def good_pairs(tmp_path):
    path = tmp_path / "pairs.csv"
    write_pairs([PreferencePair(f"Prompt {i}", "Great, lovely.", "Bad, awful.") for i in range(6)], path)
    return path


def test_validate_data_prints_the_pair_count(good_pairs, capsys):
    assert main(["validate-data", str(good_pairs)]) == 0
    assert capsys.readouterr().out.strip() == "6 pairs"


def test_a_bad_file_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "", "rejected": "c"}\n')
    result = run_cli("validate-data", bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.jsonl" in lines[0] and "row 2" in lines[0] and "'chosen' is empty" in lines[0]


@pytest.mark.parametrize("argv, words", [
    (["ppo", "--reward", "nowhere", "--out", "x", "--steps", "0"], "positive integer"),
    (["ppo", "--reward", "nowhere", "--out", "x", "--kl-estimator", "k9"], "invalid choice"),
    (["ppo", "--reward", "nowhere", "--out", "x", "--kl-coef", "-1"], "number >= 0"),
    (["train-rm", "--data", "x.csv"], "required"),
    (["train-rm", "--data", "x.csv", "--out", "y", "--pooling", "max"], "invalid choice"),
    (["ppo", "--reward", "nowhere", "--out", "x", "--temperature", "0"], "number > 0"),
    (["make-demo-pairs", "--n", "2", "--out", "x.jsonl", "--temperature", "-1"], "number > 0"),
])
def test_bad_flags_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["ppo", "--reward", "/no/such/rm", "--out", "OUT"], "holds no trained reward model"),
    (["resume", "/no/such/run"], "no run at"),
    (["validate-data", "/no/such/file.csv"], "file not found"),
    (["sample", "--model", "./no/such/model", "--prompt", "hi"], "model folder not found"),
    (["make-demo-pairs", "--n", "2", "--out", "OUT.jsonl", "--completions", "1"], "at least 2"),
])
def test_user_errors_exit_2_with_one_line(argv, words, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_train_rm_ppo_sample_and_runs_from_the_command_line(tmp_path, tiny_model_dir, good_pairs):
    rm = tmp_path / "runs" / "rm"
    result = run_cli("train-rm", "--data", good_pairs, "--out", rm, "--model", tiny_model_dir, "--steps", "2",
                     "--quant", "none", "--pooling", "mean")
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    assert json.loads((rm / "reward_model.json").read_text())["pooling"] == "mean"
    ppo = tmp_path / "runs" / "ppo"
    result = run_cli("ppo", "--reward", rm, "--out", ppo, "--model", tiny_model_dir, "--steps", "2", "--quant",
                     "none", "--batch-size", "2", "--response-length", "4", "--kl-coef", "0.2", "--kl-estimator",
                     "k3", "--adaptive-kl")
    assert result.returncode == 0, result.stderr
    assert "step 2" in result.stdout
    config = json.loads((ppo / "config.json").read_text())["config"]
    assert (config["kl_coef"], config["kl_estimator"], config["adaptive_kl"]) == (0.2, "k3", True)
    result = run_cli("sample", "--model", tiny_model_dir, "--adapter", ppo, "--prompt", "Hello", "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    result = run_cli("runs", tmp_path / "runs")
    assert result.returncode == 0
    assert "rm" in result.stdout and "ppo" in result.stdout and result.stdout.count("completed") == 2
    result = run_cli("ppo", "--reward", rm, "--out", ppo, "--model", tiny_model_dir)
    assert result.returncode == 2 and "already holds a run" in result.stderr


def test_make_demo_pairs_rejects_an_unknown_output_type(tmp_path, capsys):
    assert main(["make-demo-pairs", "--n", "2", "--out", str(tmp_path / "x.xlsx")]) == 2
    assert ".jsonl, .csv or .parquet" in capsys.readouterr().err


def test_make_demo_pairs_passes_completions_and_temperature(tmp_path, monkeypatch, capsys):
    import rlhf_engine.demo as demo

    seen = {}

    def fake(n, config, **kwargs):
        seen.update(kwargs, n=n, source=config.source)
        return [PreferencePair("p", "good", "bad")] * n

    monkeypatch.setattr(demo, "make_demo_pairs", fake)
    out = tmp_path / "pairs.jsonl"
    argv = ["make-demo-pairs", "--n", "3", "--out", str(out), "--completions", "8", "--temperature", "0.9"]
    assert main(argv) == 0
    assert seen["completions_per_prompt"] == 8 and seen["temperature"] == 0.9 and seen["n"] == 3
    assert len(read_pairs(out)) == 3 and "wrote 3 pairs" in capsys.readouterr().out
