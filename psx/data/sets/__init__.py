"""One module per data set (or per family of near-identical ones), each declaring
`DATASETS = [DatasetEntry(...)]`; psx.data.registry finds them here. Import torch only inside
functions: these modules are imported just to read their declarations."""
