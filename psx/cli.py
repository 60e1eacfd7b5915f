"""`psx` entry point: subcommand dispatch and one-line errors. `psx --help` and `psx --version`
import neither torch nor Hydra, so they answer instantly."""
from __future__ import annotations

import os
import re
import signal
import sys
import time
from functools import partial

STARTED = time.perf_counter()  # the first job's start-up timings in summary.json are measured from here

from psx import __version__  # noqa: E402

USAGE = "usage: psx [--help] [--version] <command> [args]"

HELP = f"""{USAGE}

psx: train and compare models that differ only in what they share.

commands:
  train     train one run, or with -m a Hydra multirun sweep (see `psx train --help`)
  inspect   build a model without training and list its parameter tensors and sharing
            (takes the same overrides, e.g. `psx inspect model=cnn_unshared`)
  report    compare runs: tables (mean ± std over seeds), plots, report.html (see `psx report --help`)
  data      `psx data list`: the data sets, whether present, size, decoded caches, where;
            `psx data download NAME`: fetch and verify one; `psx data clean [NAME]`: remove
            psx's decoded caches (never the published files); all take --dir DIR
  flower-app  `psx flower-app DIR [overrides]`: a Flower app (DIR/pyproject.toml) that runs one
            federated run on Flower's deployment engine (a SuperLink, SuperNodes, `flwr run`)

examples:
  psx train                                          # cnn_shared on the bundled 8x8 digits
  psx train model=cnn_unshared                       # the same CNN without weight sharing
  psx train -m model=cnn_shared,cnn_unshared dataset.train_size=50,200,null seed=0,1
  psx train dataset=mnist trainer.epochs=3           # MNIST (downloaded into PSX_DATA_DIR if missing)
  psx report                                         # the latest sweep: table, plots, report.html

Run folders go to ./outputs/ (one per run, sweeps under ./outputs/multirun/).
"""

COMMANDS = ("train", "inspect", "report", "data", "flower-app")


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
    commands = {"train": train_command, "inspect": inspect_command,
                "report": partial(guarded, "psx.report.command"),  # pandas and matplotlib load only here
                "data": partial(guarded, "psx.datacli"),
                "flower-app": partial(guarded, "psx.federated.app_project", compose=compose_checked)}
    if command in commands:
        sys.exit(commands[command](args))
    fail(f"unknown command {command!r} (choose from: {', '.join(COMMANDS)}; see `psx --help`)")


def train_command(args: list[str]) -> int:
    from psx.errors import PsxError
    from psx.hydra_app import hydra_arguments
    from psx.rerun import nothing_left_to_run
    from psx.resume_args import continued_run_arguments

    parsed = hydra_arguments(args)
    only_shows_something = (parsed.help or parsed.hydra_help or parsed.version or parsed.cfg or parsed.info
                            or parsed.shell_completion or parsed.experimental_rerun)
    workers = None
    if not only_shows_something and not parsed.config_dir and not parsed.config_path:
        try:
            args = continued_run_arguments(args, parsed.overrides, parsed.multirun)
            parsed = hydra_arguments(args)
            if parsed.multirun and nothing_left_to_run(_parse_overrides(parsed.overrides)):
                return 0
            # A joblib sweep's workers may still be warming up while Hydra composes the jobs: the
            # launcher's own joblib call runs its jobs in the same pool, after that warm-up.
            workers = preflight(parsed.overrides, parsed.multirun, parsed.config_name or "config")
        except PsxError as e:
            fail(str(e))

    from psx.hydra_app import Launch, failed_in_sweeps

    started_at = time.time()
    launch = Launch(process_started=STARTED)
    stopped = run_hydra(args, launch)
    if stopped is not None:
        return stopped
    problem = shown_config_problem(parsed) if parsed.cfg else None
    if problem is not None:  # printed as asked, but it would not run
        fail(f"this config would not run: {problem}")
    if workers is not None:  # every job has finished: the joblib launcher's idle workers can go now
        workers.stop()
    failed = set(launch.failed_runs)
    if parsed.multirun:
        failed |= failed_in_sweeps(started_at)  # jobs that launchers ran in other processes
    if failed:
        if len(failed) > 1:
            print(f"psx: {len(failed)} runs failed; see status and error in their summary.json", file=sys.stderr)
        return 1
    return 0


