"""TensorBoard and W&B (offline) are selectable from YAML and receive metrics and images."""

from pathlib import Path

from segzoo.cli import main

REPO = Path(__file__).resolve().parents[1]


def _fit(tmp_path, logger_config):
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "quickstart.yaml"),
            "--config",
            str(REPO / "configs" / "loggers" / logger_config),
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--test_after_fit=false",
            "--data.dataset_kwargs={num_classes: 3, size: [24, 32], num_samples: 4}",
            "--data.batch_size=2",
            "--data.eval_batch_size=2",
            "--model.init_args.model_kwargs.base_channels=4",
        ]
    )


def test_tensorboard_logger_gets_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit(tmp_path, "tensorboard.yaml")
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert "val/mIoU" in acc.Tags()["scalars"]
    assert acc.Tags()["images"], "ImageLogger sent no image to TensorBoard"


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    _fit(tmp_path, "wandb.yaml")
    runs = list(tmp_path.rglob("offline-run-*"))
    assert runs, "no offline W&B run folder"
    assert list(runs[0].rglob("*.wandb")), "the offline run has no data file"
    assert list(tmp_path.rglob("config.yaml")), "the resolved config was not saved beside the logs"
