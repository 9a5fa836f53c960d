"""Real Redis and PostgreSQL for every test, each test in its own namespace.

Servers: LEADCTL_TEST_REDIS_URL / LEADCTL_TEST_DATABASE_URL when set, else the ones on 127.0.0.1
when they answer, else leadctl's own embedded servers (started once for the session). Never fakes.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from redis.cluster import RedisCluster

from leadctl.config import Settings
from leadctl.local.cluster import LocalCluster, find_redis_server
from leadctl.local.namespaces import purge_namespace
from tests.support.servers import (
    CLUSTER_PARTITIONS,
    LOCAL_POSTGRES,
    LOCAL_REDIS,
    RedisTarget,
    postgres_answers,
    redis_answers,
)


def pytest_configure(config: pytest.Config) -> None:
    """The commands the tests start take Ctrl-C as from a terminal. A shell starts a background job
    (``bash .ci/run &``) with SIGINT ignored, a child inherits an ignored signal, and a test that
    presses Ctrl-C on `stats --watch` would then wait for ever: handled here, children start with
    the default."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def service_urls() -> Iterator[tuple[str, str]]:
    """(redis_url, database_url) for the whole session."""
    redis_url = os.environ.get("LEADCTL_TEST_REDIS_URL") or (
        LOCAL_REDIS if redis_answers(LOCAL_REDIS) else None
    )
    database_url = os.environ.get("LEADCTL_TEST_DATABASE_URL") or (
        LOCAL_POSTGRES if postgres_answers(LOCAL_POSTGRES) else None
    )
    data_dir = None
    if redis_url is None or database_url is None:
        from leadctl.local.services import resolve_urls, stop_embedded

        # outside pytest's temp area: pytest makes it 0700, which the postgres system user cannot enter
        data_dir = Path(tempfile.mkdtemp(prefix="leadctl-test-"))
        settings = Settings(data_dir=data_dir)
        settings.redis.url, settings.database.url = redis_url, database_url
        redis_url, database_url = resolve_urls(settings, lambda line: print(line, file=sys.stderr))
    yield redis_url, database_url
    if data_dir is not None:
        stop_embedded(data_dir)


@pytest.fixture
def namespace(service_urls: tuple[str, str]) -> Iterator[str]:
    """A fresh namespace (key prefix and schema), removed after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    redis_url, database_url = service_urls
    with redis.Redis.from_url(redis_url) as client:
        purge_namespace(client, database_url, name)


@pytest.fixture
def settings(namespace: str, service_urls: tuple[str, str], tmp_path: Path) -> Settings:
    """Settings for one test: its namespace, the session's servers, short timeouts."""
    redis_url, database_url = service_urls
    return Settings.model_validate(
        {
            "namespace": namespace,
            "data_dir": str(tmp_path / ".leadctl"),
            "redis": {"url": redis_url},
            "database": {"url": database_url, "pool_size": 4},
            "worker": {"visibility_timeout_s": 5, "block_ms": 200},
        }
    )


@pytest.fixture
def redis_client(service_urls: tuple[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(service_urls[0])
    yield client
    client.close()


@pytest.fixture
def pg(service_urls: tuple[str, str]) -> Iterator[psycopg.Connection]:
    with psycopg.connect(service_urls[1], autocommit=True) as conn:
        yield conn


@pytest.fixture
def leadctl_env(settings: Settings) -> dict[str, str]:
    """Environment for running the real `leadctl` command against this test's namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADCTL_")}
    empty_config = settings.data_dir.parent / "no-config.yaml"
    empty_config.write_text("{}\n", encoding="utf-8")
    env.update(
        {
            "LEADCTL_CONFIG": str(empty_config),  # never a stray ./leadctl.yaml of the working dir
            "LEADCTL_REDIS_URL": settings.redis.url or "",
            "LEADCTL_DATABASE_URL": settings.database.url or "",
            "LEADCTL_NAMESPACE": settings.namespace,
            "LEADCTL_DATA_DIR": str(settings.data_dir),
            "LEADCTL_WORKER__VISIBILITY_TIMEOUT_S": "5",
            "LEADCTL_WORKER__BLOCK_MS": "200",
            "LEADCTL_DATABASE__POOL_SIZE": "4",
        }
    )
    return env


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real Redis Cluster for the session: 3 masters with a replica each (six local redis-server
    processes), failing over 2 s after a master stops answering."""
    if find_redis_server() is None:
        pytest.skip("redis-server is not installed: the Redis Cluster tests need it to start a cluster")
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="leadctl-cluster-"))).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url)
    yield client
    client.close()


@pytest.fixture
def cluster_env(leadctl_env: dict[str, str], redis_cluster: LocalCluster) -> dict[str, str]:
    """The real command's environment on the cluster, with partitioned streams."""
    return {
        **leadctl_env,
        "LEADCTL_REDIS_URL": redis_cluster.url,
        "LEADCTL_REDIS__CLUSTER": "true",
        "LEADCTL_REDIS__PARTITIONS": str(CLUSTER_PARTITIONS),
    }


@pytest.fixture(params=["redis", "cluster"])
def redis_target(
    request: pytest.FixtureRequest, leadctl_env: dict[str, str], redis_client: redis.Redis
) -> RedisTarget:
    """The test runs twice: on the single Redis (one partition), then on the real 3-master cluster
    with CLUSTER_PARTITIONS partitions (skipped, like every cluster test, without redis-server)."""
    if request.param == "redis":
        return RedisTarget(leadctl_env, redis_client, 1)
    return RedisTarget(
        request.getfixturevalue("cluster_env"), request.getfixturevalue("cluster_client"), CLUSTER_PARTITIONS
    )
