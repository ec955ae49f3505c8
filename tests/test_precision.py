"""Precision chosen from the hardware: every branch of `auto`, the warnings, and fp16 loss scaling."""

import warnings

import pandas as pd
import pytest
import torch

from pipeline import precision
from pipeline.train.batches import TripleBatches
from pipeline.train.context import Context
from pipeline.train.loop import LoopConfig, fit
from pipeline.train.resume import fingerprint
from tests.conftest import make_tiny_bert, make_triples_dataset

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture(autouse=True)
def fresh_warnings():
    precision._warn_once.cache_clear()
    yield
    precision._warn_once.cache_clear()


def hardware(monkeypatch, *, cuda_bf16: bool = False, onednn: bool = True, instructions: bool = False,
             machine: str = "x86_64") -> None:
    monkeypatch.setattr(precision, "cuda_bf16", lambda: cuda_bf16)
    monkeypatch.setattr(precision, "onednn_bf16", lambda: onednn)
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: instructions)
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)


def test_auto_is_bf16_on_a_cuda_gpu_with_bf16_units(monkeypatch):
    hardware(monkeypatch, cuda_bf16=True)
    assert precision.resolve("auto", CUDA) == "bf16"


def test_auto_is_fp16_on_a_cuda_gpu_without_bf16(monkeypatch):
    hardware(monkeypatch, cuda_bf16=False, instructions=True)  # the CPU's bf16 must not leak into the GPU's choice
    assert precision.resolve("auto", CUDA) == "fp16"


def test_auto_is_bf16_on_a_cpu_with_native_bf16(monkeypatch):
    hardware(monkeypatch, cuda_bf16=False, instructions=True)
    assert precision.cpu_native_bf16()
    assert precision.resolve("auto", CPU) == "bf16"


def test_auto_is_fp32_on_an_avx2_cpu(monkeypatch):
    hardware(monkeypatch, cuda_bf16=True, instructions=False)  # a bf16 GPU beside it changes nothing on the CPU
    assert not precision.cpu_native_bf16()
    assert precision.resolve("auto", CPU) == "fp32"


def test_auto_is_fp32_where_onednn_is_limited_below_the_cpus_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512-BF16 CPU: the instructions exist but autocast would emulate bf16."""
    hardware(monkeypatch, onednn=False, instructions=True)
    assert precision.resolve("auto", CPU) == "fp32"


def test_arm_cpu_trusts_onednn(monkeypatch):
    hardware(monkeypatch, onednn=True, instructions=False, machine="aarch64")
    assert precision.resolve("auto", CPU) == "bf16"
    hardware(monkeypatch, onednn=False, instructions=False, machine="aarch64")
    assert precision.resolve("auto", CPU) == "fp32"


def test_explicit_bf16_on_a_cpu_without_native_bf16_warns_once(monkeypatch, caplog):
    hardware(monkeypatch, instructions=False)
    with pytest.warns(RuntimeWarning, match="emulated"):
        assert precision.resolve("bf16", CPU) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert precision.resolve("bf16", CPU) == "bf16"
    assert sum("emulated" in record.message for record in caplog.records) == 1


def test_explicit_choices_are_kept_and_native_ones_do_not_warn(monkeypatch):
    hardware(monkeypatch, instructions=True, cuda_bf16=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve("bf16", CPU) == "bf16"
        assert precision.resolve("fp32", CPU) == "fp32"
        assert precision.resolve("fp16", CUDA) == "fp16"
        assert precision.resolve("bf16", CUDA) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("float16", CPU)


def test_autocast_and_scaler_follow_the_resolved_precision():
    assert precision.autocast(CPU, "bf16").fast_dtype == torch.bfloat16
    assert precision.autocast(CPU, "fp16").fast_dtype == torch.float16
    assert not isinstance(precision.autocast(CPU, "fp32"), torch.autocast)
    assert precision.grad_scaler(CPU, "fp16").is_enabled()
    assert not precision.grad_scaler(CPU, "bf16").is_enabled()
    assert precision.describe("fp32") == {"precision": "fp32", "cpu_capability": precision.cpu_capability()}


def test_gpu_bf16_probe_does_not_count_emulation(monkeypatch):
    """PyTorch answers True on a V100 unless asked about bf16 units alone."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not precision.cuda_bf16()


