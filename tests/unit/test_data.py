"""The data catalogue: bundled sets load offline, the digits split is reproducible, fetch_csv caches and checks."""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest

from cloud.ml.data import as_images, digits_split, fetch_csv, list_datasets, load_dataset, sha256_of

CSV = b"a,b,label\n1,2,x\n3,4,y\n"


@pytest.mark.parametrize(("name", "rows", "features", "task"), [
    ("digits", 1797, 64, "classification"),
    ("iris", 150, 4, "classification"),
    ("wine", 178, 13, "classification"),
    ("breast_cancer", 569, 30, "classification"),
    ("diabetes", 442, 10, "regression"),
])
def test_bundled_set_has_documented_shape(name, rows, features, task):
    # Execute
    table = load_dataset(name)
    # Assert
    assert table.shape == (rows, features)
    assert table.task == task
    assert len(table.target) == rows
    assert (len(table.target_names) == table.target.nunique()) == (task == "classification")


def test_catalogue_lists_every_bundled_set_and_rejects_unknown_names():
    # Execute / Assert
    assert list_datasets() == ["digits", "iris", "wine", "breast_cancer", "diabetes"]
    with pytest.raises(ValueError, match="unknown data set 'mnist'; bundled sets: digits"):
        load_dataset("mnist")


def test_digits_split_is_disjoint_complete_and_reproducible():
    # Execute
    first, again, other = digits_split(7), digits_split(7), digits_split(8)
    # Assert
    assert len(first.x_train) + len(first.x_val) + len(first.x_test) == 1797
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.x_test, other.x_test)
    assert first.x_train.dtype == np.float32 and 0.0 <= first.x_train.min() <= first.x_train.max() <= 1.0
    assert as_images(first.x_test, "NHWC").shape == (len(first.x_test), 8, 8, 1)


def test_fetch_csv_from_file_url_caches_and_checks_sha256(tmp_path):
    # Prepare
    source = tmp_path / "source" / "table.csv"
    source.parent.mkdir()
    source.write_bytes(CSV)
    digest = sha256_of(source)
    cache = tmp_path / "cache"
    # Execute
    fetched = fetch_csv(source.as_uri(), cache, sha256=digest)
    source.unlink()  # a second call must be served from the cache
    cached = fetch_csv(source.as_uri(), cache, sha256=digest)
    # Assert
    assert fetched == cached == cache / "table.csv"
    assert cached.read_bytes() == CSV


def test_fetch_csv_rejects_wrong_sha256_and_keeps_nothing(tmp_path):
    # Prepare
    source = tmp_path / "table.csv"
    source.write_bytes(CSV)
    cache = tmp_path / "cache"
    # Execute / Assert
    with pytest.raises(ValueError, match=f"sha256 mismatch \\(expected {'0' * 64}, got {sha256_of(source)}"):
        fetch_csv(source.as_uri(), cache, sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_fetch_csv_over_local_http_server(tmp_path):
    # Prepare: a web server on 127.0.0.1 serving tmp_path (no internet involved)
    (tmp_path / "served.csv").write_bytes(CSV)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/served.csv"
        # Execute
        path = fetch_csv(url, tmp_path / "cache", sha256=sha256_of(tmp_path / "served.csv"))
        missing = f"http://127.0.0.1:{server.server_address[1]}/absent.csv"
        # Assert
        assert path.read_bytes() == CSV
        with pytest.raises(OSError, match="could not fetch .*absent.csv"):
            fetch_csv(missing, tmp_path / "cache2")
    finally:
        server.shutdown()
        server.server_close()
