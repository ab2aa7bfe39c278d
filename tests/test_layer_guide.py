"""LAYER_GUIDE.md is generated from the registry: the committed file must match."""
from featrank import layer_guide


def test_committed_layer_guide_equals_generated():
    with open(layer_guide.guide_path()) as f:
        committed = f.read()
    assert committed == layer_guide.render(), \
        "LAYER_GUIDE.md is stale: run `python main.py --write-layer-guide` and commit it"


def test_guide_records_the_corrections():
    text = layer_guide.render()
    for needle in ("VGG16", "net.slice5.34", "10 layers and listed 9", "vision_model.", "1370"):
        assert needle in text