def test_gpu_autocast_uses_the_resolved_dtype():
    with pytest.warns(UserWarning):  # no CUDA here: torch builds the context but disables it
        assert precision.autocast(CUDA, "fp16").fast_dtype == torch.float16
    with pytest.warns(UserWarning):
        assert precision.autocast(CUDA, "bf16").fast_dtype == torch.bfloat16


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)


@pytest.fixture
def batches(tmp_path):
    data = make_triples_dataset(tmp_path / "data", n_queries=8)
    return TripleBatches(data["triples"], data["queries"], data["collection"], batch_size=4, seed=1)


def last_checkpoint(directory):
    return torch.load(sorted(directory.glob("step-*.pt"))[-1], weights_only=False)


def test_fp16_training_scales_the_loss_and_skips_an_overflowing_step(tmp_path, monkeypatch, batches):
    """The GradScaler path, on CPU fp16 autocast: a step whose gradients overflow leaves the weights as they
    were and halves the scale; the scaler's state is checkpointed and the loss log records fp16."""
    monkeypatch.setattr(precision, "_warn_once", lambda message: None)  # fp16 on the CPU is what we test here
    model = _Tiny()
    with torch.no_grad():  # small weights: step 1's scaled gradients fit in fp16 whatever the random init
        model.linear.weight.fill_(0.01)
        model.linear.bias.zero_()  # a random bias near 0.5 overflowed step 1 (1 init in 25)
    snapshots = []

    def loss_fn(module, batch):
        snapshots.append(module.linear.weight.detach().clone())
        out = module.linear(torch.ones(len(batch.queries), 4)).float().pow(2).mean()
        return out * float("inf") if len(snapshots) == 2 else out  # step 2's gradients overflow

    cfg = LoopConfig(steps=3, batch_size=4, lr=0.1, checkpoint_every=100, precision="fp16")
    fit(model, loss_fn, batches, cfg, tmp_path / "ck", fingerprint("tiny", {}, {}), Context(CPU), desc="fp16")
    assert not torch.equal(snapshots[0], snapshots[1])  # step 1 updated the weights
    assert torch.equal(snapshots[1], snapshots[2])  # step 2 overflowed: skipped
    assert torch.isfinite(model.linear.weight).all()
    assert last_checkpoint(tmp_path / "ck")["scaler"]["scale"] == 2.0 ** 16 / 2  # the initial scale, halved once
    log = pd.read_csv(tmp_path / "ck" / "losses.csv")
    assert set(log["precision"]) == {"fp16"} and set(log["cpu_capability"]) == {precision.cpu_capability()}


def test_fp32_training_has_no_scaler_and_logs_fp32(tmp_path, monkeypatch, batches):
    hardware(monkeypatch, instructions=False)
    model = _Tiny()
    cfg = LoopConfig(steps=2, batch_size=4, lr=0.1, checkpoint_every=100, precision="auto")
    fit(model, lambda module, batch: module.linear(torch.ones(4, 4)).pow(2).mean(), batches, cfg,
        tmp_path / "ck", fingerprint("tiny", {}, {}), Context(CPU), desc="fp32")
    assert last_checkpoint(tmp_path / "ck")["scaler"] == {}
    assert set(pd.read_csv(tmp_path / "ck" / "losses.csv")["precision"]) == {"fp32"}


def test_encoding_stages_record_their_precision(tmp_path, monkeypatch):
    """encode_corpus and encode_queries resolve `auto` on this hardware and write it to their manifests."""
    from pipeline.dense.encode import encode_corpus
    from pipeline.dense.queries import encode_queries
    from pipeline.formats import write_id_text
    from pipeline.models.biencoder import BiEncoder

    hardware(monkeypatch, instructions=False)
    BiEncoder.from_backbone(str(make_tiny_bert(tmp_path / "bert"))).save(tmp_path / "model")
    write_id_text(tmp_path / "collection.tsv", [("1", "a passage"), ("2", "another passage")])
    write_id_text(tmp_path / "queries.tsv", [("q1", "a query")])
    corpus = encode_corpus(str(tmp_path / "model"), tmp_path / "collection.tsv", tmp_path / "shard")
    [queries] = encode_queries(str(tmp_path / "model"), [tmp_path / "queries.tsv"], [tmp_path / "queries"],
                               latency_queries=1)
    for manifest in (corpus, queries):
        assert manifest["precision"] == "fp32" and manifest["cpu_capability"] == precision.cpu_capability()
