"""A method from outside the package (tests/toy_method.py: plain REINFORCE with a mean baseline), registered by its
module path through RLHF_WORKBENCH_METHODS, reaches everything that reads the registry: the CLI's commands, `sweep
--methods`, the policy page's method choice, a job in a process of its own (`run-job`), the report and the export.
One tiny run, trained once, serves the checks that need one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rlhf_engine.methods import registry

MODULE = "tests.toy_method"  # by its path from the repository root: in-process (pytest's pythonpath) and in a job


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    """The variable as a user sets it (the registry keeps the methods of each value: no reload)."""
    monkeypatch.setenv(registry.EXTRA_METHODS_ENV, MODULE)


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, trained_tiny_reward_dir) -> Path:
    """The tiny reward model, copied: a run may write its normalisation beside it."""
    return Path(shutil.copytree(trained_tiny_reward_dir, tmp_path_factory.mktemp("toy-rm") / "rm"))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, tiny_model_dir, reward_dir):
    """A 2-step toy run, prepared here and trained by `python -m rlhf_engine run-job` as the dashboard starts it
    (``ProcessJob``), from another working directory: the job finds tests.toy_method through its PYTHONPATH."""
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.runs.job import ProcessJob
    from rlhf_engine.runs.policy_job import prepare_policy_job
    from tests.toy_method import ToyConfig

    root = tmp_path_factory.mktemp("toy-run")
    model = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    config = ToyConfig(model=model, steps=2, batch_size=2, response_length=4, probe_prompts=2, probe_every=1,
                       samples_per_step=2, baseline_weight=0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(registry.EXTRA_METHODS_ENV, MODULE)
        run = prepare_policy_job(root / "runs" / "toy-run", config, reward_dir).run
        patch.chdir(root)  # not the repository: `tests` is importable only through the job's PYTHONPATH
        job = ProcessJob(run).start()
        state = job.join(timeout=600)
    log = (run.path / "process.log").read_text() if (run.path / "process.log").is_file() else ""
    assert state == "completed", f"{run.status()}\n{log[-4000:]}"
    return run


# -------------------------------------------------------------------------------------- the method itself

def test_the_mean_baseline_is_each_reward_minus_the_batch_mean():
    from tests.toy_method import mean_baseline_advantages

    rewards = torch.tensor([1.0, 2.0, 6.0])
    assert torch.allclose(mean_baseline_advantages(rewards), torch.tensor([-2.0, -1.0, 3.0]))
    assert torch.allclose(mean_baseline_advantages(rewards, weight=0.5), torch.tensor([-0.5, 0.5, 4.5]))
    assert torch.allclose(mean_baseline_advantages(rewards, weight=0.0), rewards)


def test_the_registry_imports_it_by_its_module_path():
    from tests.toy_method import ToyConfig, ToyTrainer

    method = registry.get("toy")
    assert registry.names()[-1] == "toy" and method.title == "Toy REINFORCE"
    assert method.config is ToyConfig and method.trainer_class() is ToyTrainer
    assert registry.of_config(ToyConfig()) is method and registry.is_policy_kind("toy")


# ------------------------------------------------------------------------------------------ the CLI

def test_the_cli_has_a_toy_command_with_its_own_flag(capsys):
    from rlhf_engine.cli import main, policy_config
    from rlhf_engine.cli.parser import build_parser

    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps its lines
    assert "--baseline-weight X" in help_text and "share of the batch's mean reward" in help_text
    assert "Toy REINFORCE raises answers" in help_text  # the summary is the command's description
    args = build_parser().parse_args(["toy", "--reward", "rm", "--out", "o", "--baseline-weight", "0.25",
                                      "--steps", "3"])
    config = policy_config(args, registry.get("toy").config)
    assert (type(config).__name__, config.baseline_weight, config.steps) == ("ToyConfig", 0.25, 3)


@pytest.mark.slow
def test_sweep_methods_trains_a_toy_member_beside_ppo(tmp_path, tiny_model_dir, reward_dir, capsys):
    """`sweep --methods ppo,toy` plans a member of kind toy with its own setting (--set) and β (--betas), trains
    it beside PPO on one base model (core.batched; ~2 s on the tiny model), and its report names the method."""
    from rlhf_engine.cli import main
    from rlhf_engine.lab.report import write_report
    from rlhf_engine.runs.runfolder import RunFolder

    out = tmp_path / "runs" / "mix"
    code = main(["sweep", "--reward", str(reward_dir), "--out", str(out), "--methods", "ppo,toy",
                 "--betas", "toy=0.1", "--set", "baseline_weight=0.5", "--model", tiny_model_dir, "--quant", "none",
                 "--steps", "2", "--batch-size", "2", "--response-length", "4", "--probe-prompts", "2",
                 "--probe-every", "1"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "mix-toy-beta-0.1: step 2  objective/scores" in printed.out  # its followed metrics, printed each step
    record = json.loads((out / "sweep.json").read_text())
    assert record["vary"] == "method" and [m["label"] for m in record["members"]] == ["ppo-beta-0.05", "toy-beta-0.1"]
    toy = RunFolder(tmp_path / "runs" / "mix-toy-beta-0.1")
    saved = toy.config()
    assert saved["kind"] == "toy" and (saved["config"]["kl_coef"], saved["config"]["baseline_weight"]) == (0.1, 0.5)
    assert "baseline_weight" not in RunFolder(tmp_path / "runs" / "mix-ppo-beta-0.05").config()["config"]
    assert toy.status()["state"] == "completed" and [r["step"] for r in toy.metrics()] == [1, 2]
    assert "Toy REINFORCE" in write_report(out).read_text()


# ---------------------------------------------------------------------------- a run in its own process

@pytest.mark.slow
def test_it_trains_two_steps_through_run_job_and_reports_and_exports(toy_run, tmp_path):
    """One test for the one trained run (on several xdist workers, separate tests would each train it)."""
    from transformers import AutoModelForCausalLM

    from rlhf_engine.lab.report import write_report
    from rlhf_engine.runs.export import export_run

    status, rows = toy_run.status(), toy_run.metrics()
    assert (status["state"], status["step"]) == ("completed", 2)
    assert [r["step"] for r in rows] == [1, 2]
    assert all("loss" in r and "objective/scores" in r and "objective/kl" in r for r in rows)
    assert all(r["grad_norm"] > 0 for r in rows)  # its loss reached the adapters
    assert (toy_run.path / "policy" / "adapter_model.safetensors").is_file()
    assert json.loads((toy_run.path / "config.json").read_text())["config"]["baseline_weight"] == 0.5
    assert {p["policy"] for p in toy_run.probes()} == {"reference", "policy"}
    assert "Toy REINFORCE: beta=0.05" in toy_run.events()  # the trainer's settings line, from the job process

    # the report draws its charts
    html = write_report(toy_run.path, tmp_path / "report.html").read_text()
    assert "Toy REINFORCE policy" in html
    for title, _ in registry.get("toy").panels:  # each a chart's title in the plotly JSON
        assert f'"title":{{"text":{json.dumps(title)}}}' in html, title
    assert "Clip fraction" not in html and "Value loss" not in html  # PPO's charts are not drawn for it

    # its export is a merged model named for its method
    out = export_run(toy_run.path, tmp_path / "export")
    card = (out / "README.md").read_text()
    assert "a Toy REINFORCE policy trained with RLHF Workbench" in card and "- toy" in card
    assert "| `baseline_weight` | `0.5` |" in card
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2


# ---------------------------------------------------------------------------------------- the policy page

def test_the_policy_page_offers_it_with_a_form_of_its_fields(tmp_path, monkeypatch, tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    from rlhf_engine.config import ModelConfig, to_dict

    workspace = tmp_path / "ws"
    (workspace / "runs").mkdir(parents=True)
    (workspace / "model.json").write_text(json.dumps(to_dict(ModelConfig(source=tiny_model_dir, quant="none"))))
    monkeypatch.setenv("RLHF_WORKSPACE", str(workspace))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120).run()
    at.switch_page("pages/ppo.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.segmented_control(key="policy.method").options[-1] == "Toy REINFORCE"  # shown by its title
    assert "Toy REINFORCE" in at.title[0].value
    at.segmented_control(key="policy.method").set_value("toy").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])
    assert "Toy REINFORCE raises answers" in shown
    weight = at.number_input(key="toy.baseline_weight")
    assert weight.value == 1.0 and weight.label.startswith("baseline_weight — share of the batch's mean reward")

