import os
from pathlib import Path

import pytest

# Keep MXNet on a predictable, small thread budget on the 2-core CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "real_samples"


@pytest.fixture
def real_samples():
    """../shared/data/real_samples, or skip when this checkout has no shared/ beside it."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real sample data not found at {REAL_SAMPLES}")
    return REAL_SAMPLES
