"""``ropo eval`` and ``ropo report``: thin command-line layers over ``evaluate_models`` and ``build_report``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ropo.evaluation.drift import DEFAULT_HE_MODULES
from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.evaluate import Candidate, evaluate_models
from ropo.evaluation.measure import Evaluation
from ropo.generation import SamplingSettings
from ropo.evaluation.judges import load_judge
from ropo.evaluation.prompts import DEFAULT_PROMPTS, load_prompts
from ropo.evaluation.report import build_report
from ropo.evaluation.harness import require_lm_eval, run_lm_eval_cli
from ropo.evaluation.retention import BREVITY_MAX_NEW_TOKENS, load_qa_probe
from ropo.paths import check_writable, is_local_path, output_path

#: Held-out text passages ``ropo eval`` scores by default. The interval is over passages: with 64 of
#: them SmolLM2's mean log-likelihood per token came out ±0.09 nats (the demo); 100 narrow it to about
#: ±0.07 (1/√n), for a few seconds on a GPU.
DEFAULT_TEXT_PASSAGES = 100


def load_candidate(path: str, device: str) -> tuple[Candidate, str | None]:
    """The one place models are loaded: a run directory or any model ``ropo train`` accepts.

    Returns the candidate and the base it was tuned from when the model has no adapter to disable
    (a fully fine-tuned run), since only then is a second copy needed for base-relative metrics.
    """
    from ropo.models.runs import load_run

    run = load_run(path)
    model = run.model.to(device).eval()
    base = run.base_name_or_path if run.method != "base" and not hasattr(model, "disable_adapter") else None
    tuned_from = run.base_name_or_path if run.method != "base" else None
    return Candidate(run.name, model, run.tokenizer, source=str(path), method=run.method, base=tuned_from), base


def _check_local_path(path: str) -> None:
    """A path that can only be local and is missing is named as missing; the hub would only say
    it is not a valid repo id."""
    if is_local_path(path) and not Path(path).expanduser().exists():
        raise EvaluationError(f"{path}: no such folder (expected a run folder from ropo train, a model folder, "
                              "a hub id, default or tiny:<arch>)")


def _base_model(name: str, device: str, cache: dict[str, nn.Module]) -> nn.Module:
    if name not in cache:
        cache[name] = load_candidate(name, device)[0].model
    return cache[name]


def _candidates(args: argparse.Namespace, device: str) -> Iterator[Candidate]:
    """Load each model when its turn comes, with its base model if it needs one."""
    bases: dict[str, nn.Module] = {}
    for path in args.models:
        candidate, base_name = load_candidate(path, device)
        base_name = args.base or base_name
        if base_name is not None:
            candidate.base_model = _base_model(base_name, device, bases)
        yield candidate


def _run_eval(args: argparse.Namespace) -> int:
    for path in [*args.models, *(p for p in (args.baseline, args.base) if p)]:
        _check_local_path(path)  # before the judge and the first model load
    check_writable(output_path(args.output, "--output"), "--output")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = SamplingSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=not args.greedy,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        samples_per_prompt=1 if args.greedy else args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    tasks = lm_eval_tasks(args.lm_eval)
    prompts = load_prompts(args.prompts, args.max_prompts)
    judge = load_judge(args.judge, device)
    probe = () if args.qa_probe == "none" else load_qa_probe(args.qa_probe)
    try:  # the evaluation checks that every probe question has its multiple-choice distractors
        evaluation = Evaluation(
            prompts=prompts,
            sampling=settings,
            judge=judge,
            probe=probe,
            probe_max_new_tokens=BREVITY_MAX_NEW_TOKENS,
            text_passages=args.text_passages,
            lm_eval_tasks=tasks,
            lm_eval_limit=args.lm_eval_limit,
            lm_eval_chat_template=args.lm_eval_chat_template,
            he_modules=args.he_modules.split(","),
        )
    except EvaluationError as error:
        raise EvaluationError(f"--qa-probe {args.qa_probe or '(shipped)'}: {error}") from None
    baseline = load_candidate(args.baseline, device)[0] if args.baseline else None
    results = evaluate_models(_candidates(args, device), evaluation, args.output, baseline,
                              args.prompts or f"(shipped) {DEFAULT_PROMPTS}", progress=not args.no_progress)
    for result in results:
        shown = {k: v for k, v in result.metrics.items() if k in ("win_rate", "mean_length", "distinct_2", "kl")}
        print(f"{result.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items() if v is not None))
    print(f"results: {Path(args.output) / 'eval.json'}  (next: ropo report RUN_DIR ... {args.output})")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    report, metrics = build_report(args.paths, args.output)
    print(f"report: {report}\nmetrics: {metrics}")
    return 0


def lm_eval_tasks(text: str | None) -> tuple[str, ...]:
    """``--lm-eval``'s comma-separated tasks (ropo eval's and ropo frontier's); asking for any needs
    the harness, checked here, before any model loads."""
    tasks = tuple(task for task in (text or "").split(",") if task)
    if tasks:
        require_lm_eval()
    return tasks


def _at_least(text: str, minimum: int) -> int:
    value = int(text)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse's type for a count (ropo eval's and ropo frontier's options)."""
    return _at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse's type for a count where 0 means "skip"."""
    return _at_least(text, 0)


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="generate with each model and measure win rate, length, diversity, retention and drift",
        description="Evaluate trained runs (or any models) on a prompt set; writes eval.json, the generations, "
        "and AlpacaEval / MT-Bench answer files under --output.",
    )
    evaluate.add_argument("models", nargs="+", metavar="RUN_DIR_OR_MODEL")
    evaluate.add_argument("--prompts", help="JSONL with 'prompt'/'instruction'/'turns' (AlpacaEval .json and MT-Bench question.jsonl work); default: a shipped set")
    evaluate.add_argument("--max-prompts", type=positive_int, help="use only the first N prompts")
    evaluate.add_argument("--baseline", help="model every run is compared with (default: each run's own base model)")
    evaluate.add_argument("--base", help="base model for KL, retention and HE change of runs without an adapter (default: the run's recipe base)")
    evaluate.add_argument("--judge", default="none", help="'none', 'rm:<reward model>' or '<module>:<factory>' (default: none)")
    evaluate.add_argument("--qa-probe", help="JSONL of {question, answers}; 'none' to skip; default: a shipped probe")
    evaluate.add_argument("--text-passages", type=non_negative_int, default=DEFAULT_TEXT_PASSAGES,
                          help="passages of held-out text (the Python docs) whose log-likelihood is measured; "
                          f"0 to skip (default: {DEFAULT_TEXT_PASSAGES})")
    evaluate.add_argument("--lm-eval", help="comma-separated lm-evaluation-harness tasks for retention, e.g. mmlu,arc_easy "
                          "or ropo_qa (the QA probe); needs pip install 'ropo[eval]'")
    evaluate.add_argument("--lm-eval-limit", type=positive_int, help="examples per lm-eval task")
    evaluate.add_argument("--lm-eval-chat-template", action="store_true", help="render lm-eval prompts with the chat template "
                          "(as ropo's own QA probe is)")
    evaluate.add_argument("--he-modules", default=",".join(DEFAULT_HE_MODULES), help="layers measured in models without adapters")
    evaluate.add_argument("--max-new-tokens", type=positive_int, default=SamplingSettings.max_new_tokens)
    evaluate.add_argument("--temperature", type=float, default=SamplingSettings.temperature)
    evaluate.add_argument("--top-p", type=float, default=SamplingSettings.top_p)
    evaluate.add_argument("--top-k", type=int, default=SamplingSettings.top_k, help="0 = off")
    evaluate.add_argument("--samples", type=positive_int, default=SamplingSettings.samples_per_prompt, help="samples per prompt (self-BLEU needs 2+)")
    evaluate.add_argument("--greedy", action="store_true", help="greedy decoding, one sample per prompt")
    evaluate.add_argument("--seed", type=int, default=SamplingSettings.seed)
    evaluate.add_argument("--batch-size", type=positive_int, default=SamplingSettings.batch_size)
    evaluate.add_argument("--device", help="default: cuda if available, else cpu")
    evaluate.add_argument("--output", default="eval", help="output folder (default: ./eval)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=_run_eval)

    harness = subparsers.add_parser(
        "lm-eval",
        add_help=False,  # every argument, --help included, is lm-eval's
        help="lm-evaluation-harness's own command line with RoPO registered and ropo's tasks included",
        description="ropo lm-eval --model hf --model_args pretrained=BASE,peft=RUN/adapter --tasks mmlu",
    )
    harness.set_defaults(func=lambda args: run_lm_eval_cli(args.passthrough), passthrough=[])

    report = subparsers.add_parser(
        "report",
        help="an HTML report (and metrics.json) comparing runs",
        description="Compare training runs (metrics.jsonl), `ropo eval` results (eval.json) and `ropo frontier` "
        "studies (frontier.json) in one self-contained HTML page.",
    )
    report.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_EVAL",
                        help="run folders, eval folders, eval.json files or frontier study folders")
    report.add_argument("--output", default="report", help="output folder for report.html and metrics.json (default: ./report)")
    report.set_defaults(func=_run_report)

