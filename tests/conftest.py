import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo dataset (60 train / 20 test images), generated once per session."""
    from almdn.data.demo import DemoConfig, generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "tiny", DemoConfig(num_train=60, num_test=20, seed=3), progress=False)
