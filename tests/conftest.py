import importlib.util
import os
from pathlib import Path

import pytest

# One OpenMP thread per process on the 2-core CI machines: many tests start subprocesses (CLI runs,
# two dist_sync workers plus scheduler and server), and two OpenMP threads in each oversubscribe
# the cores (the suite took 92.7 s with 2 threads against 80.3 s with 1, idle, back to back).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "real_samples"


@pytest.fixture
def real_samples():
    """../shared/data/real_samples, or skip when this checkout has no shared/ beside it."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real sample data not found at {REAL_SAMPLES}")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def reproduce_tool():
    """tools/reproduce.py as a module (its smoke sizes and its random-weights writer)."""
    spec = importlib.util.spec_from_file_location("reproduce", PROJECT_ROOT / "tools" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    return reproduce


@pytest.fixture(scope="session")
def smoke_synthia(tmp_path_factory, reproduce_tool):
    """``(data root, weights)``: tiny SYNTHIA -> Cityscapes data in the real layout at the smoke
    sizes of tools/reproduce.py and a seeded random CBST-style 16-class source model (head
    included), made once for the round-loop tests (in-process, CLI, dist_sync and faults)."""
    from mlsl_gluon.demo.synthetic import generate_demo_data

    reproduce = reproduce_tool
    root = tmp_path_factory.mktemp("smoke_synthia")
    generate_demo_data(root / "data", seed=0, source_format="synthia", **reproduce.SMOKE_DATA)
    weights = reproduce.write_random_ademxapp_weights(root / "synthia_rna-a1_cls16_s8_ep-0000.params", 16,
                                                      0.0625, seed=1, with_head=True)
    return root / "data", weights
