"""Shared fixtures: the real data folder (`../shared/data`, or $SHARED_DATA) and one local Spark session.

Tests that need the shared data skip with a reason on a user's machine without it, and fail when
CI=true (CI must never pass by skipping them).
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

import pyarrow.fs as pafs
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


# ----------------------------------------------------------------------------- a real S3 server (moto)

@pytest.fixture(scope="session")
def moto_endpoint():
    """A real S3-compatible server (moto) on 127.0.0.1, on a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch) -> str:
    """`s3://<a new bucket>` with the AWS environment pointing at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    bucket = f"qf-{uuid.uuid4().hex[:12]}"
    host = moto_endpoint.split("://")[1]
    pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                      allow_bucket_creation=True).create_dir(bucket)
    return f"s3://{bucket}"
