"""A handle on moto's S3 server for tests (the `moto_s3` fixture in conftest.py yields one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class MotoS3:
    """moto's S3 server on 127.0.0.1: `storage` reaches it; `bucket()` makes a fresh bucket."""

    def __init__(self, endpoint_url: str) -> None:
        from assynch.config import StorageConfig

        self.endpoint_url = endpoint_url
        self.storage = StorageConfig(
            endpoint_url=endpoint_url,
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing-secret",
        )
        self._count = 0

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing-secret",
        )

    def bucket(self, prefix: str = "bucket") -> str:
        self._count += 1
        name = f"{prefix}-{self._count}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> None:
        client = self.client()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                client.upload_file(str(path), bucket, key)
