"""What psx reads back of the data is checked: an extracted MNIST file that torchvision would read
and a decoded cache with edited labels are rebuilt from the verified .gz files, not used."""
import logging

import torch
from conftest import copy_into

from psx.data.images import load_images
from psx.data.registry import dataset_entry

MNIST = dataset_entry("mnist").source


def test_a_damaged_extracted_label_file_is_extracted_again_not_used(tmp_path, caplog):
    root = copy_into(tmp_path, "mnist")
    good = load_images(MNIST, root)
    extracted = root / "MNIST/raw/t10k-labels-idx1-ubyte"
    labels = bytearray(extracted.read_bytes())
    labels[8:] = bytes((b + 1) % 10 for b in labels[8:])  # every test label wrong, the file still parses
    extracted.write_bytes(bytes(labels))
    MNIST.cache_path(root).unlink()  # the next load decodes the files again
    with caplog.at_level(logging.WARNING, logger="psx"):
        again = load_images(MNIST, root)
    assert torch.equal(again["test_y"], good["test_y"])
    assert "t10k-labels-idx1-ubyte does not match t10k-labels-idx1-ubyte.gz; extracting it again" in caplog.text
    assert extracted.read_bytes()[8:] == bytes(good["test_y"].to(torch.uint8).tolist())


def test_a_decoded_cache_with_edited_labels_is_rebuilt_not_used(tmp_path, caplog):
    root = copy_into(tmp_path, "mnist")
    good = load_images(MNIST, root)
    cache = MNIST.cache_path(root)
    content = torch.load(cache, weights_only=True)
    content["test_y"] = (content["test_y"] + 1) % 10  # the rest of the cache as it was, digest included
    torch.save(content, cache)
    with caplog.at_level(logging.WARNING, logger="psx"):
        again = load_images(MNIST, root)
    assert torch.equal(again["test_y"], good["test_y"])
    assert "does not match its digest; rebuilding it" in caplog.text
    assert torch.equal(torch.load(cache, weights_only=True)["test_y"], good["test_y"])  # rewritten
