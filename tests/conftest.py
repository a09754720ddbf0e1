import os
import sys

# Tests run on CPU; XLA_FLAGS for simulated devices is set per test process where needed.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))
