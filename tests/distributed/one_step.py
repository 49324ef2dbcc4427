"""One EPS training step of the tiny config's super-network on a fixed global batch, in one
process (``python one_step.py OUT``) or data-parallel (``torchrun --nproc-per-node N
one_step.py OUT``): the ``kernel`` phase, two sub-networks per step, knowledge distillation
from the largest network. Rank 0 saves the state before and after the step, and the record, to OUT."""

import sys
from pathlib import Path

import torch

from natv2.config import load_config
from natv2.distributed import World, joined
from natv2.pipeline.context import space_from_config
from natv2.pipeline.supernet_stage import family_kwargs
from natv2.supernet import build_supernet
from natv2.train.eps import PhaseSettings, TrainSettings, make_teacher, train_phase

ROOT = Path(__file__).resolve().parents[2]


def main(out: str) -> None:
    torch.set_num_threads(1)
    world = World.from_env()
    cfg = load_config([ROOT / "config/test.yaml"])
    torch.manual_seed(0)
    space = space_from_config(cfg)
    net = build_supernet(**family_kwargs(cfg), n_classes=10, dropout=0.0)  # masks are drawn per slice
    x, y = torch.randn(64, 3, 20, 20), torch.randint(0, 10, (64,))
    settings = PhaseSettings(epochs=1, lr=0.05, warmup_epochs=0, subnets_per_step=2)
    train = TrainSettings.from_config(cfg)
    device = torch.device("cpu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with joined(world, device):
        teacher = make_teacher(net, space)
        record = train_phase(net, space, lambda seed: [(x, y)], "kernel", settings, train, teacher,
                             device, seed=1, show_progress=False, world=world)
        if world.writer:
            torch.save({"before": before, "after": net.state_dict(), "record": record}, out)


if __name__ == "__main__":
    main(sys.argv[1])
