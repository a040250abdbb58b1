"""Which figures of the README's "Measured results" table CI checks, and which only a benchmark measures.

Each row of the table is matched (by the start of its first cell) with the tests that check it on every
CI run and how: ``figure`` (the number itself, against its peer or an independent computation),
``parity`` (the agreement with the peer, or the method, on a smaller case; the number is the
benchmark's), or none when only its benchmark command measures it (timings, long trainings, the full
SmolLM2 runs). The script fails
when a README row is not classified here, when a classification matches no row, or when a named test
does not exist, so the list cannot drift from the README. tests/test_repo.py runs the same check.
Prints a table, then one JSON object. Run: python bench/check_readme.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (start of the row's first cell, the CI tests checking it as "file::test", what they check)
CHECKS: list[tuple[str, list[str], str]] = [  # the note of a row whose tests check its figure begins "the figure"
    ("PTB test perplexity, add-1 unigram", ["tests/test_ptb.py::test_ptb_add1_unigram_matches_independent_computation"],
     "the figure, against a count-based computation in the test"),
    ("quickstart, embedded corpus", ["tests/test_cli.py::test_quickstart_json"],
     "the char-unigram bits/byte exactly; the word unigram and the 800-step model only by running quickstart"),
    ("PTB test perplexity, 5-gram interpolated modified Kneser-Ney",
     ["tests/test_ngram_parity.py::test_lmplz_parity_on_ptb_order5_modified_kneser_ney"],
     "the figure: every n-gram and the perplexity against lmplz (built by .ci/run)"),
    ("n-gram estimation time", [], "a timing"),
    ("n-gram scoring, PTB 5-gram", [], "a timing"),
    ("tokenizer training, byte-level BPE", [], "a timing"),
    ("tokenizer training, BPE / Unigram / WordPiece", [], "a timing"),
    ("tokenizer encoding throughput", ["tests/test_tokenizers_parity.py::test_smollm2_ids_identical_to_transformers_from_the_same_gguf"],
     "identical ids; the speed only in the benchmark"),
    ("tokens per byte on WikiText-2 test", [], "the figures"),
    ("corpus BLEU / chrF, Multi30k test", ["tests/test_eval_generation.py::test_bleu_equals_sacrebleu_on_multi30k",
                                            "tests/test_eval_generation.py::test_chrf_equals_sacrebleu_on_multi30k"],
     "the figure: equal to sacrebleu on Multi30k"),
    ("ARC-Easy test, all 2,376 items", ["tests/test_eval_arc_lm_eval.py::test_arc_easy_loglikelihoods_equal_lm_eval"],
     "per-choice log-likelihoods equal lm-eval's on 24 items with a tiny model; SmolLM2's accuracy only in the benchmark"),
    ("BERTScore F1 with MiniLM", [], "the figures (bert-score is a bench peer)"),
    ("MAUVE with MiniLM features", [], "the figures (mauve-text is a bench peer)"),
    ("SciFact BM25 (Lucene k1 0.9, b 0.4) nDCG@10", ["tests/test_retrieval_scifact.py::test_scifact_bm25_matches_the_published_figure",
                                                   "tests/test_retrieval_scifact.py::test_scifact_bm25_with_porter_stemming_approaches_anserini"],
     "the figure: nDCG@10 within 0.01 of the published ones"),
    ("SciFact dense retrieval", ["tests/test_encoder.py::test_minilm_matches_sentence_transformers"],
     "the encoder against sentence-transformers; the nDCG only in the benchmark"),
    ("RAG on a hand-made set", [], "the figures (SmolLM2 answers)"),
    ("kNN-LM over a 0.36M-parameter", ["tests/test_retrieval_knnlm.py::test_knnlm_lowers_wikitext2_perplexity_of_its_base"],
     "that kNN-LM lowers its base's perplexity on a WikiText-2 slice; the figures only in the benchmark"),
    ("SciFact BM25 queries/s", [], "a timing"),
    ("SciFact hybrid with lmlab's own MiniLM", [], "the figures"),
    ("MiniLM encoding speed", ["tests/test_encoder.py::test_minilm_matches_sentence_transformers"],
     "identical vectors; the speed only in the benchmark"),
    ("word2vec skip-gram, WikiText-2, 2 threads", [], "a timing"),
    ("word2vec analogy acc.", ["tests/test_vectors.py::test_analogy_accuracy_matches_gensims_evaluator",
                               "tests/test_vectors.py::test_similarity_matches_gensims_evaluator"],
     "the evaluators equal gensim's; the trained vectors' figures only in the benchmark"),
    ("logistic regression on TF-IDF", ["tests/test_classify.py::test_agnews_logistic_regression_is_close_to_scikit_learn",
                                       "tests/test_classify.py::test_logistic_regression_matches_scikit_learn"],
     "close to scikit-learn on an AG News slice; the full figures only in the benchmark"),
    ("fastText-style classifier", [], "the figures (fasttext is a bench peer)"),
    ("fine-tuned all-MiniLM-L6-v2", [], "the figure"),
    ("tiny Shakespeare, nanoGPT's CPU recipe", [], "the figures (2,000 iterations × 5 seeds)"),
    ("same recipe, ms per iteration", [], "a timing"),
    ("PTB word-level test perplexity", [], "the figures (the 5-gram one is the lmplz row's, in CI)"),
    ("serving SmolLM2-135M", [], "a timing"),
    ("SmolLM2-135M-Instruct from its GGUF vs `transformers`", ["tests/test_import_gguf.py::test_smollm2_matches_transformers"],
     "logits within 1e-4 of transformers' and greedy continuations equal; the 20-prompt figures only in the benchmark"),
    ("SmolLM2-135M decode tokens/s", [], "a timing"),
    ("same model, prefill tokens/s", [], "a timing"),
    ("same model, batch 8 aggregate", [], "a timing"),
    ("weight-only int8 vs fp32", [], "the figures"),
    ("all-MiniLM-L6-v2 sentence embeddings", ["tests/test_encoder.py::test_minilm_matches_sentence_transformers"],
     "the figure: cosine >= 0.99999, token states within 1e-5"),
    ("SmolLM2-135M-Instruct greedy through the one decode loop",
     ["tests/test_generation_parity.py::test_greedy_with_processors_equals_transformers_generate"],
     "the figure: identical tokens on the 20 prompts"),
    ("speculative decoding by prompt lookup", ["tests/test_speculative.py::test_speculative_greedy_equals_plain_greedy"],
     "greedy exactness for every drafter on a tiny model; the speed-up only in the benchmark"),
    ("KV-cache policies against kvpress", ["tests/test_kvcache_kvpress.py::test_same_kept_positions_and_next_token_logits_as_kvpress"],
     "the figure: kept positions and logits against kvpress (installed by the test command)"),
    ("server capacity, 16 clients", [], "the figures"),
    ("32k-token WikiText-2 stream through SmolLM2", [], "the figures (tests check StreamingLLM keeps exactly sinks + window)"),
    ("needle in a haystack at 4 096 tokens", [], "the figures"),
    ("Transformer-XL segment memory on tiny Shakespeare", ["tests/test_xl_positions.py::test_attention_equals_xlnet_relative_attention_core"],
     "the method against XLNet's attention core; the losses only in the benchmark"),
    ("weight quantization of SmolLM2", [], "the figures (llama.cpp is a bench peer)"),
    ("int4 decode, SmolLM2 batch 1", [], "a timing"),
    ("distillation of SmolLM2 into a half-depth student", [], "the figures"),
    ("hook points vs TransformerLens", ["tests/test_interp.py::test_cached_activations_match_transformer_lens",
                                       "tests/test_interp.py::test_logit_lens_matches_transformer_lens",
                                       "tests/test_interp.py::test_activation_patching_matches_transformer_lens",
                                       "tests/test_interp.py::test_head_ablation_matches_transformer_lens"],
     "the figure: within 1e-4 of TransformerLens"),
    ("sparse autoencoder on SmolLM2", [], "the figures (sae-lens is a bench peer)"),
    ("GraphRAG global search vs plain RAG", [], "the figures"),
    ("scaling law on WikiText-2", ["tests/test_scaling.py::test_the_fit_recovers_a_noise_free_law_exactly",
                                   "tests/test_scaling.py::test_fit_cli_recovers_a_noisy_law_and_predicts_held_out_runs"],
     "the method: a known law recovered; the fitted exponents only in the benchmark"),
    ("CoNLL-2003 NER, test entity F1", ["tests/test_tagging.py::test_entity_scores_equal_seqeval",
                                        "tests/test_tagging.py::test_crf_equals_pytorch_crf_on_random_potentials"],
     "the scorer against seqeval and the CRF against pytorch-crf; the F1s only in the benchmark"),
    ("CoNLL-2003 POS, test accuracy", [], "the figures"),
    ("ELMo features for a POS tagger", [], "the figures"),
    ("ALBERT (factorised embeddings, cross-layer sharing)", ["tests/test_albert.py::test_forward_equals_transformers_albert_model",
                                                            "tests/test_albert.py::test_albert_base_counts_match_the_papers_table_4"],
     "the figure: hidden states against transformers and the parameter counts"),
    ("Self-Instruct with SmolLM2-135M-Instruct", [], "the figures"),
    ("machine-text detection, AUROC", ["tests/test_detect.py::test_auroc_and_roc_curve_equal_scikit_learn"],
     "the metric against scikit-learn; the AUROCs only in the benchmark"),
    ("DANN on AG News", [], "the figures"),
    ("LLaVA-style model on the digits", ["tests/test_llava.py::test_training_learns_from_the_picture_and_the_blind_model_cannot"],
     "the method on a tiny model; the SmolLM2 figures only in the benchmark"),
    ("HumanEval in the sandbox", ["tests/test_eval_passk.py::test_humaneval_references_pass_and_their_wrong_versions_fail"],
     "the figure on a slice of the problems"),
    ("CLIP-style dual encoder on scikit-learn digits", [], "the figures"),
    ("SimCSE on all-MiniLM-L6-v2", [], "the figures"),
    ("reward model and DPO on SmolLM2-135M-Instruct", ["tests/test_align_trl.py::test_dpo_family_equals_trl"], "the DPO losses against TRL; the behaviour figures only in the benchmark"),
    ("GRPO on SmolLM2-135M-Instruct", ["tests/test_align_trl.py::test_grpo_loss_equals_trl", "tests/test_align_trl.py::test_grpo_advantages_equal_trl"], "the per-token loss against TRL; the behaviour figures only in the benchmark"),
    ("DQN on CartPole-v1", [], "the figures (tests/test_align_dqn.py checks DQN's parts by hand and a short run)"),
    ("sentence VAE on PTB", ["tests/test_vae.py::test_vae_carries_random_sentences_through_its_code_where_an_lm_cannot",
                             "tests/test_vae.py::test_gaussian_kl_equals_torch_distributions"],
     "the method on a toy set (a code the decoder uses, KL against torch.distributions); the PTB figures only in the benchmark"),
    ("T5 relative position bias", ["tests/test_seq2seq_t5.py::test_buckets_equal_transformers",
                                   "tests/test_encoder_hf.py::test_masked_lm_directory_loads_with_its_head_and_matches_transformers"],
     "the figure: buckets exact, states and logits within 1e-5"),
    ("copy mechanism (pointer-generator) on Multi30k", [], "the figures (tests/test_rnn_seq2seq.py checks the pointer-generator mixture by hand)"),
    ("Multi30k 2016 test de→en BLEU", ["tests/test_seq2seq_pretrain.py::test_pretrain_seq2seq_learns_a_toy_translation_and_translates",
                                       "tests/test_eval_generation.py::test_bleu_equals_sacrebleu_on_multi30k"],
     "the pipeline on a toy translation and BLEU against sacrebleu; the trained models' BLEU only in the benchmark"),
    ("small BERT, masked-LM accuracy", [], "the figures"),
    ("MoE top-1, busiest expert", [], "the figures"),
    ("MoE top-2 forward+backward", ["tests/test_moe.py::test_topk_layer_equals_mixtral_sparse_moe_block"],
     "identical outputs; the speed only in the benchmark"),
    ("LoRA / rsLoRA / DoRA / IA3 / prompt tuning", ["tests/test_peft_lora.py::test_parity_with_hf_peft_lora",
                                                    "tests/test_peft_methods.py::test_parity_with_hf_peft_ia3",
                                                    "tests/test_peft_methods.py::test_parity_with_hf_peft_prompt_tuning"],
     "the figure: outputs and gradients against HF PEFT"),
    ("QLoRA NF4 storage on SmolLM2", ["tests/test_peft_qlora.py::test_double_quant_storage_saving_matches_the_paper"],
     "the storage formula on a small layer; SmolLM2's ratio only in the benchmark"),
    ("SFT of SmolLM2-135M on the shared instructions", [], "the figures"),
    ("LoRA vs full fine-tuning of SmolLM2-135M", [], "timings and memory"),
    ("same, every run with activation checkpointing", [], "timings and memory"),
    ("LoRA SFT (10 steps) on a made-up reply format", [], "the figure"),
]


def readme_rows() -> list[tuple[str, str]]:
    """(first cell, command cell) of every row of the README's "Measured results" table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Measured results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| what ")]
    return [(cells[1].strip(), cells[-2].strip()) for cells in (row.split("|") for row in rows)]