def run_hydra(args: list[str], launch) -> int | None:
    """Hydra's application with psx's one-line errors; the exit code when a signal stopped a
    run (after its checkpoint), else None."""
    from psx.errors import StopRequested, SweepStopped
    from psx.hydra_app import train_app

    sys.argv = ["psx train", *args]
    # Hydra re-raises what the jobs and its launchers raise instead of printing a traceback and
    # exiting 1: a stop request must reach this function, and other errors get one line here.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        train_app(launch)()
    except (StopRequested, SweepStopped) as e:  # in this process or in a launcher's worker; the run is marked interrupted
        print(f"psx: stopped by {e.args[0]}; the run folder keeps a checkpoint to resume from", file=sys.stderr)
        return 128 + signal.Signals[e.args[0]].value
    except Exception as e:  # raised by Hydra around the jobs (runs record their own failures)
        if os.environ.get("PSX_DEBUG"):
            raise
        fail(f"{_one_line(e)} (set PSX_DEBUG=1 for the traceback)")
    except KeyboardInterrupt:  # Ctrl-C outside training (training turns it into StopRequested)
        print("psx: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    return None


def inspect_command(args: list[str]) -> int:
    from psx.errors import PsxError

    if any(a in ("-h", "--help") for a in args):
        print("usage: psx inspect [overrides]   e.g. psx inspect model=rnn_unshared dataset=digits")
        return 0
    try:
        cfg = next(_composed("config", [[a for a in args if not a.startswith("-")]]))
        import torch

        from psx.data import describe
        from psx.data.spec import input_text
        from psx.inspect import print_inspection
        from psx.models import build_model

        spec = describe(cfg.dataset)  # the shapes alone: no data read, nothing downloaded
        with torch.device("meta"):  # parameters without storage: any size inspects instantly
            model = build_model(cfg.model, spec)
    except PsxError as e:
        fail(str(e))
    print_inspection(model, f"{cfg.model.name} on {spec.name} {input_text(spec)}", cfg.model)
    return 0


def compose_checked(overrides: list[str], config_name: str = "config"):
    """The validated config for one set of overrides (no sweeps), as `psx train` would get it."""
    from psx.errors import PsxError

    parsed = _parse_overrides(overrides)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps:
        raise PsxError(f"'{sweeps[0]}' lists several values; give one")
    cfg = next(_composed(config_name, [overrides]))
    from psx.checks import check_runnable

    check_runnable([cfg])
    return cfg


def guarded(module: str, args: list[str], **given) -> int:
    """A command's main(args, **given) from its module (imported only when it runs); its PsxError as one line."""
    import importlib

    from psx.errors import PsxError

    try:
        return importlib.import_module(module).main(args, **given)
    except PsxError as e:
        fail(str(e))


def _parse_overrides(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from psx.errors import PsxError

    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            parsed += parser.parse_overrides([line])
        except HydraException as e:
            hint = ""
            if "=" not in line and parsed:  # the rest of a value the shell split at a space
                hint = f"; a value with spaces must be quoted as a whole: '{parsed[-1].input_line} {line}'"
            raise PsxError(f"malformed override '{line}': {_one_line(e).split(' See https://')[0]}{hint}") from None
    return parsed


def _composed(config_name: str, variants: list[list[str]], on_hydra=None):
    """Compose and validate each list of overrides (without torch; psx.checks does the rest);
    yields the configs. on_hydra, if given, is called with the first config's `hydra` node (a
    dict, unresolved)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from psx.config import validate
    from psx.errors import PsxError
    from psx.hydra_app import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        for index, variant in enumerate(variants):
            with_hydra = on_hydra is not None and index == 0
            try:
                cfg = compose(config_name=config_name, overrides=variant, return_hydra_config=with_hydra)
            except (HydraException, OmegaConfBaseException) as e:
                raise PsxError(_composition_error(e)) from None
            if with_hydra:
                on_hydra(OmegaConf.to_container(cfg.hydra, resolve=False))
                with open_dict(cfg):  # as compose() leaves it without return_hydra_config
                    del cfg["hydra"]
            validate(cfg)
            yield cfg


def preflight(overrides: list[str], multirun: bool, config_name: str):
    """Compose and validate the config before Hydra starts any job, so a bad override or an
    unavailable device ends with one clear line instead of a failed run (or a failed sweep).
    In a sweep every listed value is checked once, each with the other overrides' first values.
    A sweep on the joblib launcher gets its worker processes started meanwhile (they stay in
    joblib's pool for the launcher), and one of them makes the checks that need torch; returns
    those workers (a psx.joblib_workers.WorkerStart) or None."""
    from psx.errors import PsxError

    base, variants = _variants(overrides, multirun)
    started = []

    def start_joblib_workers(hydra):
        from psx.joblib_workers import start_for_sweep

        workers = start_for_sweep(hydra, overrides)
        if workers is not None:
            started.append(workers)

    try:
        configs = list(_composed(config_name, [base + variant for variant in variants],
                                 on_hydra=start_joblib_workers if multirun else None))
        # The checks that need torch: in a joblib worker if the sweep has them (they import torch
        # anyway, and this process, which only waits for the jobs, then never has to), else here.
        if started:
            reason = started[0].check(configs)
            if reason is not None:
                raise PsxError(reason)
        else:
            from psx.checks import check_runnable

            check_runnable(configs)
        return started[0] if started else None
    except BaseException:
        for workers in started:
            workers.cancel()
        raise


def _variants(overrides: list[str], multirun: bool) -> tuple[list[str], list[list[str]]]:
    """The plain overrides, and the sweep's values to check: the first of each list together,
    then every other value once with the others' first values."""
    from psx.errors import PsxError

    base, sweeps = [], []
    for override in _parse_overrides(overrides):
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
    return base, variants


def shown_config_problem(parsed) -> str | None:
    """`--cfg` prints the config without running it; it still says what in it could not run."""
    from psx.errors import PsxError

    if parsed.config_dir or parsed.config_path:
        return None
    try:
        base, variants = _variants(parsed.overrides, parsed.multirun)
        list(_composed(parsed.config_name or "config", [base + variant for variant in variants]))
    except PsxError as e:
        return str(e)
    return None


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
    cause, key = e.__cause__, getattr(e.__cause__, "full_key", None)
    if cause is not None and key:  # a value a typed schema rejects, e.g. dataset.val_size=abc
        return f"invalid {key}: {str(cause).splitlines()[0].strip()}"
    if cause is not None:  # rejected without a key: say why all the same
        reason = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
        return _one_line(Exception(f"{_one_line(e)}: {reason}"))
    return _one_line(e)


def _one_line(e: Exception) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text if len(text) <= 300 else text[:297] + "..."
