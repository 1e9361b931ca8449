"""Evaluation of aligned models: generation, judges, retention, drift, exports and the HTML report."""

from ropo.adapter import orthogonality_error
from ropo.evaluation.drift import LayerEnergy, Reference, generation_kl, layer_energies
from ropo.evaluation.errors import EvaluationError
from ropo.evaluation.evaluate import Candidate, ModelEvaluation, evaluate_candidate, evaluate_models
from ropo.evaluation.export import alpaca_eval_outputs, mt_bench_answers, write_exports
from ropo.generation import Generation, Prompt, SamplingSettings, generate
from ropo.evaluation.measure import Evaluation, Measured, Point, measure_items, summarize
from ropo.evaluation.judges import Judge, PointwiseJudge, RewardModelJudge, judged_preferences, load_judge
from ropo.evaluation.prompts import load_prompts
from ropo.evaluation.report import build_report
from ropo.evaluation.retention import QAItem, QAResult, lm_eval_scores, load_qa_probe, qa_probe

__all__ = [
    "Candidate",
    "Evaluation",
    "EvaluationError",
    "Generation",
    "Judge",
    "LayerEnergy",
    "Measured",
    "ModelEvaluation",
    "Point",
    "PointwiseJudge",
    "Prompt",
    "QAItem",
    "QAResult",
    "Reference",
    "RewardModelJudge",
    "SamplingSettings",
    "alpaca_eval_outputs",
    "build_report",
    "evaluate_candidate",
    "evaluate_models",
    "generate",
    "generation_kl",
    "layer_energies",
    "lm_eval_scores",
    "load_judge",
    "load_prompts",
    "load_qa_probe",
    "measure_items",
    "mt_bench_answers",
    "orthogonality_error",
    "qa_probe",
    "judged_preferences",
    "summarize",
    "write_exports",
]
