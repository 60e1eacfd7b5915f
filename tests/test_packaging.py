"""A non-editable install must find its configs from any working folder."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_config_and_runs_from_anywhere(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("psx-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("psx/conf/")}
        zf.extractall(tmp_path / "site")
    expected = {f"psx/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert expected and expected <= shipped

    # Run the installed copy (not the checkout) from an unrelated folder.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run([sys.executable, "-c", "import psx.hydra_app as a; print(a.config_dir())"],
                           capture_output=True, text=True, cwd=workdir, env=env)
    assert where.stdout.strip() == str(tmp_path / "site" / "psx" / "conf"), where.stderr
    run = subprocess.run([sys.executable, "-m", "psx", "train", "model=mlp", "trainer.epochs=1"],
                         capture_output=True, text=True, cwd=workdir, env=env)
    assert run.returncode == 0, run.stderr
    assert len(list((workdir / "outputs").rglob("summary.json"))) == 1
