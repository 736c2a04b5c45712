"""A faithful XAPI simulator: simulated pools speaking the real XenAPI wire protocol."""

from xen.sim.lab import Lab, generate_lab, load_lab
from xen.sim.simulator import Simulator

__all__ = ["Lab", "Simulator", "generate_lab", "load_lab"]
