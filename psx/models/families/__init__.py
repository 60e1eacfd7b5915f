"""One module per model family, each defining `FAMILY = Family(...)` (see psx.models.family).

Found with pkgutil, so adding a family is a module here plus its conf/model/*.yaml files.
These modules stay torch-free (they name their network as "module:Class") so that composing and
validating a config never imports torch.
"""
