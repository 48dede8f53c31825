"""Uploads a file to a tus server with tuspy, the stock tus client from PyPI,
in two sittings: the first stops after STOP_AT bytes, the second knows only
the upload's URL, asks the server where it stands (HEAD) and finishes.
Every chunk carries a sha1 Upload-Checksum.

    python tus_upload.py ENDPOINT TOKEN FILE STOP_AT CHUNK_SIZE

Prints the upload URL, then the offset the second sitting resumed from.
"""

import os
import sys

from tusclient import client


def main() -> None:
    endpoint, token, path, stop_at, chunk = sys.argv[1:6]
    tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
    first = tus.uploader(
        path,
        chunk_size=int(chunk),
        metadata={
            "filename": os.path.basename(path),
            "filetype": "application/octet-stream",
        },
        upload_checksum=True,
    )
    first.upload(stop_at=int(stop_at))
    url = first.url
    # A new client that knows only the URL, as after a restart.
    second = client.TusClient(
        endpoint, headers={"Authorization": f"Bearer {token}"}
    ).uploader(path, url=url, chunk_size=int(chunk), upload_checksum=True)
    resumed_from = second.offset
    second.upload()
    print(url)
    print(resumed_from)


if __name__ == "__main__":
    main()
