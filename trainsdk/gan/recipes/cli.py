"""The GAN recipes by task name, for ``trainsdk train --task gan-augment|context-gan|wgan-ct``: the command line
builds the recipe config from ``KEY=VALUE`` pairs (any field of the task's config) and the common flags, runs it
and prints the arms side by side. No logic here that the API lacks.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from .augment import GANAugmentRecipe, train_gan_augmentation
from .context import ContextGANRecipe, train_context_gan
from .lowdose import WGANCTRecipe, train_wgan_ct

__all__ = ["GAN_TASKS", "GAN_CLI_DEFAULTS", "gan_recipe", "run_gan_task", "run_gan_cli"]

# task -> (config class, run function, the metrics its table shows)
GAN_TASKS: dict[str, tuple[type, Callable, tuple[str, ...]]] = {
    "gan-augment": (GANAugmentRecipe, train_gan_augmentation,
                    ("accuracy", "sensitivity", "specificity", "auroc", "sensitivity/cyst", "sensitivity/metastasis",
                     "sensitivity/hemangioma", "specificity/cyst", "specificity/metastasis",
                     "specificity/hemangioma")),
    "context-gan": (ContextGANRecipe, train_context_gan, ("mae_hu", "psnr", "ssim", "hf_ratio")),
    "wgan-ct": (WGANCTRecipe, train_wgan_ct, ("psnr", "ssim", "mae", "hf_ratio", "hf_ratio_fft")),
}


# task -> (the --data it generates, the --model names it accepts (first: the one it trains adversarially), the
# config field --epochs sets, the field --batch-size sets)
GAN_CLI_DEFAULTS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "gan-augment": ("lesions", ("acgan_generator",), "gan_epochs", "gan_batch_size"),
    "context-gan": ("paired", ("context_gan_cascade",), "epochs", "batch_size"),
    "wgan-ct": ("phantoms", ("wgan_ct_generator",), "epochs", "batch_size"),
}


def gan_recipe(task: str, fields: Mapping[str, Any] | None = None, **common: Any):
    """The config of ``task`` from ``fields`` (field name -> value) and ``common`` (``epochs``, ``seed``,
    ``out_dir``, ``device``, ``resume``... ; None values are left at the default). An unknown field is an error
    that lists the accepted ones."""
    if task not in GAN_TASKS:
        raise ValueError(f"unknown GAN task {task!r}; choose one of {sorted(GAN_TASKS)}")
    cls = GAN_TASKS[task][0]
    names = [f.name for f in dataclasses.fields(cls)]
    values = {k: v for k, v in common.items() if v is not None and k in names}
    values.update(dict(fields or {}))
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"--task {task}: unknown setting(s) {unknown}; {cls.__name__} accepts {names}")
    for key in ("seeds", "betas", "perceptual_layers"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return cls(**values)


def run_gan_task(task: str, fields: Mapping[str, Any] | None = None, *, print_fn: Callable = print, **common: Any):
    """Build the config (``gan_recipe``), run it, print the side-by-side table and what was written; return the
    ``GANRecipeResult``."""
    cfg = gan_recipe(task, fields, **common)
    result = GAN_TASKS[task][1](cfg)
    print_fn(f"{task}: {len(result.metrics)} arms, {result.seconds:.1f} s")
    print_fn(result.table(GAN_TASKS[task][2]))
    for name, path in result.files.items():
        print_fn(f"  {name}: {path}")
    if task == "wgan-ct" and cfg.out_dir is not None:
        last = os.path.join(cfg.out_dir, "wgan", "last.pt")
        print_fn(f"export: deploysdk export {last} {os.path.join(cfg.out_dir, 'denoiser.onnx')}")
    return result


def run_gan_cli(args) -> int:
    """``trainsdk train --task gan-augment|context-gan|wgan-ct --model M --data D [...]``: ``--data-arg`` and
    ``--model-arg`` set any field of the task's config (KEY=VALUE); ``--epochs``, ``--batch-size``, ``--seed``,
    ``--device``, ``--out`` (default ``runs/TASK``) and ``--resume`` the common ones; learning rates are config
    fields (``--model-arg lr_g=1e-4``), not ``--lr``."""
    data, models, epochs_field, batch_field = GAN_CLI_DEFAULTS[args.task]
    if args.data != data:
        raise ValueError(f"--task {args.task} generates its own {data} data: pass --data {data} (got {args.data!r}); "
                         f"--data-arg KEY=VALUE sets the sizes")
    if args.model not in models:
        raise ValueError(f"--task {args.task} trains {' / '.join(models)}: pass --model {models[0]} (got "
                         f"{args.model!r}); --model-arg KEY=VALUE sets its fields")
    fields = {**dict(args.data_arg), **dict(args.model_arg)}
    common = {epochs_field: args.epochs, batch_field: args.batch_size, "seed": args.seed, "device": args.device,
              "out_dir": args.out or os.path.join("runs", args.task), "resume": args.resume}
    run_gan_task(args.task, fields, **common)
    return 0