def test_exists(spec: str) -> bool:
    path, name = spec.split("::")
    file = REPO / path
    return file.is_file() and re.search(rf"^def {re.escape(name)}\(", file.read_text(encoding="utf-8"), re.M) is not None


def check() -> tuple[list[dict], list[str]]:
    """The classified rows, and the problems (unclassified rows, stale classifications, missing tests)."""
    problems, out, used = [], [], set()
    for what, command in readme_rows():
        matches = [c for c in CHECKS if what.startswith(c[0])]
        if len(matches) != 1:
            problems.append(f"README row {what[:60]!r} matches {len(matches)} classifications in {__file__}")
            continue
        key, tests, note = matches[0]
        used.add(key)
        problems += [f"{key!r}: no test {t}" for t in tests if not test_exists(t)]
        ci = None if not tests else "figure" if note.startswith("the figure") else "parity"
        out.append({"row": what, "command": command, "ci": ci, "tests": tests, "checks": note})
    problems += [f"classification {key!r} matches no README row" for key, _, _ in CHECKS if key not in used]
    return out, problems


def main() -> int:
    rows, problems = check()
    for r in rows:
        where = {"figure": "CI figure", "parity": "CI parity", None: "benchmark"}[r["ci"]]
        print(f"{where:<10} {r['row'][:66]:<66}  {r['command'][:56]}", file=sys.stderr)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    counts = {kind: sum(r["ci"] == kind for r in rows) for kind in ("figure", "parity", None)}
    print(f"{len(rows)} rows: {counts['figure']} figures checked in CI, {counts['parity']} with the method or the peer "
          f"parity checked in CI and the figure in a benchmark, {counts[None]} only in a benchmark", file=sys.stderr)
    print(json.dumps({"rows": rows, "figure_in_ci": counts["figure"], "parity_in_ci": counts["parity"],
                      "benchmark_only": counts[None], "problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
