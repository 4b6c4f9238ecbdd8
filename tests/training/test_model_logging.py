"""The policy as an MLflow model: whole, LoRA adapters only, or none; it loads back and generates."""

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient, _tracking_service
from transformers import AutoModelForCausalLM

from medrlvr.data.prompts import PromptBuilder
from medrlvr.models.actor_critic import LoraSettings, with_lora
from medrlvr.models.loading import load_causal_lm, tiny_config
from medrlvr.training.model_logging import MODEL_NAME, log_policy_model

pytestmark = pytest.mark.slow  # each case saves, logs and reloads a model (about 10 s)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # the process-wide store wins over the variable, and Lightning's MLFlowLogger sets it in in-process runs
    monkeypatch.setattr(_tracking_service.utils, "_tracking_uri", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("models", artifact_location=str(tmp_path / "artifacts"))
    return uri, client, client.create_run(experiment).info.run_id


@pytest.fixture
def base_folder(tmp_path, tokenizer):
    """A local base model folder (a 4-layer tiny Llama, so that adapters are a small part of it)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(len(tokenizer), hidden_size=128, num_layers=4))
    folder = tmp_path / "base"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def log(store, mode, policy, adapters, tokenizer, base_model):
    uri, _, run_id = store
    return log_policy_model(
        uri, run_id, mode, policy, adapters, tokenizer, PromptBuilder(tokenizer), base_model, max_new_tokens=4
    )


def test_true_logs_the_whole_policy_linked_to_the_run_and_it_generates(store, tokenizer):
    policy = load_causal_lm("tiny", tokenizer)
    info = log(store, "true", policy, None, tokenizer, "tiny")
    _, client, run_id = store
    model = mlflow.get_logged_model(info.model_id)
    assert (model.name, model.source_run_id) == (MODEL_NAME, run_id)
    assert info.flavors["transformers"]["task"] == "text-generation"
    assert "{prompt}" in info.metadata["prompt_template"] and info.metadata["adapters_only"] is False
    assert info.signature.params.to_dict()[0]["default"] == 4
    pipeline = mlflow.transformers.load_model(info.model_uri)
    text = pipeline("Which vitamin?\n\nA. C\nB. D", max_new_tokens=3, do_sample=False)[0]["generated_text"]
    assert isinstance(text, str) and len(text) > len("Which vitamin?")
    answers = mlflow.pyfunc.load_model(info.model_uri).predict(["Which vitamin?\n\nA. C\nB. D"])
    assert len(answers) == 1 and isinstance(answers[0], str)
    assert client.get_run(run_id).info.status == "FINISHED"


def test_adapters_log_a_small_model_that_loads_on_its_local_base(store, tokenizer, base_folder, tmp_path):
    base = load_causal_lm(str(base_folder), tokenizer)
    adapters = with_lora(base, LoraSettings(rank=4, top_layers=0, alpha=8, dropout=0.0))
    torch.nn.init.normal_(next(p for n, p in adapters.named_parameters() if "lora_B" in n))  # a trained adapter
    info = log(store, "adapters", base, adapters, tokenizer, str(base_folder))
    assert info.metadata["adapters_only"] is True
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "download")))
    assert folder_size(local / "peft") < folder_size(base_folder) / 10
    assert not (local / "model").exists()
    pipeline = mlflow.transformers.load_model(info.model_uri)
    ids = tokenizer("Which vitamin?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(pipeline.model(ids).logits, adapters(ids).logits, atol=1e-5)


def test_adapters_without_lora_log_the_whole_policy(store, tokenizer):
    info = log(store, "adapters", load_causal_lm("tiny", tokenizer), None, tokenizer, "tiny")
    assert info.metadata["adapters_only"] is False
    assert "model_binary" in info.flavors["transformers"]


def test_false_logs_no_model(store, tokenizer):
    _, client, run_id = store
    assert log(store, "false", load_causal_lm("tiny", tokenizer), None, tokenizer, "tiny") is None
    assert mlflow.search_logged_models(output_format="list") == []
    assert client.list_artifacts(run_id) == []
