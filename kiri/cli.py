"""The umbrella `kiri` command: model commands (train, generate, info), and `kiri STAGE …`,
which runs the stage kiri-STAGE."""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kiri import add_version_option, complete
from kiri.dashboard import server as dashboard
from kiri.feedback import verdicts
from kiri.home import retention, tasks
from kiri.home.paths import kiri_home
from kiri.home.runner import run_main
from kiri.home.store import Store, db_path
from kiri.model import weights
from kiri.model.size import ModelSize, num_params
from kiri.model.training import TextDocs, engine_class, new_engine, train
from kiri.score import commands as atom_commands
from kiri.score.progress import Progress
from kiri.supervise import service, status
from kiri.wire.errors import KiriError
from kiri.wire.output import add_json_option

STAGES = {
    "collect": "kiri.collect.stage",
    "atom": "kiri.score.stage",
    "decide": "kiri.decide.stage",
    "act": "kiri.act.stage",
    "supervise": "kiri.supervise.supervisor",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiri",
        description="KIRI, a personal anomaly detector. "
        f"`kiri STAGE ARGS…` runs a stage ({', '.join(STAGES)}), like kiri-STAGE.",
    )
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train an atom, or a character-level model (--text)")
    t.add_argument(
        "atom",
        nargs="?",
        metavar="ATOM",
        help="train this atom on its recordings (or on --from files)",
    )
    t.add_argument(
        "--from",
        dest="files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="train the atom on these recorded streams instead of its recordings",
    )
    t.add_argument(
        "--window",
        type=int,
        default=50_000,
        help="train the atom on at most its N most recent observations",
    )
    t.add_argument(
        "--text",
        type=Path,
        metavar="FILE",
        help="train a character-level model on FILE, one document per line",
    )
    _model_options(t)
    t.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps (default: the atom's own, 1000 for pulse and 2000 for "
        "an atom fitted from its data; 1000 for --text)",
    )
    t.add_argument(
        "--batch",
        type=int,
        default=None,
        help="documents per step (default: 32 for an atom, 1 for --text)",
    )
    t.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (decays to 0)")
    t.add_argument("--seed", type=int, default=42, help="seed of the shuffle, init and samples")
    t.add_argument(
        "--engine",
        choices=("fast", "pure"),
        default="fast",
        help="fast: numpy (default); pure: the scalar-autograd reference, slow",
    )
    t.add_argument("--log-every", type=int, default=100, help="print the loss every N steps")
    t.add_argument("--samples", type=int, default=20, help="samples to print after training")
    t.add_argument("--temperature", type=float, default=0.5, help="sampling temperature")
    t.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="where to save the weights (default: $KIRI_HOME/atoms/ATOM/weights.json, "
        "or $KIRI_HOME/models/STEM.json for --text)",
    )

    s = sub.add_parser("score", help="how surprising one observation is to an atom, and why")
    s.add_argument("atom", metavar="ATOM", help="a trained atom")
    s.add_argument("tokens", nargs="?", metavar="TOKENS", help='tokens, e.g. "C9 M9 D4 S4 L4 N1"')
    s.add_argument(
        "--values",
        metavar="NAME=X,…",
        help="raw values instead of tokens, e.g. cpu=97,mem=95,disk=40,swap=0,load=2,net=1",
    )
    s.add_argument(
        "--meta",
        metavar="NAME=X,…",
        default="",
        help="meta fields for --values (default: this host's, e.g. cpus)",
    )
    s.add_argument(
        "--weights", type=Path, metavar="PATH", help="weights file (default: the atom's)"
    )

    g = sub.add_parser("generate", help="sample documents from a trained model")
    g.add_argument("weights", type=Path, metavar="WEIGHTS", help="a weights file")
    g.add_argument("--samples", type=int, default=20, help="how many samples")
    g.add_argument("--temperature", type=float, default=0.5, help="sampling temperature")
    g.add_argument("--seed", type=int, default=42, help="seed of the draws")

    i = sub.add_parser("info", help="describe an atom or a weights file")
    i.add_argument("weights", metavar="ATOM|WEIGHTS", help="an atom name or a weights file")

    verdicts.add_parsers(sub)
    _task_parser(sub)
    st = sub.add_parser(
        "status", help="what kiri-supervise and each stage of its pipeline are doing"
    )
    add_json_option(st)
    pr = sub.add_parser(
        "prune", help="remove recordings, alert log lines and alerts older than [retention] keeps"
    )
    pr.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    service.add_parser(sub)
    dashboard.add_parser(sub)
    for name in STAGES:
        sub.add_parser(name, help=f"run the stage kiri-{name} (same arguments)")
    return parser


