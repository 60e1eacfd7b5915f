"""`psx` entry point: subcommand dispatch and one-line errors.

`psx --help` and `psx --version` import neither torch nor Hydra, so they answer instantly.
"""
from __future__ import annotations

import re
import sys

from psx import __version__

USAGE = "usage: psx [--help] [--version] <command> [args]"

HELP = f"""{USAGE}

psx: train and compare models that differ only in what they share.

commands:
  train     train one run, or with -m a Hydra multirun sweep (see `psx train --help`)
  data      `psx data list`: the data sets, whether present, size, where;
            `psx data download NAME`: fetch and verify one (both take --dir DIR)

examples:
  psx train                                          # cnn_shared on the bundled 8x8 digits
  psx train model=cnn_unshared                       # the same CNN without weight sharing
  psx train -m model=cnn_shared,cnn_unshared dataset.train_size=50,200,null seed=0,1
  psx train dataset=mnist trainer.epochs=3           # MNIST (downloaded into PSX_DATA_DIR if missing)

Run folders go to ./outputs/ (one per run, sweeps under ./outputs/multirun/).
"""

COMMANDS = ("train", "data")


def fail(message: str, code: int = 2) -> "NoReturn":  # noqa: F821
    print(f"psx: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(HELP, file=sys.stderr)
        sys.exit(2)
    command, args = argv[0], argv[1:]
    if command in ("-h", "--help", "help"):
        print(HELP)
        return
    if command in ("-V", "--version"):
        print(f"psx {__version__}")
        return
    if command == "train":
        sys.exit(train_command(args))
    if command == "data":
        sys.exit(data_command(args))
    fail(f"unknown command {command!r} (choose from: {', '.join(COMMANDS)}; see `psx --help`)")


def train_command(args: list[str]) -> int:
    from hydra._internal.utils import get_args_parser

    from psx.errors import PsxError

    parsed, _ = get_args_parser().parse_known_args(args)
    only_shows_something = parsed.help or parsed.hydra_help or parsed.cfg or parsed.info or parsed.shell_completion
    if not only_shows_something and not parsed.config_dir and not parsed.config_path:
        try:
            preflight(parsed.overrides, parsed.multirun, parsed.config_name or "config")
        except PsxError as e:
            fail(str(e))

    from psx.hydra_app import hydra_train
    from psx.train import FAILED_RUNS

    sys.argv = ["psx train", *args]
    try:
        hydra_train()
    except KeyboardInterrupt:
        print("psx: interrupted", file=sys.stderr)
        return 130
    if FAILED_RUNS:
        if len(FAILED_RUNS) > 1:
            print(f"psx: {len(FAILED_RUNS)} runs failed; see status and error in their summary.json", file=sys.stderr)
        return 1
    return 0


DATA_USAGE = "usage: psx data list [--dir DIR] | psx data download NAME [--dir DIR]"


def data_command(args: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="psx data", usage=DATA_USAGE)
    parser.add_argument("action", choices=["list", "download"])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--dir", help="data folder (default: paths.data_dir, i.e. $PSX_DATA_DIR or ~/.cache/psx/data)")
    parsed = parser.parse_args(args)
    if parsed.action == "list" and parsed.name:
        fail(f"`psx data list` takes no name ({DATA_USAGE})")
    if parsed.action == "download" and not parsed.name:
        fail(f"`psx data download` needs a data set name ({DATA_USAGE})")

    from psx import datacli
    from psx.errors import PsxError

    try:
        data_dir = parsed.dir or datacli.configured_data_dir()
        if parsed.action == "list":
            datacli.list_datasets(data_dir)
        else:
            datacli.download(parsed.name, data_dir)
    except PsxError as e:
        fail(str(e))
    return 0


def preflight(overrides: list[str], multirun: bool, config_name: str) -> None:
    """Compose and validate the config before Hydra starts any job, so a bad override or an
    unavailable device ends with one clear line instead of a failed run (or a failed sweep).
    In a sweep every listed value is checked once, each with the other overrides' first values."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from psx.config import validate
    from psx.data import describe, require
    from psx.device import resolve_device
    from psx.errors import PsxError
    from psx.hydra_app import config_dir
    from psx.models import check_fits

    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            parsed += parser.parse_overrides([line])
        except HydraException as e:
            raise PsxError(f"malformed override '{line}': {_one_line(e).split(' See https://')[0]}") from None

    base, sweeps = [], []
    for override in parsed:
        if override.is_sweep_override() and not multirun:
            raise PsxError(f"'{override.input_line}' lists several values: add -m to run them as a sweep")
        if not override.is_sweep_override():
            base.append(override.input_line)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # e.g. an interval for an optimizing sweeper: nothing to enumerate
            continue
        sweeps.append([f"{override.get_key_element()}={value}" for value in values])

    variants = [[sweep[0] for sweep in sweeps]]
    for i, sweep in enumerate(sweeps):
        for value in sweep[1:]:
            variant = list(variants[0])
            variant[i] = value
            variants.append(variant)

    needed = {}
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        for variant in variants:
            try:
                cfg = compose(config_name=config_name, overrides=base + variant)
            except (HydraException, OmegaConfBaseException) as e:
                raise PsxError(_composition_error(e)) from None
            validate(cfg)
            check_fits(cfg.model, describe(cfg.dataset))  # model vs data shape/kind, nothing loaded
            resolve_device(cfg.device)
            needed[(cfg.dataset.name, cfg.paths.data_dir, cfg.dataset.get("download"))] = cfg
    for cfg in needed.values():  # data files last: only once everything else is known to be fine
        require(cfg.dataset, cfg.paths.data_dir)


def _composition_error(e: Exception) -> str:
    """Hydra's composition errors, shortened to the part a user acts on."""
    text = str(e).split("Config search path:")[0]
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        options = re.search(r"Available options in '[^']+':(.*)", text, re.S)
        choices = ", ".join(options.group(1).split()) if options else "none"
        return f"no config '{missing.group(1)}' (available: {choices})"
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        return f"unknown config key '{unknown.group(1)}' (see `psx train --help` for the keys)"
    return _one_line(e)


def _one_line(e: Exception) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text if len(text) <= 300 else text[:297] + "..."
