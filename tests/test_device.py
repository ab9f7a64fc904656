"""Device selection for the GPU paths, tested on a CPU-only machine: the choice logic, the errors
for devices that are not there, and what reaches the backends."""

import pytest

from draftwise.backends.transformers import resolve_device
from draftwise.errors import DraftwiseError
from draftwise.loader import BackendOptions, cost_key


def test_auto_picks_cuda_only_when_torch_sees_a_gpu():
    assert resolve_device("auto", 0) == "cpu"
    assert resolve_device("auto", 2) == "cuda"
    assert resolve_device("cpu", 2) == "cpu"
    assert resolve_device("cuda:1", 2) == "cuda:1"


@pytest.mark.parametrize("device, n, msg", [
    ("cuda", 0, "torch sees no CUDA GPU"), ("cuda:0", 0, "torch sees no CUDA GPU"),
    ("cuda:2", 2, r"sees 2 GPU\(s\): cuda:0..cuda:1"), ("gpu", 1, "auto, cpu, cuda or cuda:N"),
    ("cuda:x", 1, "auto, cpu, cuda or cuda:N")])
def test_unavailable_or_malformed_devices_are_one_line(device, n, msg):
    with pytest.raises(DraftwiseError, match=msg):
        resolve_device(device, n)


def test_transformers_backend_on_this_machine(tiny_models):
    import torch

    from draftwise.backends.transformers import TransformersBackend

    be = TransformersBackend(str(tiny_models[0]), device="auto")
    assert be.device == ("cuda" if torch.cuda.device_count() else "cpu")
    assert next(be.model.parameters()).device.type == be.device.split(":")[0]
    if not torch.cuda.device_count():
        with pytest.raises(DraftwiseError, match="no CUDA GPU"):
            TransformersBackend(str(tiny_models[0]), device="cuda")


def test_draft_options_default_to_the_targets():
    o = BackendOptions(device="cuda:1", gpu_layers=-1)
    assert (o.for_draft().device, o.for_draft().gpu_layers) == ("cuda:1", -1)
    d = BackendOptions(device="cuda:1", gpu_layers=-1, draft_device="cpu", draft_gpu_layers=0)
    assert (d.for_draft().device, d.for_draft().gpu_layers) == ("cpu", 0)
    with pytest.raises(DraftwiseError, match="--gpu-layers"):
        BackendOptions(gpu_layers=-2)


def test_costs_are_kept_per_device():
    o = BackendOptions()
    cpu = cost_key("ngram", "ngram", o)
    assert cpu == cost_key("ngram", "ngram", o, ("cpu", "cpu"))
    assert cpu != cost_key("ngram", "ngram", o, ("cuda", "cuda")) != cost_key(
        "ngram", "ngram", o, ("cuda", "cpu"))


@pytest.mark.real
def test_llama_cpp_gpu_layers_without_a_gpu_build_is_one_line(qwen_paths):
    import llama_cpp

    from draftwise.backends.llamacpp import LlamaCppBackend

    if llama_cpp.llama_supports_gpu_offload():  # a GPU build: offloading must work instead
        be = LlamaCppBackend(qwen_paths[1], n_ctx=256, gpu_layers=-1)
        assert be.device == "gpu:all"
        be.close()
        return
    with pytest.raises(DraftwiseError, match="no GPU support; rebuild it"):
        LlamaCppBackend(qwen_paths[1], n_ctx=256, gpu_layers=4)