def _task_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    k = sub.add_parser("task", help="keep a task log (the drift atom watches it)")
    actions = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="add a task; prints its id")
    a.add_argument("title", metavar="TITLE", help="what is to be done")
    a.add_argument(
        "--project",
        default=None,
        help="the task's project (default: the current one, see `kiri task switch`)",
    )
    d = actions.add_parser("done", help="mark a task done")
    d.add_argument("id", type=int, metavar="ID", help="the task's id, from `kiri task list`")
    s = actions.add_parser("switch", help="record that you now work on another project")
    s.add_argument("project", metavar="PROJECT", help="the project you switch to")
    ls = actions.add_parser("list", help="open tasks, with their ids, projects and age")
    ls.add_argument("--all", action="store_true", help="include the tasks that are done")
    add_json_option(ls)


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-layer", type=int, default=1, help="transformer layers")
    p.add_argument("--n-embd", type=int, default=16, help="embedding width")
    p.add_argument("--n-head", type=int, default=4, help="attention heads (must divide n-embd)")
    p.add_argument("--block-size", type=int, default=16, help="longest context, in tokens")


def cmd_train(args: argparse.Namespace) -> None:
    if (args.atom is None) == (args.text is None):
        raise KiriError("name an ATOM to train, or give --text FILE")
    if args.atom:
        atom_commands.train(args)
        return
    args.batch = args.batch or 1
    args.steps = 1000 if args.steps is None else args.steps
    if args.steps < 1 or args.batch < 1:
        raise KiriError("--steps and --batch must be at least 1")
    rng = random.Random(args.seed)
    try:
        docs = TextDocs(args.text, rng)
    except (OSError, UnicodeDecodeError) as e:
        raise KiriError(f"cannot read {args.text}: {e}") from e
    if not docs.docs:
        raise KiriError(f"{args.text} holds no documents")
    config = ModelSize(docs.vocab_size, args.n_layer, args.n_embd, args.n_head, args.block_size)
    if problems := config.problems():
        raise KiriError("; ".join(problems))
    print(f"num docs: {len(docs.docs)}")
    print(f"vocab size: {config.vocab_size}")
    print(f"num params: {num_params(config)}")
    engine = new_engine(args.engine, config, rng)
    started = time.monotonic()
    loss = train(
        engine,
        docs.token_docs(),
        args.steps,
        batch=args.batch,
        lr=args.lr,
        on_step=Progress(args.steps, args.log_every),
    )
    seconds = time.monotonic() - started
    if args.samples:
        print("--- inference (new, hallucinated names) ---")
    for i in range(args.samples):
        ids = engine.sample(rng, args.temperature)
        print(f"sample {i + 1:2d}: {''.join(docs.chars[t] for t in ids)}")
    out = args.out or kiri_home() / "models" / f"{args.text.stem}.json"
    provenance = weights.Provenance(
        source=str(args.text),
        steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        lr=args.lr,
        engine=args.engine,
        final_loss=loss,
        seconds=seconds,
    )
    model_id = weights.save(out, config, docs.chars, engine.matrices(), provenance)
    print(f"trained in {seconds:.2f} s; weights saved to {out} (id {model_id})", file=sys.stderr)


def _load(path: Path) -> weights.Weights:
    return weights.load(path)


def cmd_generate(args: argparse.Namespace) -> None:
    w = _load(args.weights)
    engine = engine_class("fast")(w.config, w.matrices)
    rng = random.Random(args.seed)
    joiner = "" if all(len(t) == 1 for t in w.vocab) else " "
    for i in range(args.samples):
        ids = engine.sample(rng, args.temperature)
        print(f"sample {i + 1:2d}: {joiner.join(w.vocab[t] for t in ids)}")


def cmd_info(args: argparse.Namespace) -> None:
    if "/" not in args.weights and not args.weights.endswith(".json"):
        atom_commands.info(args.weights)
        return
    path = Path(args.weights)
    for line in weights.describe(_load(path), path):
        print(line)


def cmd_prune(args: argparse.Namespace) -> None:
    """kiri prune [--dry-run]: what [retention] no longer keeps, removed now."""
    if db_path().exists():
        with Store() as store:
            removed = retention.prune(store, time.time(), args.dry_run)
    else:  # no store yet: none is made
        removed = retention.prune(None, time.time(), args.dry_run)
    for line in retention.describe(removed, args.dry_run):
        print(line)


COMMANDS = {
    "train": cmd_train,
    "score": atom_commands.score,
    "generate": cmd_generate,
    "info": cmd_info,
    "alerts": verdicts.cmd_alerts,
    "feedback": verdicts.cmd_feedback,
    "rules": verdicts.cmd_rules,
    "prune": cmd_prune,
    "task": tasks.cmd_task,
    "status": lambda args: status.show(args.json),
    "service": service.cmd_service,
    "dashboard": dashboard.cmd_dashboard,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STAGES:
        stage: Callable[[list[str]], int] = importlib.import_module(STAGES[argv[0]]).main
        return stage(argv[1:])
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
