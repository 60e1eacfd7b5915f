"""psx's SLURM launcher (`hydra/launcher=slurm`): Hydra's submitit launcher, made to fit the cluster
and to never hang. Hydra takes launchers only from the hydra_plugins package, hence this home;
the SLURM-specific helpers live in psx.slurm.

What it adds to hydra-submitit-launcher's SlurmLauncher:
- `gpus_per_node: auto` asks for one GPU only when the sweep runs on `device=cuda`, so the same
  preset works on a CPU-only cluster (whose sbatch rejects any GPU request);
- an sbatch rejection is one line naming the setting to change;
- it waits for the jobs by asking `squeue` (never `sacct`, which fails on clusters without an
  accounting database and left submitit waiting forever for a job the scheduler had killed);
  a job that ends without a result (cancelled, timed out, preempted without requeue, killed)
  is marked interrupted in its summary.json, resumable, and the sweep exits non-zero;
- in the job, a run stopped by SLURM's signal leaves no result file, so a requeued job (scontrol
  requeue, preemption) runs again and resumes from its checkpoint instead of counting as done.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf, open_dict

from psx.slurm import (FINAL_STATES, SweepIncomplete, cancel, completed_value, explain_pending_reason, explain_sbatch_error,
                       mark_interrupted, squeue_states)

log = logging.getLogger(__name__)

try:  # Hydra imports every plugin module at start-up: without psx's launchers extra, no SLURM launcher
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:
    SubmititSlurmLauncher = None

# Own settings of the preset, not submitit's.
PSX_KEYS = ("poll_s",)


if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        def __init__(self, **params: Any) -> None:
            self.poll_s = float(params.get("poll_s") or 2)
            super().__init__(**{k: v for k, v in params.items() if k not in PSX_KEYS})

        def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state) -> JobReturn:
            """In the SLURM job. A run stopped by a signal raises psx's stop exception; leaving without a
            result file (SystemExit is not caught by submitit) lets a requeued job run again."""
            from psx.trainer import StopRequested

            result = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
            if result.status == JobStatus.FAILED:
                try:
                    result.return_value
                except StopRequested as stop:
                    raise SystemExit(f"psx: stopped by {stop.args[0] if stop.args else 'a signal'}") from None
                except Exception:
                    pass
            return result

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            import submitit

            assert self.config is not None
            executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                             slurm_max_num_timeout=self.params["max_num_timeout"])
            executor.update_parameters(**self._executor_parameters())
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            log.info("SLURM sweep output dir: %s", sweep_dir)
            job_params = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
                job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
            done = self._completed_before(job_params, sweep_dir)
            to_submit = [params for i, params in enumerate(job_params) if i not in done]
            jobs = []
            if to_submit:
                try:  # submitit prints sbatch's refusal too; psx says it once, in one line
                    with contextlib.redirect_stderr(io.StringIO()):
                        jobs = executor.map_array(self, *zip(*to_submit))
                except Exception as e:  # sbatch said no: nothing was queued
                    raise SweepIncomplete(explain_sbatch_error(str(e))) from None
            results = iter(self._wait(jobs, to_submit))
            return [done[i] if i in done else next(results) for i in range(len(job_params))]

        def _completed_before(self, job_params: list, sweep_dir: Path) -> dict[int, JobReturn]:
            """Jobs that an earlier launch of this sweep into the same folder completed: not submitted
            again (psx would only skip them, after waiting in the queue and starting Python)."""
            if not any(sweep_dir.glob("*/summary.json")):
                return {}
            done = {}
            for i, (overrides, _dir_key, job_num, *_unused) in enumerate(job_params):
                run_dir = self._run_dir(overrides, job_num)
                value = completed_value(run_dir, overrides)
                if value is not False:
                    log.info("\t#%d already completed in %s", job_num, run_dir)
                    done[i] = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=value,
                                        working_dir=str(run_dir))
            return done

        def _executor_parameters(self) -> dict[str, Any]:
            """The preset's settings under the names submitit's executor takes (as Hydra's launcher does),
            with `gpus_per_node: auto` resolved from the sweep's device."""
            params = dict(self.params)
            if params.get("gpus_per_node") == "auto":
                params["gpus_per_node"] = 1 if self.config.device.type == "cuda" else None
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            skip = {"submitit_folder", "max_num_timeout"}
            return {(k if k in base else f"slurm_{k}"): v for k, v in params.items() if k not in skip and v is not None}

        def _wait(self, jobs: list, job_params: list) -> list[JobReturn]:
            """Poll result files and squeue until every job has a result or has ended without one."""
            results: dict[int, JobReturn] = {}
            ended: dict[int, str] = {}  # job index: what the job's folder now says
            gone_once: set[int] = set()  # a job must look finished twice in a row (a requeue passes through)
            while len(results) + len(ended) < len(jobs):
                waiting = [i for i in range(len(jobs)) if i not in results and i not in ended]
                states = squeue_states([jobs[i].job_id for i in waiting])
                for i in waiting:
                    job, (state, reason) = jobs[i], states.get(jobs[i].job_id, ("GONE", ""))
                    if job.paths.result_pickle.exists():
                        results[i] = job.results()[0]
                    elif state in FINAL_STATES or state == "GONE":
                        if i in gone_once:
                            ended[i] = self._mark_ended(job, state, job_params[i])
                        gone_once.add(i)
                    else:
                        gone_once.discard(i)
                        self._stop_if_never_runs(jobs, state, reason)
                if len(results) + len(ended) < len(jobs):
                    time.sleep(self.poll_s)
            if ended:
                raise SweepIncomplete(f"{len(ended)} of {len(jobs)} SLURM jobs ended without finishing: "
                                      f"{'; '.join(ended.values())}; re-run the sweep with "
                                      f"hydra.sweep.dir={self.config.hydra.sweep.dir} to finish them")
            return [results[i] for i in range(len(jobs))]

        @staticmethod
        def _stop_if_never_runs(jobs: list, state: str, reason: str) -> None:
            """A job the scheduler accepted but will never start (more CPUs than a node has, on a
            cluster that does not enforce partition limits at submission) would wait forever."""
            setting = explain_pending_reason(reason) if state == "PENDING" else None
            if setting is not None:
                cancel([job.job_id for job in jobs])
                raise SweepIncomplete(f"SLURM will not start the sweep's jobs ({reason}); change {setting}")

        def _mark_ended(self, job, state: str, params: tuple) -> str:
            run_dir = self._run_dir(params[0], params[2])
            message = mark_interrupted(run_dir, job.job_id, state)
            log.warning("%s: %s", run_dir, message)
            return f"#{params[2]} {message}"

        def _run_dir(self, overrides: list[str], job_num: int) -> Path:
            """The job's run folder, composed as Hydra composes it in the job."""
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(sweep_config.hydra.job):
                sweep_config.hydra.job.num = job_num
            return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
