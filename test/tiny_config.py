"""The `tiny` model config on a 64 x 64 x 16 grid of 0.4 m, shared by the tests.
In: nothing. Out: SMALL_GRID, TINY (keeps the BEV encoder cheap while the rig still fills it),
`randomize_bn` (non-trivial BatchNorm statistics for eval-mode tests), `input_sensitive`
(logits of a random model that depend on its inputs).
Importable from every test folder (test/ is on sys.path through test/conftest.py).
"""

from __future__ import annotations

import torch

from flashocc_ros.config import GridConfig, model_config

SMALL_GRID = GridConfig(x_min=-12.8, x_max=12.8, y_min=-12.8, y_max=12.8)
TINY = model_config("tiny").replace(grid=SMALL_GRID)


def randomize_bn(model: torch.nn.Module, seed: int = 0, mean_scale: float = 0.1) -> None:
    """Non-trivial running statistics in every BatchNorm (1d and 2d), so eval-mode tests (and
    exports) exercise them: with the defaults (mean 0, var 1) a missing BatchNorm would go
    unnoticed. Means ~ N(0, mean_scale²), variances in [0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            assert mod.running_mean is not None and mod.running_var is not None
            n = mod.running_mean.shape[0]
            mod.running_mean.copy_(mean_scale * torch.randn(n, generator=gen))
            mod.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def input_sensitive(model: torch.nn.Module, running_var: float = 1e-2) -> torch.nn.Module:
    """`model` with every BatchNorm's running variance set to `running_var`, in place. At
    initialisation eval-mode BatchNorm (running variance 1) shrinks the activations so much that
    the logits hardly depend on the BEV at all; small running variances make them depend on it
    (deeper models want a milder value: each BatchNorm scales by 1/sqrt(running_var))."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            assert mod.running_var is not None
            mod.running_var.fill_(running_var)
    return model
