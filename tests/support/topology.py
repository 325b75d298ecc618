"""Where the topology tests' machines are: `lscpu -p` captures of real layouts (tests/fixtures/topology/, whose
README says which machine each file is)."""

from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures" / "topology"
