"""The `tiny` model config on a 64 x 64 x 16 grid of 0.4 m, shared by the tests.
In: nothing. Out: SMALL_GRID, TINY (keeps the BEV encoder cheap while the rig still fills it).
Importable from every test folder (test/ is on sys.path through test/conftest.py).
"""

from __future__ import annotations

from flashocc_ros.config import GridConfig, model_config

SMALL_GRID = GridConfig(x_min=-12.8, x_max=12.8, y_min=-12.8, y_max=12.8)
TINY = model_config("tiny").replace(grid=SMALL_GRID)
