"""A RunPod look-alike on loopback: scripted scenarios over real HTTP, faults included."""

from monitor.simulator.scenario import Scenario, ScenarioError, load_scenario
from monitor.simulator.server import BackgroundSimulator, SimulatorServer

__all__ = ["BackgroundSimulator", "Scenario", "ScenarioError", "SimulatorServer", "load_scenario"]
