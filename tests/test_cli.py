"""The CLI contract: names, exit codes, one-line errors with no traceback."""

import json
import subprocess
import sys

import pytest

from rlhf_engine.cli import main
from rlhf_engine.data.pairs import PreferencePair, read_pairs, write_pairs


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
    (["sweep", "--reward", "/no/rm", "--out", "OUT", "--methods", "ppo,sft"], "give each of ppo, grpo, rloo, dpo"),
    (["sweep", "--reward", "/no/rm", "--out", "OUT", "--methods", "ppo,dpo", "--betas", "grpo=0.1"],
     "METHOD one of --methods"),
    (["sweep", "--reward", "/no/rm", "--out", "OUT", "--methods", "grpo", "--set", "vf_coef=0.2"],
     "none of grpo has that setting"),
    (["sweep", "--reward", "/no/rm", "--out", "OUT", "--betas", "ppo=0.1"], "use it with --methods"),
    (["dpo", "--reward", "/no/rm", "--out", "OUT", "--data", "/no/pairs.jsonl"], "file not found"),
])
def test_user_errors_exit_2_with_one_line(argv, words, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


@pytest.mark.slow
def test_train_rm_ppo_sample_and_runs_from_the_command_line(tmp_path, tiny_model_dir, good_pairs, capsys):
    rm = tmp_path / "runs" / "rm"
    result = run_cli("train-rm", "--data", good_pairs, "--out", rm, "--model", tiny_model_dir, "--steps", "2",
                     "--quant", "none", "--pooling", "mean")
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    assert "Held-out agreement" in result.stdout  # the run ends by saying how it does against chance
    assert json.loads((rm / "reward_model.json").read_text())["pooling"] == "mean"
    ppo = tmp_path / "runs" / "ppo"
    result = run_cli("ppo", "--reward", rm, "--out", ppo, "--model", tiny_model_dir, "--steps", "2", "--quant",
                     "none", "--batch-size", "2", "--response-length", "4", "--kl-coef", "0.2", "--kl-estimator",
                     "k3", "--adaptive-kl")
    assert result.returncode == 0, result.stderr
    assert "step 2" in result.stdout
    assert "warning: The reward model rm does not agree" in result.stderr  # 1 held-out pair: never clear of chance
    config = json.loads((ppo / "config.json").read_text())["config"]
    assert (config["kl_coef"], config["kl_estimator"], config["adaptive_kl"]) == (0.2, "k3", True)
    assert "gemm_4bit_forward" not in result.stderr  # bitsandbytes' known, harmless hub-kernel warning: silenced
    # the rest in this process (the commands above showed exit codes and output of a process of their own)
    capsys.readouterr()
    assert main(["sample", "--model", tiny_model_dir, "--adapter", str(ppo), "--prompt", "Hello",
                 "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["runs", str(tmp_path / "runs")]) == 0
    listed = capsys.readouterr().out
    assert "rm" in listed and "ppo" in listed and listed.count("completed") == 2 and "objective/kl=" in listed
    assert main(["ppo", "--reward", str(rm), "--out", str(ppo), "--model", tiny_model_dir]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_commands_that_train_nothing_do_not_import_torch(good_pairs, tmp_path):
    """validate-data, runs, pairs and report start in about a second, not the seconds torch takes."""
    from rlhf_engine.runs.runfolder import RunFolder

    run = RunFolder(tmp_path / "runs" / "ppo-done")
    run.create("ppo", {"config": {"kl_coef": 0.05}}, 1)
    run.append_metrics({"step": 1, "objective/scores": 0.5, "objective/kl": 0.2, "beta": 0.05})
    run.set_status("completed", step=1)
    store = tmp_path / "pairs.sqlite"
    commands = [["validate-data", good_pairs], ["runs", tmp_path / "runs"], ["pairs", "--store", store, "add",
                good_pairs], ["pairs", "--store", store, "count"], ["report", run.path]]
    script = ("import sys; from rlhf_engine.cli import main\n"
              f"for argv in {[[str(a) for a in c] for c in commands]!r}:\n"
              "    assert main(argv) == 0, argv\n"
              "print('torch imported' if 'torch' in sys.modules else 'no torch')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no torch"
    assert (run.path / "report.html").is_file()


def test_a_bad_value_list_names_its_flag(tmp_path, capsys):
    assert main(["sweep", "--reward", str(tmp_path), "--out", str(tmp_path / "s"), "--kl-coefs", "0.1,abc"]) == 2
    assert "--kl-coefs '0.1,abc': kl_coef takes numbers, got 'abc'" in capsys.readouterr().err
    assert main(["sweep", "--reward", str(tmp_path), "--out", str(tmp_path / "s"), "--vary", "kl_estimator",
                 "--values", "k1,k7"]) == 2
    assert "--values 'k1,k7': kl_estimator must be one of" in capsys.readouterr().err


def test_make_demo_pairs_rejects_an_unknown_output_type(tmp_path, capsys):
    assert main(["make-demo-pairs", "--n", "2", "--out", str(tmp_path / "x.xlsx")]) == 2
    assert ".jsonl, .csv or .parquet" in capsys.readouterr().err


def test_make_demo_pairs_passes_completions_and_temperature(tmp_path, monkeypatch, capsys):
    import rlhf_engine.lab.demo as demo

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


def test_pairs_store_add_list_delete_export(good_pairs, tmp_path, capsys):
    store = tmp_path / "ws" / "pairs.sqlite"
    assert main(["pairs", "--store", str(store), "add", str(good_pairs)]) == 0
    assert main(["pairs", "--store", str(store), "count"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "6"
    assert main(["pairs", "--store", str(store), "list", "--search", "prompt 3"]) == 0
    listed = capsys.readouterr().out
    assert "'Prompt 3'" in listed and "'Prompt 4'" not in listed
    pair_id = int(listed.split()[0].lstrip("#"))
    assert main(["pairs", "--store", str(store), "delete", str(pair_id), "9999"]) == 2
    assert "deleted 1 pairs; no pair with id [9999]" in capsys.readouterr().out
    out = tmp_path / "export.parquet"
    assert main(["pairs", "--store", str(store), "export", str(out)]) == 0
    assert len(read_pairs(out)) == 5


def test_pairs_add_of_a_bad_file_stores_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    store = tmp_path / "pairs.sqlite"
    result = run_cli("pairs", "--store", store, "add", bad)
    assert result.returncode == 2 and "bad.jsonl: row 2" in result.stderr and "Traceback" not in result.stderr
    assert not store.exists() or main(["pairs", "--store", str(store), "count"]) == 0


def test_collect_stores_the_picked_answer(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from rlhf_engine.data.store import PairStore

    store = tmp_path / "pairs.sqlite"
    answers = iter(["x", "b", "s"])  # an invalid key is asked again; b stores; s skips; then input ends

    def fake_input(prompt=""):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    code = main(["collect", "--store", str(store), "--model", tiny_model_dir, "--max-new-tokens", "8",
                 "--prompt", "First?", "--prompt", "Second?", "--prompt", "Third?"])
    assert code == 0
    rows = PairStore(store).list()
    out = capsys.readouterr().out
    assert "stored 1 pairs" in out
    assert len(rows) == 1 and rows[0].pair.prompt == "First?" and rows[0].source == "collected"


@pytest.mark.parametrize("assignment, words", [
    ("nope=1", "expected FIELD=VALUE"),
    ("ppo_epochs=two", "'two' is not a valid int"),
    ("whiten_rewards=maybe", "not a valid bool"),
])
def test_bad_set_values_exit_2(assignment, words, tmp_path):
    result = run_cli("ppo", "--reward", tmp_path, "--out", tmp_path / "x", "--set", assignment)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr


def test_set_reaches_the_config():
    from rlhf_engine.cli import set_fields
    from rlhf_engine.config import PPOConfig

    fields = set_fields(PPOConfig, ["ppo_epochs=2", "cliprange=0.1", "whiten_rewards=true",
                                     "missing_eos_penalty=1.5", "lr_schedule=constant"])
    config = PPOConfig(**fields)
    assert (config.ppo_epochs, config.cliprange, config.whiten_rewards, config.missing_eos_penalty,
            config.lr_schedule) == (2, 0.1, True, 1.5, "constant")
