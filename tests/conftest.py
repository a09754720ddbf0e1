import os
import sys

# Tests run on CPU with 8 simulated devices so sharding tests can build meshes; single-device
# code places on device 0 by default and is unaffected.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from jaxcot.runtime import tune_host_allocator  # noqa: E402

tune_host_allocator()  # as the CLI does: XLA:CPU's per-call scratch stays mapped
