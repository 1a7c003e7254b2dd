"""``trainsdk`` command line: ``trainsdk models`` lists the zoo, ``trainsdk demo`` runs the main job, ``trainsdk
train`` runs a classification or segmentation recipe (``trainsdk.training.recipes``), optionally with transfer.

User errors print one line on stderr and exit with status 2 (``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import demo

EPILOG = "Exit status: 0 ok, 2 error (one line on stderr; --debug for the traceback)."


def _input_text(contract: dict) -> str:
    dims = "x".join(map(str, contract["default_size"]))
    if contract["fixed_size"]:
        return f"{dims} only"
    rule = f">= {contract['min_size']}"
    if contract["multiple"] > 1:
        rule += f", multiple of {contract['multiple']}"
    if contract.get("size_offset"):  # valid-convolution U-Net: sizes step*k + offset
        rule = f">= {contract['min_size']}, of the form {contract['size_step']}k{contract['size_offset']:+d}"
    return f"{rule} (default {dims})"


_OUTPUTS = {"segmentation": "class map (N, K, *input size)", "reconstruct": "reconstruction (N, C, *input size)",
            "restore": "restored image (N, C, *input size)", "translate": "image in the target modality",
            "generation": "generated image (N, C, H, W)", "discrimination": "real/fake or class logits"}


def zoo_rows(task: str | None = None) -> list[tuple[str, str, int, str, str]]:
    """(name, task, parameters at the default config, accepted input size, output) for every registered model."""
    from .models import create_model, list_models, model_entry

    rows = []
    for name in list_models(task=task):
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        contract = model.input_contract()
        out = _OUTPUTS.get(model_entry(name).task, "logits (N, K)")
        if contract.get("output_border"):
            out = f"class map, {contract['output_border']} px smaller per side"
        rows.append((name, model_entry(name).task, params, _input_text(contract), out))
    return rows


def cmd_models(args) -> None:
    rows = zoo_rows(args.task)
    if args.markdown:
        print("| model | task | parameters (default config) | input size (per spatial dim) | output |")
        print("|---|---|---:|---|---|")
        for name, task, params, size, out in rows:
            print(f"| `{name}` | {task} | {params:,} | {size} | {out} |")
        return
    for name, task, params, size, out in rows:
        print(f"{name:<20} {task:<15} {params:>13,}  {size}")


# --- trainsdk train ------------------------------------------------------------------------------------------
def _key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (``64``, ``[32, 32]``, ``true``), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _regime(args):
    """The transfer regime the flags describe; a flag that does not apply to it is an error, not ignored."""
    from .training.recipes import make_regime

    per_regime = {"features": {"classifier": args.classifier}, "finetune": {"layer_lr_decay": args.layer_lr_decay},
                  "truncate": {"stage": args.stage, "freeze": args.freeze or None}, "frozen": {}}
    flags = {"classifier": "--classifier", "layer_lr_decay": "--layer-lr-decay", "stage": "--stage",
             "freeze": "--freeze"}
    given = {k for kw in per_regime.values() for k, v in kw.items() if v is not None}
    if args.transfer is None:
        if given:
            raise ValueError(f"{', '.join(flags[k] for k in sorted(given))} need(s) --transfer")
        return "finetune" if args.weights else None
    if args.weights is None and args.transfer != "truncate":
        raise ValueError(f"--transfer {args.transfer} needs --weights FILE (the pretrained state_dict)")
    wrong = sorted(k for k in given if k not in per_regime[args.transfer])
    if wrong:
        raise ValueError(f"{', '.join(flags[k] for k in wrong)} do(es) not apply to --transfer {args.transfer}")
    return make_regime(args.transfer, **{k: v for k, v in per_regime[args.transfer].items() if v is not None})


def recipe_from_args(args):
    """The ``ClassifyRecipe``/``SegmentRecipe`` the command line describes (no logic the API lacks)."""
    from .training.recipes import ClassifyRecipe, SegmentRecipe

    cls = ClassifyRecipe if args.task.startswith("classif") else SegmentRecipe
    optional = {"batch_size": args.batch_size, "loss": args.loss}
    return cls(model=args.model, model_kwargs=dict(args.model_arg), data=args.data, data_kwargs=dict(args.data_arg),
               test_fraction=args.test_fraction, val_fraction=args.val_fraction, train_samples=args.train_samples,
               epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, optimizer=args.optimizer,
               schedule=args.schedule, loss_kwargs=dict(args.loss_arg), augment=args.augment, profile=args.profile,
               weights=args.weights, transfer=_regime(args), seed=args.seed,
               out_dir=args.out or os.path.join("runs", f"{args.model}-{args.data}"), device=args.device,
               precision=args.precision, resume=args.resume, progress=not args.quiet,
               **{k: v for k, v in optional.items() if v is not None})


def cmd_train(args) -> int:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from .training.recipes import train_classifier, train_segmenter
    from .training.recipes.autoencode import CLI_TASKS, run_cli_task

    if args.task in CLI_TASKS:  # issue 7: autoencoders and semi-supervised experiments
        return run_cli_task(args)
    from .gan.recipes.cli import GAN_TASKS, run_gan_cli

    if args.task in GAN_TASKS:  # issue 8: GAN recipes (augmentation, cross-modality, low-dose CT)
        return run_gan_cli(args)

    cfg = recipe_from_args(args)
    result = (train_classifier if args.task.startswith("classif") else train_segmenter)(cfg)
    if result.load_report is not None:
        print(f"weights {args.weights}: {result.load_report}")
    print(f"{args.model} on {args.data}: {result.summary()}")
    for name, value in result.test_metrics.items():
        print(f"  {name:<14} {value:.4f}")
    if result.checkpoint:
        if "@" in getattr(result.model, "model_name", ""):
            print(f"truncated network: rebuild it with trainsdk.training.recipes.load_truncated({result.checkpoint!r})")
        else:
            print(f"export: deploysdk export {result.checkpoint} {os.path.splitext(result.checkpoint)[0]}.onnx")
    return 0


def _add_train(sub) -> None:
    from .augment import list_profiles
    from .data import list_builtin
    from .training.recipes import OPTIMIZERS, REGIMES, SCHEDULES
    from .training.recipes._classical import CLASSIFIERS

    p = sub.add_parser("train", help="train a classifier or a segmentation network (recipes, transfer learning)",
                       epilog=EPILOG, description="Train any registered model on a built-in dataset; writes "
                       "OUT/last.pt and best.pt (resumable; deploysdk export takes them) and prints test metrics.")
    p.add_argument("--model", required=True, help="a registered model (trainsdk models)")
    p.add_argument("--task", required=True, choices=["classify", "segment", "classification", "segmentation",
                                                     "denoise", "superres", "lowdose", "anomaly", "mean-teacher",
                                                     "gan-augment", "context-gan", "wgan-ct"])
    p.add_argument("--data", required=True, help=f"built-in dataset: {', '.join(list_builtin())}")
    for flag, what in (("--data-arg", "dataset loader"), ("--model-arg", "create_model"), ("--loss-arg", "loss")):
        p.add_argument(flag, action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                       help=f"{what} argument, repeatable (VALUE as JSON: 64, [32,32], true)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, help="default 32 (classify), 8 (segment)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--schedule", choices=SCHEDULES, default="onecycle")
    p.add_argument("--loss", help="ce, dice, dice_ce, focal (default ce / dice_ce)")
    p.add_argument("--augment", choices=["none", "classic"], default="none")
    p.add_argument("--profile", help=f"clinical limits for --augment: {', '.join(list_profiles())}")
    p.add_argument("--train-samples", type=int, help="train on this many images (class-balanced)")
    p.add_argument("--val-fraction", type=float, default=0.0, help="of the training images, for best.pt")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--out", help="output folder (default runs/MODEL-DATA)")
    p.add_argument("--resume", help="'auto' (OUT/last.pt when it exists) or a checkpoint path")
    p.add_argument("--transfer", choices=list(REGIMES), help="transfer-learning regime (needs --weights)")
    p.add_argument("--weights", help="pretrained state_dict file (.pt/.pth/.safetensors); alone: fine-tune")
    p.add_argument("--classifier", choices=CLASSIFIERS, help="--transfer features: the classical classifier")
    p.add_argument("--layer-lr-decay", type=float, help="--transfer finetune: lr factor per stage below the head")
    p.add_argument("--stage", help="--transfer truncate: the stage to cut after (e.g. layer3)")
    p.add_argument("--freeze", action="store_true", help="--transfer truncate: train the new head only")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="PyTorch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainsdk", description="Train CNNs for medical imaging.", epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the model zoo with parameter counts and accepted input sizes")
    p.add_argument("--task", choices=["classification", "segmentation", "reconstruct", "restore", "translate",
                                      "generation", "discrimination"])
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    p.set_defaults(fn=cmd_models)
    p = sub.add_parser("demo", help="train LeNet-5 on digits, export, run on ONNX Runtime, compare")
    demo.build_parser(p)
    p.set_defaults(fn=demo.run)
    _add_train(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from .models.weights import WeightsError
    from .training.checkpoint import CheckpointError

    return (ValueError, TypeError, KeyError, OSError, WeightsError, CheckpointError)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.fn(args)
    except _user_errors() as e:
        if args.debug:
            raise
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"trainsdk {args.command}: error: {' '.join(str(text).split())}", file=sys.stderr)
        return 2
    return out if isinstance(out, int) else 0


if __name__ == "__main__":
    sys.exit(main())
