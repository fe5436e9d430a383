"""`--device`: the names rr takes, a GPU asked for where torch sees none, and the figure store
keeping a GPU's figures apart from the CPU's."""

from __future__ import annotations

import pytest
import torch
from helpers import refused, run_rr

from reveal_release.devices import check_device_name, pick_device
from reveal_release.errors import RRError
from reveal_release.metrics.model_figures import weights_key


@pytest.mark.parametrize("name, want", [("auto", "auto"), ("CPU", "cpu"), (" cuda:3 ", "cuda:3")])
def test_device_names_rr_takes(name, want):
    assert check_device_name(name) == want


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cuda:0:1", "mps0", ""])
def test_device_names_rr_refuses_say_what_it_takes(name):
    with pytest.raises(RRError, match="use auto, cpu, cuda or cuda:N"):
        check_device_name(name)


def test_auto_picks_what_torch_sees():
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_a_gpu_asked_for_where_torch_sees_none_is_one_line(tiny_folder, tmp_path):
    with pytest.raises(RRError, match="torch sees no CUDA GPU here"):
        pick_device("cuda:0")
    line = refused(run_rr("generate", "--model", str(tiny_folder), "--device", "cuda", "hi"))
    assert "use --device cpu" in line


def test_figures_from_a_gpu_are_kept_apart_from_the_cpus():
    cpu = weights_key("abc", torch.float32, torch.device("cpu"))
    assert cpu == "abc|float32" == weights_key("abc", torch.float32)  # CPU keys as before
    assert weights_key("abc", torch.float32, torch.device("cuda", 1)) == "abc|float32|cuda"
    assert weights_key("abc", torch.float32, "cuda:0") == "abc|float32|cuda"
