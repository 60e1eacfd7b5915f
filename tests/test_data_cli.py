"""End to end with the real `psx` command: `psx data`, training on MNIST, model/data mismatches."""
import json
import socket

import pytest
from conftest import copy_into


def one_error_line(result, message):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("psx: error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def summaries(root):
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]


@pytest.mark.parametrize(
    "args,message",
    [
        (["dataset=ptb"], "ptb is a word-level token stream"),
        (["dataset=multi_digits"], "or train on one task with dataset.task=left"),
        (["model.channels=[8,8,8,8]"], "pooling after conv layer 4 gets a 1x1 map"),
        (["dataset=multi_digits", "dataset.task=middle"], "dataset.task must be left, right or null"),
        (["dataset=mnist", "dataset.val_size=3"], "dataset.val_size must hold at least one example per class"),
        (["dataset=mnist", "dataset.augment=true"], "unknown config key 'dataset.augment'"),
        (["-m", "dataset=digits,ptb"], "ptb is a word-level token stream"),
    ],
)
def test_model_data_mismatches_fail_before_training_with_one_line(psx, args, message):
    result = psx("train", *args)
    assert result.returncode == 2, result.stderr
    one_error_line(result, message)
    assert not (psx.cwd / "outputs").exists()


def test_missing_data_with_downloads_off_fails_before_any_run(psx, tmp_path):
    empty = tmp_path / "no-data"
    result = psx("train", "dataset=mnist", "dataset.download=false", extra_env={"PSX_DATA_DIR": str(empty)})
    assert result.returncode == 2
    one_error_line(result, f"mnist: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                           f"t10k-labels-idx1-ubyte.gz not found in {empty / 'MNIST/raw'}")
    assert "psx data download mnist" in result.stderr
    assert not (psx.cwd / "outputs").exists()


def _online() -> bool:
    try:
        socket.getaddrinfo("ossci-datasets.s3.amazonaws.com", 443)
        return True
    except OSError:
        return False


@pytest.mark.skipif(_online(), reason="this machine can reach the MNIST mirror, so the offline path cannot be shown")
def test_offline_download_names_the_set_the_folder_and_what_to_do(psx, tmp_path):
    result = psx("data", "download", "ptb", "--dir", str(tmp_path / "d"))
    assert result.returncode == 2
    one_error_line(result, f"ptb: data not found in {tmp_path / 'd' / 'PennTreebank'} and the download failed")
    assert "psx data download ptb` on a machine with internet" in result.stderr
    train = psx("train", "dataset=mnist", extra_env={"PSX_DATA_DIR": str(tmp_path / "d")})
    assert train.returncode == 2 and "mnist: data not found" in train.stderr and not (psx.cwd / "outputs").exists()


def listed_rows(result):
    """{name: row} of `psx data list`'s table."""
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name ")) + 1
    return {line.split()[0]: line for line in lines[start:] if line and not line.startswith("decoded:")}


def test_data_list_download_and_clean_from_placed_files(psx, tmp_path):
    root = copy_into(tmp_path / "data", "mnist")
    listed = psx("data", "list", extra_env={"PSX_DATA_DIR": str(root)})
    assert listed.returncode == 0, listed.stderr
    rows = listed_rows(listed)
    assert set(rows) == {"digits", "multi_digits", "mnist", "fashion_mnist", "cifar10", "ptb", "multi_mnist"}
    assert "present" in rows["mnist"] and str(root / "MNIST/raw") in rows["mnist"] and "11.6 MB" in rows["mnist"]
    assert "missing" in rows["cifar10"] and "bundled" in rows["digits"]
    # The files are there: `download` only verifies and decodes them, without any network.
    fetched = psx("data", "download", "mnist", "--dir", str(root))
    assert fetched.returncode == 0, fetched.stderr
    assert "mnist: verified and ready" in fetched.stdout
    decoded = psx("data", "list", "--dir", str(root))
    made = [p for p in (root / "MNIST/raw").iterdir() if p.suffix != ".gz"]  # the cache and the extracted copies
    assert sorted(p.name for p in made) == ["psx-mnist.pt", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                            "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    made_mb = f"{sum(p.stat().st_size for p in made) / 1e6:.1f}"
    mnist = listed_rows(decoded)["mnist"].split()
    assert mnist[1] == "ready" and mnist[2:6] == ["11.6", "MB", made_mb, "MB"]  # archives, then what psx made
    assert "`psx data clean [NAME]` removes them" in decoded.stdout
    archives = sorted(p.name for p in (root / "MNIST/raw").glob("*.gz"))

    cleaned = psx("data", "clean", "mnist", "--dir", str(root))
    assert cleaned.returncode == 0, cleaned.stderr
    assert "mnist: removed 5 file(s)" in cleaned.stdout and f"freed {made_mb} MB" in cleaned.stdout
    assert sorted(p.name for p in (root / "MNIST/raw").iterdir()) == archives  # the published files stay
    assert "present (not yet decoded)" in listed_rows(psx("data", "list", "--dir", str(root)))["mnist"]
    one_error_line(psx("data", "download", "nope"), "unknown data set 'nope'")
    one_error_line(psx("data", "clean", "nope", "--dir", str(root)), "unknown dataset 'nope'")


def test_mnist_run_and_sweep_end_to_end(psx, mnist_root):
    env = {"PSX_DATA_DIR": str(mnist_root)}
    # Small and single-threaded: keeps the suite fast on 2 shared cores (torch threads collapse under contention).
    small = ["trainer.epochs=1", "model.channels=[8,16]", "dataset.val_size=1000", "device.num_threads=1"]
    one = psx("train", "dataset=mnist", "dataset.train_size=300", *small, extra_env=env)
    assert one.returncode == 0, one.stderr
    (summary,) = summaries(psx.cwd / "outputs")
    assert summary["status"] == "completed" and summary["dataset"] == "mnist" and summary["train_examples"] == 300
    assert summary["metrics"]["test/acc"] > 0.5

    sweep = psx("train", "-m", "dataset=mnist", "model=cnn_shared,cnn_unshared", "dataset.train_size=100,1000",
                *small, extra_env=env)
    assert sweep.returncode == 0, sweep.stderr
    jobs = summaries(psx.cwd / "outputs" / "multirun")
    assert sorted((s["model"], s["train_examples"]) for s in jobs) == [
        ("cnn_shared", 100), ("cnn_shared", 1000), ("cnn_unshared", 100), ("cnn_unshared", 1000)]
    assert all(s["status"] == "completed" for s in jobs)


def test_multi_digits_single_task_trains_end_to_end(psx):
    result = psx("train", "dataset=multi_digits", "dataset.task=left", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    (summary,) = summaries(psx.cwd / "outputs")
    assert summary["status"] == "completed" and summary["dataset"] == "multi_digits"
