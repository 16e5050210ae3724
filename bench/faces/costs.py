"""What one SSH training step costs, priced on the network's shapes on the meta device (nothing
is allocated or trained): the family's `step_costs`."""

import torch

from bench.contract import StepCost
from bench.faces.config import FacesConfig
from bench.faces.model import SSH, build_ssh, ssh_flops
from bench.training.distributed import World, local_part


def step_costs(config: FacesConfig, processes: int = 1) -> dict[str, StepCost]:
    """A step at the largest padded shape the resize policy allows (an upper bound). Every
    share is padded to the global batch's shape: the processes change no cost."""
    local_part(config.train.batch_size, current=World(0, processes))

    t = config.train
    side = -(-t.short // t.pad_to) * t.pad_to, -(-t.long_max // t.pad_to) * t.pad_to
    per_image = ssh_flops(_meta_network(config), *side)
    return {"train": StepCost(per_image * t.batch_size, t.batch_size)}


def _meta_network(config: FacesConfig) -> SSH:
    """The network on the meta device: shapes without memory, for pricing a step."""
    with torch.device("meta"):
        return build_ssh(config.model)
