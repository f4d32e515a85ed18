"""The mesh flag, the partition rule table and the memory plan: pure functions, no devices."""

from __future__ import annotations

import jax
import pytest
from jax.sharding import PartitionSpec as P

from shared.backend import get_backend
from shared.cli import main
from shared.config import GPT2Config, config_for_size
from shared.distributed import memory, partition
from shared.distributed.mesh import MeshSpec, check_batch_size, parse
from shared.errors import GPT2Error
from shared.training.config import TrainingConfig
from shared.training.optimizer import make_optimizer

FSDP8 = {"data": 1, "fsdp": 8}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, MeshSpec(data=8, fsdp=1)),
        ("data=2,fsdp=4", MeshSpec(data=2, fsdp=4)),
        ("fsdp=8", MeshSpec(data=1, fsdp=8)),
        (" data = 4 ", MeshSpec(data=4, fsdp=2)),
    ],
)
def test_a_mesh_is_parsed_and_a_left_out_axis_takes_the_remaining_devices(text, expected):
    assert parse(text, 8) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data=3,fsdp=2", r"Mesh data=3,fsdp=2 spans 6 devices, but this run has 8; data x fsdp"),
        ("data=2;fsdp=4", r"Bad mesh 'data=2;fsdp=4': write it as data=D,fsdp=F"),
        ("model=8", r"the axes are data and fsdp"),
        ("data=0,fsdp=8", r"positive integers"),
        ("data=\uff12,fsdp=4", r"Bad mesh 'data=\uff12,fsdp=4': write it as data=D,fsdp=F"),
        ("fsdp=3", r"does not divide the 8 devices"),
    ],
)
def test_a_bad_mesh_fails_with_one_sentence(text, message):
    with pytest.raises(GPT2Error, match=message):
        parse(text, 8)


def test_a_bad_mesh_flag_fails_before_anything_runs():
    with pytest.raises(GPT2Error, match="Bad mesh"):
        TrainingConfig(mesh="eight")


def test_a_batch_that_does_not_split_over_every_device_is_refused():
    check_batch_size(16, MeshSpec(2, 4))
    with pytest.raises(GPT2Error, match="batch_size 12 does not split over the mesh data=2,fsdp=4"):
        check_batch_size(12, MeshSpec(2, 4))


def test_1558m_splits_every_tensor_over_fsdp_along_its_largest_dividing_axis():
    specs = partition.canonical_specs(config_for_size("1558M"), FSDP8)
    assert specs["wte"] == P(None, "fsdp")  # 50257 tokens do not divide by 8: embed instead
    assert specs["wpe"] == P(None, "fsdp")  # embed 1600 before ctx 1024
    assert specs["blocks/attn/c_attn/w"] == P(None, None, "fsdp")  # qkv
    assert specs["blocks/attn/c_proj/w"] == P(None, "fsdp")  # heads
    assert specs["blocks/mlp/c_fc/w"] == P(None, None, "fsdp")  # mlp
    assert specs["blocks/mlp/c_proj/w"] == P(None, "fsdp")  # mlp
    assert specs["ln_f/g"] == P("fsdp")


def test_the_batch_splits_over_data_and_fsdp_and_prompts_over_data():
    sizes = {"data": 2, "fsdp": 4}
    assert partition.spec_for(partition.TRAIN_BATCH, (1, 16, 33), sizes) == P(
        None, ("data", "fsdp")
    )
    assert partition.spec_for(partition.PROMPTS, (4, 16), sizes) == P("data")
    assert partition.spec_for(partition.PROMPTS, (3, 16), sizes) == P()  # 3 rows: replicated


def test_a_one_device_mesh_replicates_everything():
    specs = partition.canonical_specs(config_for_size("124M"), {"data": 1, "fsdp": 1})
    assert set(specs.values()) == {P()}


@pytest.mark.parametrize("name", ["functional", "haiku", "keras"])
def test_every_backend_maps_its_parameters_to_the_canonical_rules(name):
    pytest.importorskip({"functional": "jax", "haiku": "haiku", "keras": "keras"}[name])
    backend, config = (
        get_backend(name),
        GPT2Config(n_vocab=64, n_ctx=16, n_embd=16, n_head=2, n_layer=2),
    )
    tree = jax.eval_shape(lambda: backend.init(config, jax.random.PRNGKey(0)))
    paths = jax.tree.leaves(partition.backend_paths(backend, config))
    assert sorted(set(paths)) == sorted(partition.LOGICAL_AXES)
    assert len(paths) == 4 + 12 * config.n_layer
    specs = partition.param_specs(backend, tree, config, FSDP8)
    canonical = partition.canonical_specs(config, FSDP8)
    for path, spec in zip(
        paths, jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)), strict=True
    ):
        expected = canonical[path][1:] if path.startswith("blocks/") else canonical[path]
        assert spec == P(*expected), path


def test_1558m_training_state_fits_on_16_gib_devices_under_fsdp_8_where_replication_does_not():
    plan = memory.report(
        get_backend("functional"), config_for_size("1558M"), make_optimizer(TrainingConfig()),
        MeshSpec(data=1, fsdp=8),
    )  # fmt: skip
    assert plan.replicated_params == 1_557_611_200 * 4
    assert plan.replicated_total > 16 * 2**30 > plan.total
    assert plan.total == pytest.approx(plan.replicated_total / 8, rel=1e-6)
    assert plan.unsplit == ()


def test_doctor_prints_the_memory_plan_of_a_mesh(capsys):
    assert main(["doctor", "--mesh", "data=1,fsdp=8", "--model-size", "1558M"]) == 0
    assert "= 2.34 GB per device on data=1,fsdp=8" in capsys.readouterr().out
