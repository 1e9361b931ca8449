"""Every file and folder name ropo writes, one name per file: what a run, the demo, an evaluation
and the frontier study leave on disk. Below everything that writes or reads them."""

# A training run's folder (``ropo train``); the final weights' folder is the method's
# (``ropo.methods.Method.weights_dir``).
RECIPE_FILE = "recipe.yaml"
RUN_METRICS_FILE = "metrics.jsonl"
ENVIRONMENT_FILE = "environment.json"
TRAIN_SUMMARY_FILE = "train_summary.json"
#: The base model the run trained on, resolved and fingerprinted (``ropo.models.fingerprint``).
RUN_BASE_FILE = "base.json"
#: Held by the run writing the folder; a second run into it is refused, naming the first's PID.
LOCK_FILE = ".ropo.lock"
#: Written first into every run folder ropo makes: a folder is a run only with it, so a user's own
#: ``recipe.yaml`` or ``data/`` is never taken for a run's (and never removed by ``--restart``).
RUN_MARKER = ".ropo-run"
#: The run's copies of its data sets, inside ``data/`` (which may also hold the user's files).
RUN_DATA_SPLITS = ("train", "eval")

# ``ropo eval`` and the report.
EVAL_FILE = "eval.json"
REPORT_FILE = "report.html"

# ``ropo demo``'s output folder.
DEMO_METRICS_FILE = "metrics.json"
DEMO_SUMMARY_FILE = "summary.md"

# ``ropo frontier``'s study folder.
FRONTIER_FILE = "frontier.json"
FRONTIER_SUMMARY_FILE = "summary.md"
FRONTIER_COMPARISONS_FILE = "comparisons.md"
POINTS_DIR = "points"
PLOTS_DIR = "plots"
RUNS_DIR = "runs"
TRAIN_SECONDS_FILE = "train_seconds.json"
#: Written into a run folder whose training stopped on a non-finite value: its checkpoints up to
#: then are measured, and the run is not retried while its recipe stays the same.
DIVERGED_FILE = "diverged.json"
