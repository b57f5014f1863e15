"""Shared fixtures: the real data folder (`../shared/data`, or $SHARED_DATA) and one local Spark session.

Tests that need the shared data skip with a reason on a user's machine without it, and fail when
CI=true (CI must never pass by skipping them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shared_data_path() -> Path:
    return Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_path()
    if not path.is_dir():
        message = f"shared data folder not found at {path} (set SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for the whole run; jobs' `spark_session` reuses it."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pipeline.spark import SparkConfig, session_settings
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName("qwenforge-tests")
    for key, value in session_settings(SparkConfig(shuffle_partitions=4), "local[2]").items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
