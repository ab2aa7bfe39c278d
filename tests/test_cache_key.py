"""The one cache-key function, against the key written out by hand: sha256 of the canonical
JSON (sorted keys, no spaces) of the fields plus the cache format, first 16 hex digits."""
import hashlib
import json

from featrank import feature_cache as fc


def _by_hand(fields):
    text = json.dumps({"format": fc.CACHE_FORMAT_VERSION, **fields}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_cache_key_is_sha256_of_canonical_json():
    fields = {"image": "ab" * 32, "layer": "layer4", "working_size": 256, "levels": [1.0, 2.0],
              "weights": {"sha256": "cd" * 32}, "dtype": None}
    key = fc.cache_key(fields)
    assert key == _by_hand(fields) and len(key) == 16
    # the order fields are given in does not matter; every value does
    assert fc.cache_key(dict(reversed(list(fields.items())))) == key
    for name, other in [("working_size", 224), ("levels", [1.0, 3.0]), ("dtype", "float32"),
                        ("weights", {"sha256": "ce" * 32}), ("layer", "layer3")]:
        assert fc.cache_key({**fields, name: other}) != key, name
    assert fc.cache_key({**fields, "extra": 1}) != key
    # non-JSON values (paths, numpy scalars) go through str(), as in the stored metadata
    import pathlib
    assert fc.cache_key({"p": pathlib.Path("/x")}) == _by_hand({"p": "/x"})


def test_a_format_bump_changes_every_key(monkeypatch):
    fields = {"image": "00" * 32}
    before = fc.cache_key(fields)
    monkeypatch.setattr(fc, "CACHE_FORMAT_VERSION", fc.CACHE_FORMAT_VERSION + 1)
    assert fc.cache_key(fields) != before and fc.cache_key(fields) == _by_hand(fields)
