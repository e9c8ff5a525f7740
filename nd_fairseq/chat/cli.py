"""``nd-chat``: talk to one or several trained dialogue models at once, each answering side by side.

    nd-chat --model standard=checkpoints/standard --model nd=checkpoints/nd
    nd-chat --model nd=checkpoints/nd/checkpoint_best.pt --data data-bin/full --beam 5
    nd-chat --model standard=... --model nd=... --input queries.txt --output replies.jsonl

Each ``--model`` is ``NAME=PATH`` (or just ``PATH``), a checkpoint file or the ``--save-dir`` of
fairseq-train (its best, else its last checkpoint). The text is prepared as the model's data was
(``DATA/preprocessing.json``); ``--data DIR`` names the binarised data directory when the one the
checkpoint was trained on cannot be found from here. In the terminal, lines starting with ``/``
are commands (``/help``); with ``--input`` every line of the file is one message and the replies
are written as JSON lines: ``{"query": ..., "replies": {NAME: reply, ...}}``.
"""

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from ..io_utils import AtomicFiles, InputError, read_lines, require_file
from .generation import generation_options

PROG = "nd-chat"
HELP = """commands:
  /greedy                 greedy decoding (the default)
  /beam N                 beam search with N beams
  /sample [k=v ...]       sampling; optional top_k=K top_p=P temperature=T seed=S
  /set k=v ...            set a decoding option: beam, top_k, top_p, temperature, seed,
                          no_repeat_ngram_size, max_len (seed=none, top_k=none, ... to unset)
  /settings               show the decoding options
  /help                   this text
  /quit                   leave (Ctrl-D too)"""
SETTABLE = {"beam": int, "top_k": int, "top_p": float, "temperature": float, "seed": int,
            "no_repeat_ngram_size": int, "max_len": int}


def parse_model_spec(spec: str) -> Tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (named after its directory)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        base = path.rstrip(os.sep)
        name = os.path.basename(os.path.dirname(base) if os.path.isfile(base) else base) or "model"
    if not name or not path:
        raise InputError(f"--model {spec!r}: give NAME=PATH (e.g. nd=checkpoints/nd) or a checkpoint path")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=HELP)
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                   help="a model to talk to: checkpoint file or fairseq-train --save-dir (repeat for side by side)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="binarised data directory of the models (default: the one each was trained on)")
    g = p.add_argument_group("text preparation (for data directories without preprocessing.json)")
    g.add_argument("--tokenize", default=None, choices=("moses", "whitespace", "none"),
                   help="word tokenisation nd-prepare applied (default: as DATA/preprocessing.json records)")
    g.add_argument("--no-lowercase", dest="lowercase", action="store_false", default=None,
                   help="the text was not lowercased")
    g.add_argument("--sentencepiece-model", default=None, help="default DATA/spm.model")
    d = p.add_argument_group("decoding (fairseq-generate's options)")
    d.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy (default)")
    d.add_argument("--sample", action="store_true", help="sample instead of searching")
    d.add_argument("--top-k", type=int, default=None, help="sampling: the K most likely tokens only")
    d.add_argument("--top-p", type=float, default=None, help="sampling: nucleus of probability P")
    d.add_argument("--temperature", type=float, default=1.0)
    d.add_argument("--seed", type=int, default=None, help="seed of sampling (each message is reseeded)")
    d.add_argument("--no-repeat-ngram-size", type=int, default=0)
    d.add_argument("--max-len", type=int, default=None, help="at most N tokens per reply (default 200)")
    r = p.add_argument_group("device")
    r.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    r.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    r.add_argument("--bf16", action="store_true", help="bfloat16 (CUDA or CPU)")
    io = p.add_argument_group("non-interactive use")
    io.add_argument("--input", default=None, metavar="FILE", help="one message per line; no terminal chat")
    io.add_argument("--output", default=None, metavar="FILE", help="JSON lines of replies (default stdout)")
    p.add_argument("--history", default=os.path.join("~", ".nd_chat_history"),
                   help="readline history file of the terminal chat (default ~/.nd_chat_history; '' for none)")
    return p


def decoding_from_args(args) -> Dict[str, object]:
    return {"beam": args.beam, "sampling": args.sample, "top_k": args.top_k, "top_p": args.top_p,
            "temperature": args.temperature, "seed": args.seed,
            "no_repeat_ngram_size": args.no_repeat_ngram_size, "max_len": args.max_len}


def describe(decoding: Dict[str, object]) -> str:
    if decoding["sampling"]:
        mode = "sampling" + "".join(f" {k}={decoding[k]}" for k in ("top_k", "top_p") if decoding[k] is not None)
        mode += f" temperature={decoding['temperature']}"
    else:
        mode = "greedy" if decoding["beam"] == 1 else f"beam {decoding['beam']}"
    extras = [f"{k}={decoding[k]}" for k in ("seed", "max_len") if decoding[k] is not None]
    if decoding["no_repeat_ngram_size"]:
        extras.append(f"no_repeat_ngram_size={decoding['no_repeat_ngram_size']}")
    return mode + (f" ({', '.join(extras)})" if extras else "")


