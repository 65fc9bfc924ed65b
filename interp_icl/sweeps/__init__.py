"""Sweeps: grids of run configs × seeds on Ray, aggregated into tables of rates with intervals.

* `SweepSpec` (`spec`): base config, axes, zip groups, seeds, what each cell does;
* `run_sweep(spec, out, workers, address)` (`driver`): one run directory per cell on Ray, then
  ``results`` (one row per cell) and ``summary`` (one row per setting: means ± stderr, verdict
  rates with 95% Wilson intervals) and the sweep report;
* `load_sweep(dir)`: those tables back.
"""

from interp_icl.sweeps.aggregate import wilson_interval
from interp_icl.sweeps.driver import Sweep, load_sweep, run_sweep
from interp_icl.sweeps.spec import SweepSpec

__all__ = ["Sweep", "SweepSpec", "load_sweep", "run_sweep", "wilson_interval"]
