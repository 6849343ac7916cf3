"""Shared fixtures: where the real test data lives, and the slides in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (override with ``SFC_SHARED_DATA``)."""
    return Path(os.environ.get("SFC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real test data; tests that need it skip when it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root} (set SFC_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def slides_dir(shared_data: Path) -> Path:
    """Folder of real slide files (SVS, NDPI, DICOM, TIFF, two broken files)."""
    return shared_data / "slides"


@pytest.fixture(scope="session")
def cmu_svs(slides_dir: Path) -> Path:
    """The real H&E Aperio slide (2220 x 2967 px at 0.499 µm/px)."""
    return slides_dir / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory):
    """A small synthetic H&E-like slide (6144 x 4608 px at 0.25 µm/px) and its ground truth."""
    from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide

    path = tmp_path_factory.mktemp("synthetic") / "synthetic.svs"
    spec = SyntheticSlideSpec(width_px=6144, height_px=4608, mpp=0.25, seed=7)
    truth = write_synthetic_slide(path, spec)
    return path, truth


@pytest.fixture(scope="session")
def ray_session():
    """A local two-CPU Ray instance shared by the tests that need one."""
    from slideflow_core.ray_runtime import ensure_ray

    ray = ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def s3(monkeypatch):
    """A local S3: a moto server on 127.0.0.1 and an s3fs filesystem talking to it."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield s3fs.S3FileSystem()
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