def load_models(args) -> Dict[str, object]:
    specs = [parse_model_spec(s) for s in args.model]
    names = [n for n, _ in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(f"two --model options are named {duplicate!r}; give each NAME=PATH a different NAME")
    from .checkpoint_path import resolve_checkpoint

    for name, path in specs:  # every path checked before the (slow) first load
        try:
            resolve_checkpoint(path)
        except InputError as err:
            raise InputError(f"--model {name}={path}: {err}") from None
    if args.fp16 and args.bf16:
        raise InputError("--fp16 and --bf16 exclude each other; give one")
    import torch

    from .model import DialogueModel

    use_cuda = torch.cuda.is_available() and not args.cpu
    if args.fp16 and not use_cuda:
        raise InputError("--fp16 needs CUDA; on the CPU use --bf16 or full precision")
    models = {}
    for name, path in specs:
        try:
            bot = DialogueModel.from_pretrained(path, data=args.data, tokenize=args.tokenize,
                                                lowercase=args.lowercase,
                                                sentencepiece_model=args.sentencepiece_model)
        except InputError as err:
            raise InputError(f"--model {name}={path}: {err}") from None
        if use_cuda:
            bot.cuda()
        if args.fp16:
            bot.half()
        elif args.bf16:
            bot.bfloat16()
        models[name] = bot
    return models


def replies_to(models, messages: Sequence[str], decoding) -> List[Dict[str, str]]:
    """Per message, every model's reply (each model decodes all messages in one batched call)."""
    per_model = {name: bot.reply_batch(list(messages), **decoding) for name, bot in models.items()}
    return [{name: per_model[name][i] for name in models} for i in range(len(messages))]


def run_batch(models, args, decoding) -> int:
    require_file(args.input, "--input file", "give a text file with one message per line")
    messages = read_lines(args.input)
    for no, message in enumerate(messages, 1):
        if not message.strip():
            raise InputError(f"{args.input}: line {no} is an empty message; give one message per line")
    rows = [json.dumps({"query": m, "replies": r}, ensure_ascii=False)
            for m, r in zip(messages, replies_to(models, messages, decoding))]
    if args.output:
        directory, name = os.path.split(os.path.abspath(args.output))
        with AtomicFiles(directory) as out:
            out.open(name).write("".join(row + "\n" for row in rows))
        print(f"{PROG}: {len(rows)} messages, {len(models)} models -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write("".join(row + "\n" for row in rows))
    return 0


def apply_command(line: str, decoding: Dict[str, object]) -> Optional[str]:
    """Run a ``/command``; returns the text to show, or None for /quit."""
    parts = line[1:].split()
    command, rest = (parts[0].lower(), parts[1:]) if parts else ("help", [])
    if command in ("quit", "exit", "q"):
        return None
    if command == "help":
        return HELP
    if command == "settings":
        return f"decoding: {describe(decoding)}"
    if command == "greedy":
        decoding.update(beam=1, sampling=False)
    elif command == "beam":
        if len(rest) != 1 or not rest[0].isdigit() or int(rest[0]) < 1:
            return "usage: /beam N (N >= 1)"
        decoding.update(beam=int(rest[0]), sampling=False)
    elif command in ("sample", "set"):
        updates = {}
        for item in rest:
            key, sep, value = item.partition("=")
            key = key.replace("-", "_")
            if not sep or key not in SETTABLE:
                return f"/{command}: {item!r} is not KEY=VALUE with KEY one of {', '.join(SETTABLE)}"
            try:
                updates[key] = None if value.lower() == "none" else SETTABLE[key](value)
            except ValueError:
                return f"/{command}: {key} takes a number, not {value!r}"
        trial = {**decoding, **updates, **({"sampling": True, "beam": 1} if command == "sample" else {})}
        try:
            generation_options(**{k: v for k, v in trial.items() if k != "seed"})
        except InputError as err:
            return f"/{command}: {err}"
        decoding.clear()
        decoding.update(trial)
    else:
        return f"unknown command /{command}; /help lists the commands"
    return f"decoding: {describe(decoding)}"


def setup_history(path: str):
    """readline line editing and history for the terminal chat; returns the save function."""
    try:
        import readline
    except ImportError:  # pragma: no cover - no readline on this platform
        return lambda: None
    if not path:
        return lambda: None
    path = os.path.expanduser(path)
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(1000)

    def save():
        try:
            readline.write_history_file(path)
        except OSError:
            pass

    return save


def chat(models, args, decoding) -> int:
    terminal = sys.stdin.isatty()
    width = max(len(n) for n in models)
    save_history = setup_history(args.history) if terminal else (lambda: None)
    print(f"talking to {', '.join(models)} ({describe(decoding)}); /help for commands, /quit or Ctrl-D to leave",
          flush=True)
    try:
        while True:
            if terminal:
                try:
                    line = input("you> ")
                except EOFError:
                    break
                except KeyboardInterrupt:  # drop the line being typed, as Python's prompt does
                    print()
                    continue
            else:
                line = sys.stdin.readline()
                if not line:
                    break
                line = line.rstrip("\n")
            if line.strip().startswith("/"):
                shown = apply_command(line.strip(), decoding)
                if shown is None:
                    break
                print(shown, flush=True)
                continue
            if not line.strip():
                print(f"{PROG}: empty message: type some text (/help for commands)", flush=True)
                continue
            try:
                replies = replies_to(models, [line], decoding)[0]
            except KeyboardInterrupt:
                print("(interrupted)", flush=True)
                continue
            except InputError as err:
                print(f"{PROG}: {err}", flush=True)
                continue
            for name, text in replies.items():
                print(f"{name:>{width}}> {text}", flush=True)
    finally:
        save_history()
    if terminal:
        print()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    import logging
    import warnings

    # before fairseq is imported: some of its modules call logging.basicConfig(level=INFO)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=UserWarning)
    args = build_parser().parse_args(argv)
    decoding = decoding_from_args(args)
    try:
        generation_options(**{k: v for k, v in decoding.items() if k != "seed"})
        if args.output and not args.input:
            raise InputError("--output needs --input FILE (the messages to answer)")
        models = load_models(args)
        if args.input:
            return run_batch(models, args, decoding)
        return chat(models, args, decoding)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
