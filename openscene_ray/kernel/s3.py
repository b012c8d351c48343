"""S3 settings and clients: :class:`StorageOptions` (from the environment) and the s3fs and pyarrow
S3 filesystems built from them, with call deadlines and one retry policy.

Settings: ``OPENSCENE_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``),
``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), the usual AWS credential chain, and the limits
``OPENSCENE_S3_CONNECT_TIMEOUT_S``, ``OPENSCENE_S3_READ_TIMEOUT_S`` and ``OPENSCENE_S3_MAX_ATTEMPTS``.
Secrets are kept in :class:`pydantic.SecretStr` and never appear in ``repr``, logs or errors.

Retries: botocore makes at most ``max_attempts`` attempts per call (the first included), so a dead
or stalled endpoint fails a call after about ``max_attempts x timeout``. S3's own "retry this"
answers (503 SlowDown, 500 InternalError) get up to 5 more tries with backoff from s3fs, so a
throttled prefix slows a job down instead of failing its scenes.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["StorageOptions", "pyarrow_s3_filesystem", "s3_filesystem", "s3_transient"]

_LIMIT_ENV = {
    "connect_timeout_s": "OPENSCENE_S3_CONNECT_TIMEOUT_S",
    "read_timeout_s": "OPENSCENE_S3_READ_TIMEOUT_S",
    "max_attempts": "OPENSCENE_S3_MAX_ATTEMPTS",
}


def _env_first(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class StorageOptions(BaseModel):
    """S3 connection settings. Unset fields fall back to the environment, then to boto defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    anonymous: bool = False
    # A dead endpoint must fail a call within a deadline, not hang a job: about
    # max_attempts × (connect_timeout_s + backoff) for a refused or unreachable endpoint, and
    # max_attempts × read_timeout_s for one that accepts and never answers.
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3  # per call, the first attempt included

    @classmethod
    def from_env(cls) -> StorageOptions:
        key = _env_first("AWS_ACCESS_KEY_ID")
        secret = _env_first("AWS_SECRET_ACCESS_KEY")
        limits = {
            field: float(value) if field.endswith("_s") else int(value)
            for field, name in _LIMIT_ENV.items()
            if (value := os.environ.get(name))
        }
        return cls(
            endpoint_url=_env_first("OPENSCENE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=_env_first("AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key_id=SecretStr(key) if key else None,
            secret_access_key=SecretStr(secret) if secret else None,
            **limits,
        )

    def s3fs_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "anon": self.anonymous,
            # other processes write the same buckets (actors, reruns): a cached listing goes stale
            "use_listings_cache": False,
            "config_kwargs": {
                "connect_timeout": self.connect_timeout_s,
                "read_timeout": self.read_timeout_s,
                # total attempts, the first included (botocore's "max_attempts" counts retries only)
                "retries": {"total_max_attempts": self.max_attempts, "mode": "standard"},
            },
        }
        client_kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        if client_kwargs:
            kwargs["client_kwargs"] = client_kwargs
        if self.access_key_id and self.secret_access_key:
            kwargs["key"] = self.access_key_id.get_secret_value()
            kwargs["secret"] = self.secret_access_key.get_secret_value()
        return kwargs


def s3_transient(exc: BaseException) -> bool:
    """S3's own "retry this" answers: 503 (SlowDown when throttled; a HEAD's bodiless 503) and 500
    InternalError. s3fs retries them (``S3FileSystem.retries`` times, with backoff) on top of
    botocore's attempts; connection errors and timeouts keep botocore's short budget."""
    response = getattr(exc, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = (response.get("Error") or {}).get("Code")
    return status in (500, 503) or code in ("SlowDown", "ServiceUnavailable", "InternalError", "500", "503")


def _configure_s3fs() -> None:
    """s3fs's retry policy is process-wide: retry :func:`s3_transient` answers, and leave timeouts
    and dropped connections to botocore (s3fs retrying them as well multiplies a stalled
    endpoint's wait by its 5 retries: 15 minutes per call with the default settings)."""
    import botocore.exceptions
    import s3fs.core

    s3fs.core.set_custom_error_handler(s3_transient)
    s3fs.core.S3_RETRYABLE_ERRORS = tuple(
        e for e in s3fs.core.S3_RETRYABLE_ERRORS if e not in (socket.timeout, botocore.exceptions.HTTPClientError)
    )


@lru_cache(maxsize=16)
def s3_filesystem(options: StorageOptions) -> fsspec.AbstractFileSystem:
    """An s3fs filesystem for ``options`` (one per distinct options, per process)."""
    import s3fs

    _configure_s3fs()
    return s3fs.S3FileSystem(**options.s3fs_kwargs(), skip_instance_cache=True)


def pyarrow_s3_filesystem(options: StorageOptions):
    """pyarrow's native S3 client with the same endpoint, region, credentials and limits."""
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {
        "region": options.region or "us-east-1",
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=options.max_attempts),
        "connect_timeout": options.connect_timeout_s,
        "request_timeout": options.read_timeout_s,
    }
    if options.anonymous:
        kwargs["anonymous"] = True
    elif options.access_key_id and options.secret_access_key:
        kwargs["access_key"] = options.access_key_id.get_secret_value()
        kwargs["secret_key"] = options.secret_access_key.get_secret_value()
    if options.endpoint_url:
        endpoint_scheme, _, host = options.endpoint_url.partition("://")
        kwargs["endpoint_override"] = host.rstrip("/")
        kwargs["scheme"] = endpoint_scheme
    return pafs.S3FileSystem(**kwargs)
