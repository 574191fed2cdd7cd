"""The ``segzoo`` command: LightningCLI's fit/validate/test/predict plus segzoo's own verbs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies import Strategy

from segzoo.callbacks import EpochSeeding, PredictionWriter, ResumeCheckpoint, SegmentationMetrics
from segzoo.checkpoint_io import AtomicCheckpointIO
from segzoo.data.datamodule import SegDataModule

DESCRIPTION = (
    "segzoo: supervised, unsupervised and self-supervised segmentation. Subcommands fit, validate, test and "
    "predict take YAML configs (--config, several allowed), dotted overrides and --print_config. "
    "Also: `segzoo models` lists what is registered; `segzoo segment PATH... --out DIR` segments images "
    "and folders without training (Kanezaki, one fresh network per image); `segzoo export CKPT --out DIR` "
    "writes ONNX and TorchScript for a trained supervised model."
)


class SegzooCLI(LightningCLI):
    """LightningCLI with segzoo's datamodule, the shared metric callback always on, a CSV logger and a
    fixed default seed, an optional test of the best checkpoint after ``fit``, and ``predict`` writing
    label PNGs and overlays (to ``--output_dir``, default ``<log dir>/predictions``).

    For fault tolerance every trainer gets :class:`~segzoo.checkpoint_io.AtomicCheckpointIO` (unless the
    config brings its own ``CheckpointIO``), :class:`~segzoo.callbacks.EpochSeeding` and, with checkpointing
    on, :class:`~segzoo.callbacks.ResumeCheckpoint` (``checkpoints/resume.ckpt`` after every epoch); see
    ``docs/cluster.md``, "Fault tolerance"."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=L.LightningModule,
            datamodule_class=SegDataModule,
            subclass_mode_model=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": False},
            trainer_defaults={
                "logger": {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": "runs"},
                }
            },
            parser_kwargs={"description": DESCRIPTION},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(SegmentationMetrics, "metrics")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="after fit, run test on the best checkpoint (or the last weights without a checkpoint)",
        )
        parser.add_argument(
            "--output_dir",
            type=str | None,
            default=None,
            help="predict: folder for label PNGs and overlays (default: <log dir>/predictions)",
        )
        parser.add_argument(
            "--overwrite_predictions",
            type=bool,
            default=False,
            help="predict: recompute and replace outputs already in --output_dir (default: skip those "
            "images before running the model, so an interrupted predict run resumes)",
        )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Lightning's trainer construction plus the fault-tolerance defaults. Added here rather than as
        ``trainer_defaults``, which a config's own ``plugins`` or ``callbacks`` list would replace."""
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        strategy = config.get("strategy")
        strategy_io = isinstance(strategy, Strategy) and strategy._checkpoint_io is not None
        if not strategy_io and not any(isinstance(p, CheckpointIO) for p in plugins):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        present = [*configured, *callbacks]
        if not any(isinstance(c, EpochSeeding) for c in present):
            # First, so the other callbacks' epoch- and batch-start hooks draw from the reseeded streams too.
            configured = [EpochSeeding(), *configured]
        config["callbacks"] = configured
        if config.get("enable_checkpointing") is not False and not any(
            isinstance(c, ResumeCheckpoint) for c in present
        ):
            callbacks = [*callbacks, ResumeCheckpoint()]
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit"):
            return
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)

    def before_predict(self) -> None:
        if not any(isinstance(c, PredictionWriter) for c in self.trainer.callbacks):
            output_dir = self.config[self.subcommand].get("output_dir")
            output_dir = output_dir or f"{self.trainer.log_dir or self.trainer.default_root_dir}/predictions"
            overwrite = bool(self.config[self.subcommand].get("overwrite_predictions"))
            self.trainer.callbacks.append(PredictionWriter(output_dir, overwrite=overwrite))
        predict_config = self.config_init[self.subcommand]
        if predict_config.get("return_predictions") is None:
            # The writer has them on disk; keeping every prediction in memory too would not scale.
            predict_config["return_predictions"] = False


def _models_command(argv: Sequence[str]) -> int:
    """``segzoo models``: print the registered models, backbones, methods and datasets."""
    from segzoo.registry import BACKBONES, DATASETS, METHODS, MODELS

    if argv and argv[0] in ("-h", "--help"):
        print("usage: segzoo models\n\nPrint the registered models, backbones, methods and datasets.")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="segzoo registry")
    table.add_column("kind")
    table.add_column("names")
    for title, registry in (
        ("models", MODELS),
        ("backbones", BACKBONES),
        ("methods", METHODS),
        ("datasets", DATASETS),
    ):
        table.add_row(title, ", ".join(registry.names()))
    Console().print(table)
    return 0


def _segment_command(argv: Sequence[str]) -> int:
    """``segzoo segment``: imported on use so the other verbs do not pay for it."""
    from segzoo.commands.segment import segment_command

    return segment_command(argv)


def _export_command(argv: Sequence[str]) -> int:
    """``segzoo export``: imported on use so the other verbs do not pay for it."""
    from segzoo.export import export_command

    return export_command(argv)


EXTRA_COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "models": _models_command,
    "segment": _segment_command,
    "export": _export_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segzoo`` console script and ``python -m segzoo``."""
    import segzoo  # noqa: F401  (fills every registry)

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in EXTRA_COMMANDS:
        return EXTRA_COMMANDS[args[0]](args[1:])
    SegzooCLI(args=None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    return 0
