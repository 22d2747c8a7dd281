"""Cost before running: jobs, seconds per job and totals per stage, from rates measured here.

Sizing a SLURM allocation (or deciding whether a config fits a weekend) needs the grid's
cost before the grid runs. This command counts every stage's jobs with the stage table
(:func:`xaipipe.pipeline.jobs`, so replicates, ROAR seeds, oracle grids and switched-off
stages are counted exactly as Snakemake and DVC will run them) and prices each job with a
model of what its library function does, in units measured on the current device::

    python -m xaipipe.cost --config config.yaml [config/demo.yaml ...]
    python -m xaipipe.cost --config config.yaml config/demo.yaml --check results

**Measured here** (about 15 s on an idle 2-core CPU for the demo, minutes when it is busy;
seconds on a GPU), on the device a
job of this config gets (``device``, :func:`xaipipe.device.claim_job_device`), at the
configured ``model.arch`` and ``resolution``, warm-up excluded:

* ``forward``: eval-mode forward passes, images/s (evaluation, prediction, occlusion,
  SCG/CCG, ROAD);
* ``backward``: forward + backward to the input, images/s (gradient-based attribution,
  feature visualisation, undesirable-pixel masks);
* ``train``: one training step as :func:`xaipipe.train.train_classifier` takes it
  (augmentation, ``train.amp`` / ``channels_last`` on CUDA, loss, backward, optimiser),
  images/s (train, ROAR/KAR retraining, the sanity check's shuffled-label model);
* ``impute``: seconds per (image, mask) system of ROAD's noisy linear imputation with
  ``roar.road_solver`` at the configured fractions (smooth attribution-like masks);
* ``model load``: building the model and loading its weights;
* ``start-up``: what a fresh stage process pays before it works. One Python process imports,
  one after the other, every module the active stages import at load time (torch,
  torchvision, pandas, scipy.stats, Captum, ... and the ``xaipipe`` modules;
  :func:`startup_modules` finds each stage's set in its script's import statements), so a
  stage's start-up is the interpreter's start plus the sum over its own modules, plus
  validating the config. With ``$XAIPIPE_FORKSERVER`` naming a live fork server (``make
  demo``; docs/orchestration.md, "Warm start") it is instead the wall time of handing
  ``workflow_scripts/<stage>.py --help`` to the server, the same for every stage.

On CPU the rates are measured at every thread count the active stages use (``Stage.threads``,
passed to the jobs as ``--threads``); on CUDA once.

**The model of a job** (:data:`WORK`, one function per stage): ``start-up + model load +
forward/forward_rate + backward/backward_rate + train/train_rate + imputations x impute + CPU
constants``. The image counts come from the config: the split sizes (``synthetic.*_images``;
VOC 2012's segmentation split, :data:`VOC_SPLITS`), ``train.epochs`` (per variant, with
``train_overrides``), ``roar.epochs``, ``explain.splits`` and the per-method cost
(:func:`method_passes`), ``featvis.steps`` x classes, ``undesirable.iterations`` x
``num_images`` x methods, the sanity cascade, SCG/CCG's kernels x rhos x mask sets x growth,
ROAD's fractions x 2 orders. The CPU constants (figures, the data stages' per-image work,
the report) were measured on the 2-core demo machine and are named below; they are small
next to the device work of a real grid.

**Assumptions**, each a source of error: jobs run alone on their threads (two jobs sharing a
core or a card each take longer); SCG/CCG items grow for :data:`CCG_GROWTH_SHARE` of
``max_growth`` on average (the real count depends on the model); a plug-in attribution
method costs one forward + backward per image; the VOC split sizes ignore
``dataset.min_fg_fraction``; downloading VOC is priced at :data:`VOC_DOWNLOAD_S`. Disk,
Snakemake's own scheduling and queueing are not included.

**Wall clock**: with ``--cores C`` and ``--gpus G`` (default: this machine's), a stage's
lower bound is ``max(total / slots, longest job)`` with ``slots = G x gpu.jobs_per_device``
for a GPU stage when ``G > 0``, else ``C // threads``; the whole run's lower bound is the
largest of the critical path (the longest chain of stage-to-stage dependencies, one job per
stage), the CPU core-seconds over ``C`` and the GPU seconds over the GPU slots.

``--check RESULTS_DIR`` compares every stage's estimate with Snakemake's benchmark files of a
finished run (``benchmarks/<stage>/<job>.tsv``, column ``s``, wall seconds) and flags stages
off by more than a factor of :data:`CHECK_FACTOR` (exit status 1).

The package: :mod:`~xaipipe.cost.work` (what one job of each stage does, from the config),
:mod:`~xaipipe.cost.startup` (what a fresh job process imports), :mod:`~xaipipe.cost.rates`
(measuring the device), :mod:`~xaipipe.cost.estimate` (jobs x seconds, the wall clock, the
check against a finished run) and :mod:`~xaipipe.cost.cli` (the command).
"""

from xaipipe.cost.cli import describe_rates, main, parser, report, report_check, runtime_warnings
from xaipipe.cost.estimate import (CHECK_FACTOR, Slots, compare, critical_path, estimate,
                                   measured, stage_dependencies, stage_jobs_seconds, totals,
                                   with_wall_clock)
from xaipipe.cost.rates import (Rates, images_per_s, measure_impute, measure_model_load,
                                measure_rates, read_rates, thread_counts)
from xaipipe.cost.startup import (MODEL_IMPORTS, PYTHON, import_order,
                                  measure_forkserver_startup, measure_imports, startup_modules)
from xaipipe.cost.work import (BG_ONLY_FRACTION, BOOKKEEPING_PER_INPUT_S, BOOKKEEPING_S,
                               CCG_GROWTH_SHARE, FIGURE_S, INDEX_IMAGE_S, REPORT_S,
                               SPEARMAN_PIXEL_S, SYNTHETIC_IMAGE_S, VARIANT_IMAGE_S, VOC_DOWNLOAD_S,
                               VOC_SPLITS, WORK, Counts, Work, counts, method_passes, roar_work,
                               train_work)

__all__ = ["BG_ONLY_FRACTION", "BOOKKEEPING_PER_INPUT_S", "BOOKKEEPING_S", "CCG_GROWTH_SHARE",
           "CHECK_FACTOR", "FIGURE_S", "INDEX_IMAGE_S", "MODEL_IMPORTS", "PYTHON", "REPORT_S",
           "SPEARMAN_PIXEL_S", "SYNTHETIC_IMAGE_S", "VARIANT_IMAGE_S", "VOC_DOWNLOAD_S",
           "VOC_SPLITS", "WORK", "Counts", "Rates", "Slots", "Work", "compare", "counts",
           "critical_path", "describe_rates", "estimate", "images_per_s", "import_order", "main",
           "measure_forkserver_startup", "measure_impute", "measure_imports",
           "measure_model_load", "measure_rates", "measured", "method_passes", "parser",
           "read_rates", "report", "report_check", "roar_work", "runtime_warnings",
           "stage_dependencies", "stage_jobs_seconds", "startup_modules", "thread_counts",
           "totals", "train_work", "with_wall_clock"]
