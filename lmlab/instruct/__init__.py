"""lmlab.instruct: instruction data made by models and mixed from tasks (the applications layer: it
drives models through ``lmlab.agents.models`` — in process through the engine, or an OpenAI-compatible
endpoint — and scores novelty with ``lmlab.eval.rouge``).

See docs/instruction-data.md. ``self_instruct`` (Wang et al. 2022) and ``evol`` (Xu et al. 2023,
WizardLM) synthesise Alpaca rows; ``filters`` holds Self-Instruct's heuristics and ROUGE-L novelty
pool; ``flan`` builds FLAN-style multitask mixtures from the shared data sets with templates and
task prefixes, mixed by ``lmlab.data.mixture``; ``complete`` is the one batched call to a model.
"""

from .evol import evol_instruct
from .filters import NoveltyPool, heuristic_reason
from .flan import TASKS, Template, multitask_mixture
from .self_instruct import SeedTask, SynthesisResult, read_seed_tasks, self_instruct

__all__ = ["TASKS", "NoveltyPool", "SeedTask", "SynthesisResult", "Template", "evol_instruct", "heuristic_reason",
           "multitask_mixture", "read_seed_tasks", "self_instruct"]
