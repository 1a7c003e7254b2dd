"""``trainsdk`` command line: ``trainsdk models`` lists the zoo, ``trainsdk demo`` runs the main job."""
from __future__ import annotations

import argparse
import sys

from . import demo


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


def zoo_rows(task: str | None = None) -> list[tuple[str, str, int, str, str]]:
    """(name, task, parameters at the default config, accepted input size, output) for every registered model."""
    from .models import create_model, list_models, model_entry

    rows = []
    for name in list_models(task=task):
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        contract = model.input_contract()
        out = "class map (N, K, *input size)" if model_entry(name).task == "segmentation" else "logits (N, K)"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainsdk", description="Train CNNs for medical imaging.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the model zoo with parameter counts and accepted input sizes")
    p.add_argument("--task", choices=["classification", "segmentation"])
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    p.set_defaults(fn=cmd_models)
    p = sub.add_parser("demo", help="train LeNet-5 on digits, export, run on ONNX Runtime, compare")
    demo.build_parser(p)
    p.set_defaults(fn=demo.run)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
